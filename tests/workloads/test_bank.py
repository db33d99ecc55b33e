"""The bank workload's pure parts: requests, answers, and which accounts a history names."""

from __future__ import annotations

from workloads import bank


def test_transfer_is_one_conditional_transaction_with_its_token() -> None:
    call = bank.transfer("t", "acct3", "acct7", 25, token=bank.token_for("op-1"))
    assert call.operation == "TransactWriteItems"
    debit, credit = call.params["TransactItems"]
    assert debit["Update"]["Key"] == {"k": {"S": "acct3"}}
    assert (
        "ConditionExpression" in debit["Update"] and "ConditionExpression" not in credit["Update"]
    )
    assert len(call.params["ClientRequestToken"]) <= 36
    assert bank.token_for("op-1") == call.params["ClientRequestToken"] != bank.token_for("op-2")


def test_audit_answers_and_the_accounts_final_reads_need() -> None:
    body = {"Responses": [{"Item": {"k": {"S": "a"}, "v": {"N": "975"}}}, {}]}
    assert bank.balances(["a", "b"], body) == {"a": 975, "b": bank.INITIAL_BALANCE}
    # A transfer's history key is its source: its destination must be read at the end too.
    transfer = {"f": "transfer", "key": "a", "value": ["a", "b", 5]}
    audit = {"f": "audit", "key": "", "value": {"accounts": ["a", "b", "c"], "initial": 10}}
    assert bank.accounts_named(transfer) == {"a", "b"}
    assert bank.accounts_named(audit) == {"a", "b", "c"}
    assert bank.accounts_named({"f": "write", "key": "r1", "value": "x"}) == set()
