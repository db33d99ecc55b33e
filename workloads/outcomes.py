"""What a DynamoDB answer means for the history: ok, fail (not applied) or info (unknown).

The rule, for every client (Locust users, canaries, setup):

- 2xx: ok.
- 4xx, and any answer naming ConditionalCheckFailed, Validation or a throttling error: fail.
  DynamoDB rejects these before (or instead of) applying anything.
- 5xx, a timeout, a refused or reset connection, or any other transport error: info. A write
  may have been applied (the router answers 500 when a replication outcome is unknown).

    classify(200, {})                                             # (OpType.OK, None)
    classify(400, {"__type": "...#ConditionalCheckFailedException"})
                                                  # (OpType.FAIL, "ConditionalCheckFailedException")
    classify(503, {"__type": "...#ServiceUnavailable"})     # (OpType.INFO, "ServiceUnavailable")
    classify_exception(TimeoutError())                      # (OpType.INFO, "TimeoutError")
"""

from __future__ import annotations

from typing import Any

import orjson

from workloads.client import error_code
from workloads.history import OpType

CONDITION_FAILED = "ConditionalCheckFailedException"
#: Errors that say the request was not applied, whatever HTTP status carries them.
NOT_APPLIED = frozenset(
    {
        CONDITION_FAILED,
        "ValidationException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ResourceNotFoundException",
        "TransactionConflictException",
    }
)
#: 4xx errors that do not say whether the request was applied: a transaction still running
#: under the same ClientRequestToken (an earlier attempt's) may yet commit.
NOT_KNOWN = frozenset({"TransactionInProgressException"})
_OK = OpType.OK  # a member looked up once: OpType.OK costs ~0.2 us each time (Python 3.11)


def classify(status: int, body: dict[str, Any] | None) -> tuple[OpType, str | None]:
    """The outcome of an HTTP answer and, unless ok, its error name."""
    code = error_code(body) if isinstance(body, dict) else None
    if 200 <= status < 300:
        return OpType.OK, None
    error = code or f"HTTP {status}"
    reasons = body.get("CancellationReasons") if isinstance(body, dict) else None
    if isinstance(reasons, list):  # "TransactionCanceledException [None, TransactionConflict]"
        codes = [str(r.get("Code")) for r in reasons if isinstance(r, dict)]
        error = f"{error} [{', '.join(codes)}]"
    if code in NOT_KNOWN:
        return OpType.INFO, error
    if code in NOT_APPLIED or 400 <= status < 500:
        return OpType.FAIL, error
    return OpType.INFO, error


def classify_exception(exc: BaseException) -> tuple[OpType, str]:
    """A request that got no answer: always unknown. The error names the exception type."""
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    name = type(exc).__name__
    return OpType.INFO, f"{name}: {detail}" if detail else name


def is_expected(error: str | None) -> bool:
    """A refusal that is a normal answer of the workload, not a failure of the service."""
    return error is not None and "ConditionalCheckFailed" in error  # also a cancelled transaction


def judge(
    status: int, content: bytes, failure: BaseException | None
) -> tuple[OpType, str | None, dict[str, Any]]:
    """An HTTP answer (or the transport error instead of one) -> (outcome, error, body)."""
    if failure is not None or status == 0:
        kind, reason = classify_exception(failure or ConnectionError())
        return kind, reason, {}
    try:
        answer = orjson.loads(content) if content else {}
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        outcome, error = classify(status, None)
        if outcome is OpType.OK:  # applied, but we cannot tell what it said
            return OpType.INFO, "MalformedResponse", {}
        return outcome, error, {}
    if 200 <= status < 300:  # classify's first case, without its lookups: the usual answer
        return _OK, None, answer
    outcome, error = classify(status, answer)
    return outcome, error, answer
