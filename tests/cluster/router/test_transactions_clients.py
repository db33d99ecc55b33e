"""Transactions through the AWS CLI and PynamoDB, used unchanged, against the session cluster.

boto3 is covered in test_transactions_boto3.py; these are the two other clients a user brings:
``aws dynamodb transact-write-items`` / ``transact-get-items`` (the CLI's JSON in and out, its
exit code and the error text it prints) and PynamoDB's ``TransactWrite`` / ``TransactGet``
context managers (its own request building, ClientRequestToken and cancellation reasons).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactGet, TransactWrite

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster
from tests.cluster.router.test_api_boto3 import REGION, unique
from tests.cluster.router.test_clients import AwsCli

pytestmark = pytest.mark.slow


def _account(i: str, bal: int) -> dict[str, Any]:
    return {"id": {"S": i}, "bal": {"N": str(bal)}}


def _cli_transfer(table: str, src: str, dst: str, amount: int) -> str:
    value = {":a": {"N": str(amount)}}
    return json.dumps(
        [
            {
                "Update": {
                    "TableName": table,
                    "Key": {"id": {"S": src}},
                    "UpdateExpression": "SET bal = bal - :a",
                    "ConditionExpression": "bal >= :a",
                    "ExpressionAttributeValues": value,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {
                "Update": {
                    "TableName": table,
                    "Key": {"id": {"S": dst}},
                    "UpdateExpression": "SET bal = bal + :a",
                    "ExpressionAttributeValues": value,
                }
            },
        ]
    )


@pytest.fixture(scope="module")
def cli(local_cluster: LocalCluster) -> Iterator[tuple[AwsCli, str]]:
    aws = AwsCli(local_cluster)
    name = unique("txncli")
    aws(
        "create-table",
        "--table-name",
        name,
        "--attribute-definitions",
        "AttributeName=id,AttributeType=S",
        "--key-schema",
        "AttributeName=id,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    )
    aws("wait", "table-exists", "--table-name", name)
    yield aws, name
    aws("delete-table", "--table-name", name)


def test_aws_cli_transact_write_and_get(cli: tuple[AwsCli, str]) -> None:
    aws, table = cli
    a, b = (f"cli-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for account in (a, b):
        aws("put-item", "--table-name", table, "--item", json.dumps(_account(account, 100)))
    token = uuid.uuid4().hex
    units = []
    for _ in range(2):  # the same token twice: applied once
        out = aws(
            "transact-write-items",
            "--transact-items",
            _cli_transfer(table, a, b, 30),
            "--client-request-token",
            token,
            "--return-consumed-capacity",
            "TOTAL",
        )
        [consumed] = out["ConsumedCapacity"]
        assert consumed["TableName"] == table, out
        units.append(consumed["CapacityUnits"])
    # Two transactional writes of items under 1 KB cost 2 write units each; the retry changed
    # nothing and, as in DynamoDB, reports only the reads of the items (1 unit each).
    assert units == [4.0, 2.0]
    gets = json.dumps([{"Get": {"TableName": table, "Key": {"id": {"S": x}}}} for x in (a, b)])
    got = aws("transact-get-items", "--transact-items", gets)
    assert [r["Item"]["bal"]["N"] for r in got["Responses"]] == ["70", "130"]

    # A failed condition: the CLI exits non-zero and prints DynamoDB's cancellation message.
    failed = aws.run(
        "transact-write-items", "--transact-items", _cli_transfer(table, a, b, 500), ok=False
    )
    assert failed.returncode != 0
    assert "TransactionCanceledException" in failed.stderr
    assert "[ConditionalCheckFailed, None]" in failed.stderr
    # The token reused with other parameters.
    mismatch = aws.run(
        "transact-write-items",
        "--transact-items",
        _cli_transfer(table, a, b, 1),
        "--client-request-token",
        token,
        ok=False,
    )
    assert "IdempotentParameterMismatchException" in mismatch.stderr
    got = aws("transact-get-items", "--transact-items", gets)
    assert [r["Item"]["bal"]["N"] for r in got["Responses"]] == ["70", "130"]


@pytest.fixture(scope="module")
def pynamo(local_cluster: LocalCluster) -> Iterator[tuple[Any, Connection]]:
    secret = local_cluster.config.credentials[DEFAULT_ACCESS_KEY]
    endpoint = local_cluster.endpoints()["rt-a"]

    class Account(Model):
        class Meta:
            table_name = unique("txnpynamo")
            host = endpoint
            region = REGION
            aws_access_key_id = DEFAULT_ACCESS_KEY
            aws_secret_access_key = secret
            billing_mode = "PAY_PER_REQUEST"
            max_retry_attempts = 2

        id = UnicodeAttribute(hash_key=True)
        bal = NumberAttribute(default=0)

    Account.create_table(wait=True)
    connection = Connection(
        region=REGION,
        host=endpoint,
        aws_access_key_id=DEFAULT_ACCESS_KEY,
        aws_secret_access_key=secret,
        max_retry_attempts=2,
    )
    yield Account, connection
    Account.delete_table()


def test_pynamodb_transact_write_and_get(pynamo: tuple[Any, Connection]) -> None:
    account, connection = pynamo
    a = account(f"py-{uuid.uuid4().hex[:8]}", bal=100)
    b = account(f"py-{uuid.uuid4().hex[:8]}", bal=100)
    a.save()
    b.save()
    token = uuid.uuid4().hex
    for _ in range(2):  # PynamoDB's own request, sent twice with one token: applied once
        with TransactWrite(connection=connection, client_request_token=token) as tx:
            tx.update(a, actions=[account.bal.add(-25)], condition=account.bal >= 25)
            tx.update(b, actions=[account.bal.add(25)])
    with TransactGet(connection=connection) as tg:
        got_a = tg.get(account, a.id)
        got_b = tg.get(account, b.id)
    assert (got_a.get().bal, got_b.get().bal) == (75, 125)

    # Put, Delete and ConditionCheck together; a failed condition cancels all of them.
    c = account(f"py-{uuid.uuid4().hex[:8]}", bal=5)
    with pytest.raises(TransactWriteError) as exc, TransactWrite(connection=connection) as tx:
        tx.save(c)
        tx.delete(b)
        tx.condition_check(account, a.id, condition=account.bal > 1000)
    assert exc.value.cause_response_code == "TransactionCanceledException"
    reasons = exc.value.cancellation_reasons
    # PynamoDB sends condition checks first, then deletes, puts and updates: one reason each.
    assert [r.code if r else None for r in reasons] == ["ConditionalCheckFailed", None, None]
    assert account.count(c.id, consistent_read=True) == 0  # the Put did not happen
    with TransactWrite(connection=connection) as tx:
        tx.save(c)
        tx.delete(b)
        tx.condition_check(account, a.id, condition=account.bal == 75)
    with TransactGet(connection=connection) as tg:
        found = [tg.get(account, x) for x in (a.id, b.id, c.id)]
    values = []
    for future in found:
        try:
            values.append(future.get().bal)
        except account.DoesNotExist:
            values.append(None)
    assert values == [75, None, 5]
