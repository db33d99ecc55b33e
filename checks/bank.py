"""Bank: transactions never create or destroy money, and no read sees a transfer half done.

Reads `history.jsonl` (the bank workload's `transfer` and `audit` operations) and
`final_reads.json`. An audit's invoke names the accounts it reads and their initial balance
(`{"accounts": [...], "initial": 1000}`); an account that does not exist yet holds the initial
balance, and every transfer moves money from one account to another in one transaction. So:

- every ok audit (one TransactGetItems of every account) must sum to `initial` times the number
  of accounts, with no negative balance: a transfer whose debit it saw without its credit (or
  the other way round) breaks the sum, and names the audit;
- after heal, the final consistent read of every account must sum to the same total (a
  half-applied commit breaks it), again with no negative balance;
- and every account's final balance must be explained by the transfers: its initial balance
  plus every acknowledged (ok) transfer in or out of it, plus some of those whose outcome is
  unknown (info); failed ones never applied. An acknowledged transfer lost whole (both sides
  undone, so the total still holds) or one applied twice leaves a balance nothing explains.

    >>> audit = {"accounts": ["a", "b"], "initial": 10}
    >>> moves = [op("transfer", ["a", "b", 6]), op("transfer", ["b", "a", 3], kind="info")]
    >>> check_bank([*moves, op("audit", audit, {"a": 4, "b": 16})], {"a": "7", "b": "13"}).valid
    True
    >>> check_bank([*moves, op("audit", audit, {"a": 4, "b": 15})], None).valid
    False

A run without bank operations is not applicable ("n/a": nothing to judge, no part in the
verdict), unless its scenario drives the bank workload: then the missing traffic is unknown,
never a pass. Without a history, or without the final balance of an account some transfer
touched, the final total is unknown.

    >>> check_bank([op("read", None, "x")], None).status
    'n/a'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from checks.history import Operation
from checks.result import UNKNOWN, CheckResult, Validity, compose_validity, not_applicable
from checks.rundir import RunDir

NAME = "bank"
REPORT_MAX = 20


def op(f: str, value: Any, result: Any = None, kind: str = "ok", time: float = 1.0) -> Operation:
    """A bank operation for examples and tests."""
    return Operation(0, "p", f, "", value, result, kind, time, time + 0.01, 0.01, None, True)


def _balance(value: Any, initial: int) -> int | None:
    """A recorded balance (an int, or the final read's number string; None: no item, which
    holds the initial balance); None if it is not a number."""
    if value is None:
        return initial
    try:
        return int(str(value))
    except ValueError:
        return None


def check_bank(
    ops: Sequence[Operation], final_reads: dict[str, Any] | None, bank_run: bool = False
) -> CheckResult:
    """Judge the bank operations among ``ops``; ``bank_run``: the run's workload was the bank,
    so a run without bank operations is unknown rather than not applicable."""
    transfers = [o for o in ops if o.f == "transfer"]
    audits = [o for o in ops if o.f == "audit"]
    if not transfers and not audits:
        if bank_run:
            return CheckResult(
                NAME,
                UNKNOWN,
                "the scenario runs the bank workload but no transfer or audit "
                "was recorded: nothing shows the total held",
            )
        return not_applicable(NAME, "no bank operations in this run (the workload is not bank)")
    accounts: list[str] = []
    initial = 0
    for audit in audits:
        if isinstance(audit.value, dict) and len(audit.value.get("accounts", [])) > len(accounts):
            accounts = [str(a) for a in audit.value["accounts"]]
            initial = int(audit.value.get("initial", 0))
    if not accounts:
        return CheckResult(
            NAME, UNKNOWN, "no audit says which accounts exist: the total cannot be judged"
        )
    expected = initial * len(accounts)
    partial: list[dict[str, Any]] = []
    ok_audits = 0
    for audit in audits:
        if audit.type != "ok" or not isinstance(audit.result, dict):
            continue
        ok_audits += 1
        seen = {a: _balance(audit.result.get(a), initial) for a in accounts}
        total = sum(b for b in seen.values() if b is not None)
        negative = sorted(a for a, b in seen.items() if b is not None and b < 0)
        if total != expected or negative or None in seen.values():
            partial.append(
                {
                    "time": audit.complete_time,
                    "process": audit.process,
                    "total": total,
                    "expected": expected,
                    "negative": negative,
                }
            )
    validity: list[Validity] = [not partial]
    final: dict[str, Any] = {"checked": False}
    touched = {str(a) for t in transfers if isinstance(t.value, list) for a in t.value[:2]}
    if final_reads is None:
        validity.append(UNKNOWN)
        final["why"] = "no final_reads.json"
    else:
        missing = sorted(a for a in accounts if a not in final_reads and a in touched)
        balances = {a: _balance(final_reads.get(a), initial) for a in accounts if a not in missing}
        total = sum(b for b in balances.values() if b is not None)
        negative = sorted(a for a, b in balances.items() if b is None or b < 0)
        final = {"checked": not missing, "total": total, "expected": expected}
        if negative:
            final["negative_or_unreadable"] = negative
            validity.append(False)
        if missing:
            final["missing"] = missing[:REPORT_MAX]
            validity.append(UNKNOWN)
        elif total != expected:
            validity.append(False)
        unexplained = _unexplained(balances, transfers, initial)
        if unexplained:
            final["unexplained"] = unexplained[:REPORT_MAX]
            validity.append(False)
    counts = {kind: sum(1 for t in transfers if t.type == kind) for kind in ("ok", "fail", "info")}
    details = {
        "accounts": len(accounts),
        "expected_total": expected,
        "transfers": counts,
        "audits_ok": ok_audits,
        "partial_reads": partial[:REPORT_MAX],
        "partial_read_count": len(partial),
        "final": final,
    }
    valid = compose_validity(validity)
    summary = (
        f"{len(accounts)} accounts, {counts['ok']} transfers ok ({counts['info']} unknown), "
        f"{ok_audits} audits"
    )
    if partial:
        summary += f"; {len(partial)} audits saw a total other than {expected}"
    if final.get("unexplained"):
        first = final["unexplained"][0]
        summary += (
            f"; {len(final['unexplained'])} final balances no set of transfers explains"
            f" ({first['account']}: {first['final']})"
        )
    if final.get("checked"):
        summary += f"; final total {final['total']} (expected {expected})"
    elif final_reads is not None or valid is UNKNOWN:
        summary += "; final total not checked"
    return CheckResult(NAME, valid, summary, details)


MAX_SUMS = 200_000  # reachable sums kept per account before giving up on it (unknown: skipped)


def _unexplained(
    balances: dict[str, int | None], transfers: Sequence[Operation], initial: int
) -> list[dict[str, Any]]:
    """Accounts whose final balance is not initial + the acknowledged transfers' moves + some
    subset of the unknown transfers' moves (checked per account: a necessary condition)."""
    known: dict[str, int] = {}
    maybe: dict[str, list[int]] = {}
    for t in transfers:
        if t.type not in ("ok", "info") or not isinstance(t.value, list) or len(t.value) < 3:
            continue
        src, dst, amount = str(t.value[0]), str(t.value[1]), int(t.value[2])
        for account, delta in ((src, -amount), (dst, amount)):
            if t.type == "ok":
                known[account] = known.get(account, 0) + delta
            else:
                maybe.setdefault(account, []).append(delta)
    out: list[dict[str, Any]] = []
    for account, final in sorted(balances.items()):
        if final is None:
            continue
        base = initial + known.get(account, 0)
        sums = {0}
        for delta in maybe.get(account, []):
            sums |= {s + delta for s in sums}
            if len(sums) > MAX_SUMS:
                break
        if len(sums) <= MAX_SUMS and final - base not in sums:
            out.append(
                {
                    "account": account,
                    "final": final,
                    "acknowledged_balance": base,
                    "unknown_transfers": len(maybe.get(account, [])),
                }
            )
    return out


def check(run: RunDir) -> CheckResult:
    """The bank check of a run directory (history.jsonl + final_reads.json)."""
    if run.history is None:
        return CheckResult(NAME, UNKNOWN, "no history.jsonl in the run directory")
    return check_bank(run.history, run.final_reads, run.workload == NAME)
