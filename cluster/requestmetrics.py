"""Per-request metrics shared by the router and the storage node: a counter by operation and
outcome, and a latency histogram by operation."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from prometheus_client import Counter, Histogram


class RequestMetrics:
    """Counts requests and observes their latency. The labelled children of the known
    operations are looked up once: prometheus' ``labels`` takes a lock and checks its
    arguments on every call, a visible share of a request's CPU. A name outside ``known`` (a
    client's made-up operation) is counted without being kept."""

    def __init__(self, requests: Counter, latency: Histogram, known: Container[str]) -> None:
        self.requests = requests
        self.latency = latency
        self.known = known
        self._counts: dict[tuple[str, str], Any] = {}
        self._latencies: dict[str, Any] = {}

    def observe(self, operation: str, outcome: str, seconds: float) -> None:
        if operation not in self.known:
            self.requests.labels(operation, outcome).inc()
            self.latency.labels(operation).observe(seconds)
            return
        counter = self._counts.get((operation, outcome))
        if counter is None:
            counter = self._counts[(operation, outcome)] = self.requests.labels(operation, outcome)
        counter.inc()
        latency = self._latencies.get(operation)
        if latency is None:
            latency = self._latencies[operation] = self.latency.labels(operation)
        latency.observe(seconds)
