"""The bank workload's requests and answers: transfers and audits over transactions. Pure.

Accounts are items ``{"k": "acct<i>", "v": balance}`` (the balance a number in the workload's
value attribute, so the final reads see it), spread over every partition of the table by the
hash of their keys. An account that does not exist yet holds ``INITIAL_BALANCE`` (the first
transfer that touches it creates it with ``if_not_exists``), so no seeding is needed and a
rerun never resets one. The workload never creates or destroys money:

- a *transfer* moves ``amount`` from ``src`` to ``dst`` in one TransactWriteItems, conditioned
  on ``src`` holding at least ``amount``, with a ClientRequestToken that its retries reuse (so
  a retry after an unknown outcome cannot apply it twice);
- an *audit* reads every account in one TransactGetItems.

So the balances of all accounts sum to ``INITIAL_BALANCE`` times their number in every audit
and at the end, and no balance is ever negative (checks/bank.py).

History: ``{"f": "transfer", "key": src, "value": [src, dst, amount]}`` and ``{"f": "audit",
"key": "", "value": {"accounts": [...], "initial": INITIAL_BALANCE}}`` at invoke, completed
(ok) with ``{account: balance}`` for every account read.

    call = transfer("gameday-bank", "acct3", "acct7", 25, token="t-41-u0-9")
    call.operation                                 # "TransactWriteItems"
    balances(["acct3", "acct7"], {"Responses": [{"Item": {"k": {"S": "acct3"},
                                                          "v": {"N": "975"}}}, {}]})
    # -> {"acct3": 975, "acct7": 1000}
"""

from __future__ import annotations

import hashlib
from typing import Any

from workloads.catalog import HASH_KEY, VALUE_ATTR
from workloads.ops import Call

INITIAL_BALANCE = 1000
MAX_AMOUNT = 50
AUDIT_KEY = ""  # an audit reads every account: it has no key of its own


def token_for(op_id: str) -> str:
    """A ClientRequestToken (at most 36 characters) unique to one logical transfer."""
    return hashlib.sha256(op_id.encode()).hexdigest()[:32]


def transfer(table: str, src: str, dst: str, amount: int, token: str) -> Call:
    value = {":a": {"N": str(amount)}, ":init": {"N": str(INITIAL_BALANCE)}}
    names = {"#v": VALUE_ATTR}
    return Call(
        "TransactWriteItems",
        {
            "TransactItems": [
                {
                    "Update": {
                        "TableName": table,
                        "Key": {HASH_KEY: {"S": src}},
                        "UpdateExpression": "SET #v = if_not_exists(#v, :init) - :a",
                        "ConditionExpression": "attribute_not_exists(#v) OR #v >= :a",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": value,
                    }
                },
                {
                    "Update": {
                        "TableName": table,
                        "Key": {HASH_KEY: {"S": dst}},
                        "UpdateExpression": "SET #v = if_not_exists(#v, :init) + :a",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": value,
                    }
                },
            ],
            "ClientRequestToken": token,
        },
    )


def audit(table: str, accounts: list[str]) -> Call:
    """Every account in one TransactGetItems (at most 100, DynamoDB's limit)."""
    return Call(
        "TransactGetItems",
        {
            "TransactItems": [
                {"Get": {"TableName": table, "Key": {HASH_KEY: {"S": a}}}} for a in accounts
            ]
        },
    )


def accounts_named(op: dict[str, Any]) -> set[str]:
    """The accounts one history record names: both sides of a transfer, every audited account.
    The final reads must read all of them (an op's ``key`` is a transfer's source only)."""
    value = op.get("value")
    if op.get("f") == "transfer" and isinstance(value, list):
        return {str(a) for a in value[:2]}
    if op.get("f") == "audit" and isinstance(value, dict):
        return {str(a) for a in value.get("accounts") or []}
    return set()


def balances(accounts: list[str], body: dict[str, Any]) -> dict[str, int]:
    """TransactGetItems answer for ``accounts`` -> ``{account: balance}`` for every one (an
    account not created yet holds the initial balance)."""
    out: dict[str, int] = {}
    for account, response in zip(accounts, body["Responses"], strict=True):
        item = response.get("Item")
        out[account] = int(item[VALUE_ATTR]["N"]) if item else INITIAL_BALANCE
    return out
