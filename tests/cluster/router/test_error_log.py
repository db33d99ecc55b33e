"""A router says in its log why it answered 5xx (clients see only the error type)."""

from __future__ import annotations

import logging

import pytest

from cluster.router import app
from cluster.router.errors import DynamoError


def test_5xx_reasons_are_logged_once_a_second_per_message(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(app.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(app, "_error_logged_at", {})
    busy = DynamoError.unavailable("No replica could serve the request: t.p0: not the leader")
    other = DynamoError.internal("The request's outcome is unknown: sn-a1: timeout")
    with caplog.at_level(logging.WARNING, logger="cluster.router.app"):
        for _ in range(5):
            app._note_server_error("GetItem", busy)
        app._note_server_error("PutItem", other)
        now[0] += 1.0
        app._note_server_error("GetItem", busy)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "GetItem answered 503 ServiceUnavailable: " + busy.message,
        "PutItem answered 500 InternalServerError: " + other.message,
        "GetItem answered 503 ServiceUnavailable: " + busy.message,
    ]
