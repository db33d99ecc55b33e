"""Outcome classification: 2xx ok, 4xx (and not-applied error types) fail, 5xx/transport info."""

from __future__ import annotations

import aiohttp
import pytest

from workloads.history import OpType
from workloads.outcomes import classify, classify_exception, is_expected

DDB = "com.amazonaws.dynamodb.v20120810#"
CORAL = "com.amazon.coral.service#"


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_is_ok(status: int) -> None:
    assert classify(status, {}) == (OpType.OK, None)


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (400, DDB + "ConditionalCheckFailedException", "ConditionalCheckFailedException"),
        (400, CORAL + "ValidationException", "ValidationException"),
        (400, DDB + "ThrottlingException", "ThrottlingException"),
        (
            400,
            DDB + "ProvisionedThroughputExceededException",
            "ProvisionedThroughputExceededException",
        ),
        (400, DDB + "ResourceNotFoundException", "ResourceNotFoundException"),
        (403, CORAL + "InvalidSignatureException", "InvalidSignatureException"),
        (413, None, "HTTP 413"),
        # a throttle is "not applied" whatever status carries it
        (503, DDB + "ThrottlingException", "ThrottlingException"),
    ],
)
def test_refusals_are_fail(status: int, kind: str | None, error: str) -> None:
    body = {} if kind is None else {"__type": kind, "message": "no"}
    assert classify(status, body) == (OpType.FAIL, error)


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (500, DDB + "InternalServerError", "InternalServerError"),
        (503, DDB + "ServiceUnavailable", "ServiceUnavailable"),
        (502, None, "HTTP 502"),
        (504, None, "HTTP 504"),
        (0, None, "HTTP 0"),
        (302, None, "HTTP 302"),
    ],
)
def test_server_errors_are_unknown(status: int, kind: str | None, error: str) -> None:
    body = None if kind is None else {"__type": kind}
    assert classify(status, body) == (OpType.INFO, error)


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        aiohttp.ServerTimeoutError(),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "reset by peer"),
        aiohttp.ServerDisconnectedError(),
        OSError("no route to host"),
    ],
)
def test_no_answer_is_unknown(exc: BaseException) -> None:
    kind, error = classify_exception(exc)
    assert kind is OpType.INFO
    assert error.startswith(type(exc).__name__)
    assert "\n" not in error


def test_only_a_failed_condition_is_an_expected_refusal() -> None:
    assert is_expected("ConditionalCheckFailedException")
    assert not is_expected("ThrottlingException")
    assert not is_expected(None)
