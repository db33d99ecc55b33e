"""TransactWriteItems and TransactGetItems through boto3 against the session cluster.

One table (on every partition of the cluster) serves the module; each test uses its own keys.
What a DynamoDB user relies on: atomic multi-item writes across partitions, the exact shape of
TransactionCanceledException's cancellation reasons, ClientRequestToken idempotency, and the
validation errors of the real service.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos.backends.local import LocalCluster
from tests.conftest import client_for

pytestmark = pytest.mark.slow

Client = Any


@pytest.fixture(scope="module")
def ddb(local_cluster: LocalCluster) -> Client:
    config = Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=30)
    return client_for(local_cluster, config=config)


@pytest.fixture(scope="module")
def table(ddb: Client) -> Iterator[str]:
    name = f"txn-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
    yield name
    ddb.delete_table(TableName=name)


def accounts(ddb: Client, table: str, n: int, balance: int = 100) -> list[str]:
    """``n`` fresh accounts (their keys hash to different partitions)."""
    ids = [f"acct-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    for i in ids:
        ddb.put_item(TableName=table, Item={"id": {"S": i}, "bal": {"N": str(balance)}})
    return ids


def transfer(table: str, src: str, dst: str, amount: int) -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": table,
                "Key": {"id": {"S": src}},
                "UpdateExpression": "SET bal = bal - :a",
                "ConditionExpression": "bal >= :a",
                "ExpressionAttributeValues": {":a": {"N": str(amount)}},
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": {"id": {"S": dst}},
                "UpdateExpression": "SET bal = bal + :a",
                "ExpressionAttributeValues": {":a": {"N": str(amount)}},
            }
        },
    ]


def balances(ddb: Client, table: str, ids: list[str]) -> list[int | None]:
    got = ddb.transact_get_items(
        TransactItems=[{"Get": {"TableName": table, "Key": {"id": {"S": i}}}} for i in ids]
    )
    return [int(r["Item"]["bal"]["N"]) if "Item" in r else None for r in got["Responses"]]


def S(text: str) -> dict[str, str]:
    return {"S": text}


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, dict[str, Any]]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err


def test_transfer_is_applied_to_every_partition(ddb: Client, table: str) -> None:
    ids = accounts(ddb, table, 6)
    for i in range(5):
        ddb.transact_write_items(TransactItems=transfer(table, ids[i], ids[i + 1], 10 * (i + 1)))
    assert balances(ddb, table, ids) == [90, 90, 90, 90, 90, 150]
    # Plain GetItem sees the committed values too (serializable with transactions).
    item = ddb.get_item(TableName=table, Key={"id": {"S": ids[5]}}, ConsistentRead=True)
    assert item["Item"]["bal"] == {"N": "150"}


def test_put_delete_and_condition_check_in_one_transaction(ddb: Client, table: str) -> None:
    a, b = accounts(ddb, table, 2)
    new = f"new-{uuid.uuid4().hex[:8]}"
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"id": {"S": new}, "bal": {"N": "1"}}}},
            {"Delete": {"TableName": table, "Key": {"id": {"S": a}}}},
            {
                "ConditionCheck": {
                    "TableName": table,
                    "Key": {"id": {"S": b}},
                    "ConditionExpression": "bal = :b",
                    "ExpressionAttributeValues": {":b": {"N": "100"}},
                }
            },
        ]
    )
    assert balances(ddb, table, [new, a, b]) == [1, None, 100]
    got = ddb.transact_get_items(
        TransactItems=[
            {"Get": {"TableName": table, "Key": {"id": {"S": new}}, "ProjectionExpression": "id"}},
            {"Get": {"TableName": table, "Key": {"id": {"S": a}}}},
        ]
    )
    assert got["Responses"] == [{"Item": {"id": {"S": new}}}, {}]


def test_failed_condition_cancels_everything_with_reasons(ddb: Client, table: str) -> None:
    a, b = accounts(ddb, table, 2, balance=5)
    items = transfer(table, a, b, 10)
    items[0]["Update"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=items)
    code, message, err = error_of(exc)
    assert code == "TransactionCanceledException"
    assert message == (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[ConditionalCheckFailed, None]"
    )
    assert err["CancellationReasons"] == [
        {
            "Code": "ConditionalCheckFailed",
            "Message": "The conditional request failed",
            "Item": {"id": {"S": a}, "bal": {"N": "5"}},
        },
        {"Code": "None"},
    ]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert balances(ddb, table, [a, b]) == [5, 5]  # nothing was applied, nothing is locked
    ddb.put_item(TableName=table, Item={"id": {"S": b}, "bal": {"N": "7"}})


def test_client_request_token_is_idempotent(ddb: Client, table: str) -> None:
    a, b = accounts(ddb, table, 2)
    token = uuid.uuid4().hex
    for _ in range(3):
        ddb.transact_write_items(TransactItems=transfer(table, a, b, 10), ClientRequestToken=token)
    assert balances(ddb, table, [a, b]) == [90, 110]
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=transfer(table, a, b, 20), ClientRequestToken=token)
    assert error_of(exc)[0] == "IdempotentParameterMismatchException"
    # Whatever differs: here the first item (and so the transaction's home partition) too.
    other = accounts(ddb, table, 1)[0]
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(
            TransactItems=transfer(table, other, a, 1), ClientRequestToken=token
        )
    assert error_of(exc)[0] == "IdempotentParameterMismatchException"
    assert balances(ddb, table, [a, b, other]) == [90, 110, 100]
    # A cancelled attempt does not use the token up: the retry runs again.
    token2 = uuid.uuid4().hex
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=transfer(table, a, b, 1000), ClientRequestToken=token2
        )
    ddb.put_item(TableName=table, Item={"id": {"S": a}, "bal": {"N": "1000"}})
    ddb.transact_write_items(TransactItems=transfer(table, a, b, 1000), ClientRequestToken=token2)
    assert balances(ddb, table, [a, b]) == [0, 1110]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "Member must have length greater than or equal to 1"),
        ("many", "Member must have length less than or equal to 100"),
        ("twice", "Transaction request cannot include multiple operations on one item"),
        ("both", "TransactItems can only contain one of Check, Put, Update or Delete"),
    ],
)
def test_invalid_requests(ddb: Client, table: str, items: Any, message: str) -> None:
    raw = client_for_unvalidated(ddb)
    key = {"id": {"S": "x"}}
    if items == "many":
        items = [{"Put": {"TableName": table, "Item": {"id": {"S": f"m{i}"}}}} for i in range(101)]
    elif items == "twice":
        items = [
            {"Put": {"TableName": table, "Item": key}},
            {"Delete": {"TableName": table, "Key": key}},
        ]
    elif items == "both":
        items = [
            {"Put": {"TableName": table, "Item": key}, "Delete": {"TableName": table, "Key": key}}
        ]
    with pytest.raises(ClientError) as exc:
        raw.transact_write_items(TransactItems=items)
    code, got, _ = error_of(exc)
    assert code == "ValidationException"
    assert message in got


def client_for_unvalidated(ddb: Client) -> Client:
    """The same endpoint and keys, without botocore's parameter validation."""
    import boto3

    creds = ddb._request_signer._credentials
    return boto3.client(
        "dynamodb",
        endpoint_url=ddb.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        config=Config(parameter_validation=False, retries={"max_attempts": 1}),
    )


def test_unknown_table_and_bad_item(ddb: Client, table: str) -> None:
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(
            TransactItems=[{"Put": {"TableName": "no-such-table", "Item": {"id": {"S": "a"}}}}]
        )
    assert error_of(exc)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        ddb.transact_get_items(
            TransactItems=[{"Get": {"TableName": table, "Key": {"nope": {"S": "a"}}}}]
        )
    assert error_of(exc)[0] == "ValidationException"


def test_update_error_at_apply_time_is_a_validation_reason(ddb: Client, table: str) -> None:
    (a,) = accounts(ddb, table, 1)
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"id": {"S": a}},
                        "UpdateExpression": "SET bal = bal + :s",
                        "ExpressionAttributeValues": {":s": {"S": "text"}},
                    }
                }
            ]
        )
    code, _, err = error_of(exc)
    assert code == "TransactionCanceledException"
    assert err["CancellationReasons"][0]["Code"] == "ValidationError"


def test_an_items_bad_data_cancels_with_a_validation_reason(ddb: Client, table: str) -> None:
    """A key of the wrong type or size is the item's cancellation reason (ValidationError), not
    a ValidationException; DynamoDB names the first such item only, every other one is None
    (even a false condition: nothing was evaluated)."""
    fresh = f"new-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"id": {"N": "7"}}}},
                {"Put": {"TableName": table, "Item": {"id": {"N": "8"}}}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": {"id": {"S": fresh}},
                        "ConditionExpression": "attribute_exists(id)",
                    }
                },
            ]
        )
    code, message, err = error_of(exc)
    assert code == "TransactionCanceledException"
    assert message.endswith("[ValidationError, None, None]")
    assert err["CancellationReasons"] == [
        {
            "Code": "ValidationError",
            "Message": "One or more parameter values were invalid: Type mismatch for key id "
            "expected: S actual: N",
        },
        {"Code": "None"},
        {"Code": "None"},
    ]
    for bad in (
        {"Delete": {"TableName": table, "Key": {"id": {"B": "AAE="}}}},
        {"Put": {"TableName": table, "Item": {"id": {"S": "k" * 2049}}}},
    ):
        with pytest.raises(ClientError) as exc:
            ddb.transact_write_items(
                TransactItems=[{"Put": {"TableName": table, "Item": {"id": {"S": fresh}}}}, bad]
            )
        code, _, err = error_of(exc)
        assert code == "TransactionCanceledException"
        assert [r["Code"] for r in err["CancellationReasons"]] == ["None", "ValidationError"]
    assert balances(ddb, table, [fresh]) == [None]  # nothing was written


def test_shape_errors_name_each_members_path(ddb: Client, table: str) -> None:
    raw = client_for_unvalidated(ddb)
    key = {"id": {"S": "x"}}
    with pytest.raises(ClientError) as exc:
        raw.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": key}},
                {"Update": {"TableName": table}},
                {"ConditionCheck": {"TableName": table, "Key": key}},
            ]
        )
    code, message, _ = error_of(exc)
    assert code == "ValidationException"
    assert message == (
        "3 validation errors detected: "
        "Value null at 'transactItems.2.member.update.key' failed to satisfy constraint: "
        "Member must not be null; "
        "Value null at 'transactItems.2.member.update.updateExpression' failed to satisfy "
        "constraint: Member must not be null; "
        "Value null at 'transactItems.3.member.conditionCheck.conditionExpression' failed to "
        "satisfy constraint: Member must not be null"
    )
    with pytest.raises(ClientError) as exc:
        raw.transact_write_items(
            TransactItems=[
                {
                    "Delete": {
                        "TableName": table,
                        "Key": key,
                        "ReturnValuesOnConditionCheckFailure": "none",
                    }
                }
            ]
        )
    assert error_of(exc)[:2] == (
        "ValidationException",
        "1 validation error detected: Value 'none' at "
        "'transactItems.1.member.delete.returnValuesOnConditionCheckFailure' failed to satisfy "
        "constraint: Member must satisfy enum value set: [ALL_OLD, NONE]",
    )
    with pytest.raises(ClientError) as exc:  # not a string at all: the JSON is wrong
        raw.transact_write_items(
            TransactItems=[
                {
                    "Delete": {
                        "TableName": table,
                        "Key": key,
                        "ReturnValuesOnConditionCheckFailure": 5,
                    }
                }
            ]
        )
    assert error_of(exc)[0] == "SerializationException"
    with pytest.raises(ClientError) as exc:
        raw.transact_get_items(TransactItems=[{"Get": {"TableName": table}}])
    assert error_of(exc)[1] == (
        "1 validation error detected: Value null at 'transactItems.1.member.get.key' failed to "
        "satisfy constraint: Member must not be null"
    )
    with pytest.raises(ClientError) as exc:
        raw.transact_write_items(TransactItems=[])
    assert error_of(exc)[1] == (
        "1 validation error detected: Value '[]' at 'transactItems' failed to satisfy "
        "constraint: Member must have length greater than or equal to 1"
    )


def test_token_length_request_size_and_name_types(ddb: Client, table: str) -> None:
    raw = client_for_unvalidated(ddb)
    fresh = f"tok-{uuid.uuid4().hex[:8]}"
    put = [{"Put": {"TableName": table, "Item": {"id": {"S": fresh}}}}]
    for token, bound in (
        ("t" * 37, "less than or equal to 36"),
        ("", "greater than or equal to 1"),
    ):
        with pytest.raises(ClientError) as exc:
            raw.transact_write_items(TransactItems=put, ClientRequestToken=token)
        assert error_of(exc)[:2] == (
            "ValidationException",
            f"1 validation error detected: Value '{token}' at 'clientRequestToken' failed to "
            f"satisfy constraint: Member must have length {bound}",
        )
    raw.transact_write_items(TransactItems=put, ClientRequestToken=uuid.uuid4().hex[:36])
    # The limit is on the request's size (its payload), not on the items it touches.
    big = "x" * 100_000
    with pytest.raises(ClientError) as exc:
        raw.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": {"id": {"S": f"{fresh}-{i}"}, "x": {"S": big}},
                    }
                }
                for i in range(50)
            ]
        )
    assert error_of(exc)[:2] == (
        "ValidationException",
        "Transaction payload size cannot exceed 4 MB",
    )
    # A name that is not a string is wrong JSON: SerializationException, for the whole request.
    with pytest.raises(ClientError) as exc:
        raw.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        **put[0]["Put"],
                        "ConditionExpression": "attribute_exists(#n)",
                        "ExpressionAttributeNames": {"#n": 7},
                    }
                }
            ]
        )
    assert error_of(exc)[0] == "SerializationException"
    assert balances(ddb, table, [f"{fresh}-0"]) == [None]


def test_update_past_the_size_limit_is_its_items_reason(ddb: Client, table: str) -> None:
    (a,) = accounts(ddb, table, 1)
    ddb.put_item(TableName=table, Item={"id": {"S": a}, "x": S("x" * 300_000)})
    grow = {
        "TableName": table,
        "Key": {"id": {"S": a}},
        "UpdateExpression": "SET y = :y",
        "ExpressionAttributeValues": {":y": S("y" * 200_000)},
    }
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=[{"Update": grow}])
    code, _, err = error_of(exc)
    assert code == "TransactionCanceledException"
    assert err["CancellationReasons"] == [
        {
            "Code": "ValidationError",
            "Message": "Item size to update has exceeded the maximum allowed size",
        }
    ]
    with pytest.raises(ClientError) as exc:  # UpdateItem words it the same way
        ddb.update_item(**grow)
    assert error_of(exc)[:2] == (
        "ValidationException",
        "Item size to update has exceeded the maximum allowed size",
    )
