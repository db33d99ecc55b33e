"""ReturnConsumedCapacity: the capacity units a request consumed, by DynamoDB's rules.

A read unit is one strongly consistent read of up to 4 KB (half a unit when eventually
consistent); a write unit is one write of up to 1 KB; each item rounds up and costs at least
one unit (half a read unit). A Query or Scan rounds the total size of the items it evaluated
(before the filter), not each item. Handlers ``charge`` what they consume while ``metering``
holds the request's meter; ``report`` answers the request's ReturnConsumedCapacity.

    with metering() as spent:
        result = await handler(ctx, request)     # calls charge("orders", read_units(1200, True))
    result.update(report("GetItem", request, spent))
    # -> {"ConsumedCapacity": {"TableName": "orders", "CapacityUnits": 1.0}}
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_METER: ContextVar[dict[str, float] | None] = ContextVar("consumed_capacity", default=None)
_BATCHES = frozenset({"BatchGetItem", "BatchWriteItem", "TransactWriteItems", "TransactGetItems"})


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


def write_units(size: int) -> float:
    return float(max(1, math.ceil(size / 1024)))


def charge(table: str, units: float) -> None:
    """Add ``units`` to the current request's meter (no meter: nothing to do)."""
    meter = _METER.get()
    if meter is not None:
        meter[table] = meter.get(table, 0.0) + units


@contextmanager
def metering() -> Iterator[dict[str, float]]:
    """A fresh meter for one request; tasks the request starts share it."""
    meter: dict[str, float] = {}
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def report(operation: str, request: dict[str, Any], spent: dict[str, float]) -> dict[str, Any]:
    """The ConsumedCapacity members of the reply, as ReturnConsumedCapacity asks."""
    mode = request.get("ReturnConsumedCapacity") or "NONE"
    if mode not in ("TOTAL", "INDEXES"):
        return {}
    tables = dict(spent)
    if operation not in _BATCHES and not tables and isinstance(request.get("TableName"), str):
        tables[request["TableName"]] = 0.0
    entries = []
    for table, units in tables.items():
        entry: dict[str, Any] = {"TableName": table, "CapacityUnits": units}
        if mode == "INDEXES":
            entry["Table"] = {"CapacityUnits": units}
        entries.append(entry)
    if operation in _BATCHES:
        return {"ConsumedCapacity": entries}
    return {"ConsumedCapacity": entries[0]} if entries else {}
