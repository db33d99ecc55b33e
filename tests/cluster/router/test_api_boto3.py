"""The DynamoDB API through the real boto3 client (and the AWS CLI) against the session cluster.

Every test creates its own uniquely named table and checks what a DynamoDB user relies on: the
shapes boto3 parses, the documented semantics of each operation, and the error types and HTTP
statuses of the real service. Requests boto3 refuses to send (malformed JSON, unknown targets,
oversized bodies) go over raw HTTP, signed with botocore's own SigV4 signer.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster

pytestmark = pytest.mark.slow

REGION = "us-east-1"
WAIT = {"Delay": 1, "MaxAttempts": 30}
Client = Any  # botocore's generated DynamoDB client
NewTable = Callable[..., str]


# --- fixtures and helpers --------------------------------------------------------------------


def _secret(cluster: LocalCluster) -> str:
    return cluster.config.credentials[DEFAULT_ACCESS_KEY]


def _client(
    cluster: LocalCluster,
    *,
    router: str = "rt-a",
    key: str = DEFAULT_ACCESS_KEY,
    secret: str | None = None,
    validate: bool = True,
) -> Client:
    return boto3.client(
        "dynamodb",
        endpoint_url=cluster.endpoints()[router],
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret or _secret(cluster),
        config=Config(
            retries={"mode": "standard", "max_attempts": 2},
            parameter_validation=validate,
            connect_timeout=5,
            read_timeout=30,
        ),
    )


@pytest.fixture
def ddb(local_cluster: LocalCluster) -> Client:
    """A boto3 client for rt-a that retries once at most, so a 5xx shows up as itself."""
    return _client(local_cluster)


@pytest.fixture
def raw(local_cluster: LocalCluster) -> Client:
    """A client that skips botocore's parameter validation: wrong types reach the router."""
    return _client(local_cluster, validate=False)


def unique(prefix: str) -> str:
    return f"api-{prefix}-{uuid.uuid4().hex[:10]}"


def key_schema(hash_: tuple[str, str], range_: tuple[str, str] | None = None) -> dict[str, Any]:
    keys = [{"AttributeName": hash_[0], "KeyType": "HASH"}]
    defs = [{"AttributeName": hash_[0], "AttributeType": hash_[1]}]
    if range_ is not None:
        keys.append({"AttributeName": range_[0], "KeyType": "RANGE"})
        defs.append({"AttributeName": range_[0], "AttributeType": range_[1]})
    return {"KeySchema": keys, "AttributeDefinitions": defs}


@pytest.fixture
def new_table(ddb: Client) -> Iterator[NewTable]:
    """``new_table(prefix, hash_=("pk", "S"), range_=None)``: create, wait ACTIVE, name it.

    Tables are deleted when the test ends (a DynamoDB user would clean up too)."""
    created: list[str] = []

    def make(
        prefix: str,
        hash_: tuple[str, str] = ("pk", "S"),
        range_: tuple[str, str] | None = None,
        **extra: Any,
    ) -> str:
        name = unique(prefix)
        if "ProvisionedThroughput" not in extra:
            extra.setdefault("BillingMode", "PAY_PER_REQUEST")
        ddb.create_table(TableName=name, **key_schema(hash_, range_), **extra)
        created.append(name)
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig=WAIT)
        return name

    yield make
    for name in created:
        try:
            ddb.delete_table(TableName=name)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ResourceNotFoundException"


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def expect_error(code: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> ClientError:
    """Run ``call``; it must fail with DynamoDB error ``code`` (HTTP 400)."""
    with pytest.raises(ClientError) as exc:
        call(*args, **kwargs)
    assert error_of(exc) == (code, 400), exc.value.response
    return exc.value


def S(text: str) -> dict[str, str]:
    return {"S": text}


def N(number: float | str) -> dict[str, str]:
    return {"N": str(number)}


# How long an eventually consistent read may lag: a follower applies within milliseconds on a
# quiet machine, later beside CPU hogs; a bound for one that never does, not a deadline.
EVENTUAL_BOUND = 60.0


def lagging(started: float) -> bool:
    """Whether an eventual read may still catch up (``started``: a monotonic time); sleeps."""
    if time.monotonic() - started > EVENTUAL_BOUND:
        return False
    time.sleep(0.05)
    return True


def get_eventually(ddb: Client, table: str, key: dict[str, Any], want: Any) -> dict[str, Any]:
    """An eventually consistent GetItem, retried (bounded) until it returns ``want``."""
    item: dict[str, Any] | None = None
    started = time.monotonic()
    while True:
        item = ddb.get_item(TableName=table, Key=key).get("Item")
        if item == want:
            return item
        if not lagging(started):
            break
    raise AssertionError(f"eventual read never returned {want!r}; last {item!r}")


def query_all(ddb: Client, **request: Any) -> tuple[list[dict[str, Any]], int]:
    """Every page of a Query (Limit + ExclusiveStartKey), and how many pages it took."""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = ddb.query(**request)
        pages += 1
        items += page["Items"]
        assert page["Count"] == len(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items, pages
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        assert pages < 1000


def scan_all(ddb: Client, **request: Any) -> tuple[list[dict[str, Any]], int, int]:
    """Every page of a Scan: (items, pages, total ScannedCount)."""
    items: list[dict[str, Any]] = []
    pages = scanned = 0
    while True:
        page = ddb.scan(**request)
        pages += 1
        scanned += page["ScannedCount"]
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items, pages, scanned
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        assert pages < 1000


# --- tables ----------------------------------------------------------------------------------


def test_create_hash_only_table_describe_and_create_again(ddb: Client, new_table: NewTable) -> None:
    name = new_table("hash")
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["TableName"] == name
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["ItemCount"] == 0
    assert table["TableArn"].endswith(f":table/{name}")
    assert "CreationDateTime" in table
    # CreateTable of a name in use is ResourceInUseException, and changes nothing.
    expect_error(
        "ResourceInUseException",
        ddb.create_table,
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        **key_schema(("other", "N")),
    )
    assert_schema(ddb.describe_table(TableName=name)["Table"], ("pk", "S"))


def test_create_hash_range_provisioned_table(ddb: Client, new_table: NewTable) -> None:
    """HASH (B) + RANGE (N), PROVISIONED; S and B range keys are created by the query tests."""
    name = new_table(
        "rangebn",
        hash_=("h", "B"),
        range_=("r", "N"),
        ProvisionedThroughput={"ReadCapacityUnits": 50, "WriteCapacityUnits": 50},
    )
    table = ddb.describe_table(TableName=name)["Table"]
    assert_schema(table, ("h", "B"), ("r", "N"))
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 50
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 50
    assert table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"
    # The table is usable with keys of its types (boto3 base64-encodes bytes for us).
    key = {"h": {"B": b"\x00\xffk"}, "r": N("-7.5")}
    ddb.put_item(TableName=name, Item={**key, "a": S("ok")})
    got = ddb.get_item(TableName=name, Key=key, ConsistentRead=True)
    assert got["Item"] == {**key, "a": S("ok")}


def assert_schema(
    table: dict[str, Any], hash_: tuple[str, str], range_: tuple[str, str] | None = None
) -> None:
    """DescribeTable's KeySchema and AttributeDefinitions, as boto3 users read them."""
    expected = key_schema(hash_, range_)
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == expected["KeySchema"]
    by_name = sorted(table["AttributeDefinitions"], key=lambda d: d["AttributeName"])
    assert by_name == sorted(expected["AttributeDefinitions"], key=lambda d: d["AttributeName"])


def test_list_tables_paging(ddb: Client, new_table: NewTable) -> None:
    prefix = "api-list-"  # unique() names: only this test's tables sort under this prefix
    names = sorted(new_table("list") for _ in range(2))
    seen: list[str] = []
    request: dict[str, Any] = {"Limit": 1, "ExclusiveStartTableName": prefix}
    for _ in range(50):
        page = ddb.list_tables(**request)
        assert len(page["TableNames"]) <= 1
        seen += page["TableNames"]
        if "LastEvaluatedTableName" not in page or not seen[-1].startswith(prefix):
            break
        assert page["LastEvaluatedTableName"] == page["TableNames"][-1]
        request["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]
    assert [n for n in seen if n.startswith(prefix)] == names
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    after = ddb.list_tables(ExclusiveStartTableName=names[0], Limit=1)
    assert after["TableNames"] == [names[1]]
    # The paginator that boto3 users reach for walks the same pages.
    everything = [n for p in ddb.get_paginator("list_tables").paginate() for n in p["TableNames"]]
    assert set(names) <= set(everything)
    expect_error("ValidationException", ddb.list_tables, Limit=101)


def test_delete_table_then_not_found(ddb: Client, new_table: NewTable) -> None:
    name = new_table("delete")
    ddb.put_item(TableName=name, Item={"pk": S("a")})
    description = ddb.delete_table(TableName=name)["TableDescription"]
    assert description["TableName"] == name
    assert description["TableStatus"] == "DELETING"
    ddb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig=WAIT)
    for call, kwargs in [
        (ddb.describe_table, {}),
        (ddb.delete_table, {}),
        (ddb.get_item, {"Key": {"pk": S("a")}}),
        (ddb.put_item, {"Item": {"pk": S("a")}}),
        (ddb.scan, {}),
    ]:
        expect_error("ResourceNotFoundException", call, TableName=name, **kwargs)
    assert name not in ddb.list_tables(ExclusiveStartTableName=name[:-1], Limit=5)["TableNames"]
    # The name is free again, and the new table starts empty.
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **key_schema(("pk", "S")))
    try:
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig=WAIT)
        assert ddb.scan(TableName=name, ConsistentRead=True)["Items"] == []
    finally:
        ddb.delete_table(TableName=name)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(  # KeySchema names an attribute that is not defined
            {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "other", "AttributeType": "S"}],
            },
            id="undefined-key",
        ),
        pytest.param(  # a definition that no key uses
            {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "extra", "AttributeType": "S"},
                ],
            },
            id="extra-definition",
        ),
        pytest.param(
            {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "RANGE"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            },
            id="range-without-hash",
        ),
        pytest.param(
            {
                "KeySchema": [
                    {"AttributeName": "a", "KeyType": "HASH"},
                    {"AttributeName": "b", "KeyType": "HASH"},
                ],
                "AttributeDefinitions": [
                    {"AttributeName": "a", "AttributeType": "S"},
                    {"AttributeName": "b", "AttributeType": "S"},
                ],
            },
            id="two-hash-keys",
        ),
        pytest.param(
            {
                "KeySchema": [
                    {"AttributeName": "a", "KeyType": "HASH"},
                    {"AttributeName": "a", "KeyType": "RANGE"},
                ],
                "AttributeDefinitions": [{"AttributeName": "a", "AttributeType": "S"}],
            },
            id="same-attribute-twice",
        ),
        pytest.param(
            {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "pk", "AttributeType": "N"},
                ],
            },
            id="duplicate-definition",
        ),
        pytest.param(
            {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "BOOL"}],
            },
            id="non-key-type",
        ),
    ],
)
def test_create_table_with_bad_key_schema_is_validation_error(
    ddb: Client, raw: Client, request_: dict[str, Any]
) -> None:
    name = unique("badschema")
    expect_error(
        "ValidationException",
        raw.create_table,
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        **request_,
    )
    expect_error("ResourceNotFoundException", ddb.describe_table, TableName=name)


def test_create_table_capacity_rules(ddb: Client, raw: Client) -> None:
    name = unique("capacity")
    schema = key_schema(("pk", "S"))
    expect_error("ValidationException", ddb.create_table, TableName=name, **schema)
    expect_error(
        "ValidationException",
        ddb.create_table,
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        **schema,
    )
    expect_error(
        "ValidationException",
        raw.create_table,
        TableName="ab",
        BillingMode="PAY_PER_REQUEST",
        **schema,
    )
    expect_error("ResourceNotFoundException", ddb.describe_table, TableName=name)


# --- single-item operations ------------------------------------------------------------------


def test_put_get_consistent_and_eventual(
    ddb: Client, new_table: NewTable, local_cluster: LocalCluster
) -> None:
    name = new_table("putget")
    item = {
        "pk": S("user#1"),
        "name": S("Ada"),
        "age": N(36),
        "tags": {"SS": ["a", "b"]},
        "scores": {"NS": ["1", "2.5"]},
        "blob": {"B": b"\x00\x01"},
        "ok": {"BOOL": True},
        "none": {"NULL": True},
        "list": {"L": [S("x"), N(1), {"M": {"deep": S("y")}}]},
        "map": {"M": {"a": N(1), "b": {"L": []}}},
        "empty": S(""),
    }
    assert "Attributes" not in ddb.put_item(TableName=name, Item=item)
    assert (
        ddb.get_item(TableName=name, Key={"pk": S("user#1")}, ConsistentRead=True)["Item"] == item
    )
    get_eventually(ddb, name, {"pk": S("user#1")}, item)
    # A missing item is a response without "Item", not an error.
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": S("nobody")}, ConsistentRead=True)
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": S("nobody")})
    # Another router serves the same data.
    other = _client(local_cluster, router="rt-b")
    got = other.get_item(TableName=name, Key={"pk": S("user#1")}, ConsistentRead=True)
    assert got["Item"] == item


def test_numbers_come_back_normalized(ddb: Client, new_table: NewTable) -> None:
    """DynamoDB trims leading and trailing zeros: numbers are stored by value."""
    name = new_table("numbers", hash_=("pk", "N"))
    ddb.put_item(
        TableName=name,
        Item={"pk": N("05.0"), "n": N("1.50"), "e": N("1E+2"), "ns": {"NS": ["0.10", "2"]}},
    )
    got = ddb.get_item(TableName=name, Key={"pk": N("5")}, ConsistentRead=True)["Item"]
    assert got["pk"] == N("5")
    assert got["n"] == N("1.5")
    assert got["e"] == N("100")
    assert sorted(got["ns"]["NS"]) == ["0.1", "2"]
    new = ddb.update_item(
        TableName=name,
        Key={"pk": N("5.00")},
        UpdateExpression="SET m = :m",
        ExpressionAttributeValues={":m": N("-0.250")},
        ReturnValues="ALL_NEW",
    )["Attributes"]
    assert new["m"] == N("-0.25")
    assert new["pk"] == N("5")


def test_projection_expression_with_names(ddb: Client, new_table: NewTable) -> None:
    name = new_table("projection")
    ddb.put_item(
        TableName=name,
        Item={
            "pk": S("a"),
            "name": S("n"),
            "status": S("reserved word"),
            "nested": {"M": {"x": N(1), "y": N(2)}},
            "list": {"L": [S("zero"), S("one"), S("two")]},
        },
    )
    got = ddb.get_item(
        TableName=name,
        Key={"pk": S("a")},
        ProjectionExpression="#s, nested.y, #l[1], absent",
        ExpressionAttributeNames={"#s": "status", "#l": "list"},
        ConsistentRead=True,
    )["Item"]
    assert got == {
        "status": S("reserved word"),
        "nested": {"M": {"y": N(2)}},
        "list": {"L": [S("one")]},
    }
    # An unused or undefined name is a ValidationException, as in DynamoDB.
    expect_error(
        "ValidationException",
        ddb.get_item,
        TableName=name,
        Key={"pk": S("a")},
        ProjectionExpression="#s",
        ExpressionAttributeNames={"#s": "status", "#unused": "x"},
    )
    expect_error(
        "ValidationException",
        ddb.get_item,
        TableName=name,
        Key={"pk": S("a")},
        ProjectionExpression="#undefined",
    )


def test_put_and_delete_return_values(ddb: Client, new_table: NewTable) -> None:
    name = new_table("returns")
    first = {"pk": S("k"), "v": N(1)}
    second = {"pk": S("k"), "v": N(2)}
    assert "Attributes" not in ddb.put_item(TableName=name, Item=first, ReturnValues="ALL_OLD")
    old = ddb.put_item(TableName=name, Item=second, ReturnValues="ALL_OLD")
    assert old["Attributes"] == first
    assert "Attributes" not in ddb.put_item(TableName=name, Item=second, ReturnValues="NONE")
    expect_error(
        "ValidationException", ddb.put_item, TableName=name, Item=second, ReturnValues="ALL_NEW"
    )
    deleted = ddb.delete_item(TableName=name, Key={"pk": S("k")}, ReturnValues="ALL_OLD")
    assert deleted["Attributes"] == second
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": S("k")}, ConsistentRead=True)
    # Deleting a missing item succeeds and returns nothing.
    gone = ddb.delete_item(TableName=name, Key={"pk": S("k")}, ReturnValues="ALL_OLD")
    assert "Attributes" not in gone
    expect_error(
        "ValidationException",
        ddb.delete_item,
        TableName=name,
        Key={"pk": S("k")},
        ReturnValues="UPDATED_NEW",
    )


def test_update_actions(ddb: Client, new_table: NewTable) -> None:
    name = new_table("update")
    key = {"pk": S("u")}

    def update(expression: str, values: dict[str, Any] | None = None, **extra: Any) -> Any:
        request: dict[str, Any] = {"TableName": name, "Key": key, "UpdateExpression": expression}
        if values:
            request["ExpressionAttributeValues"] = values
        return ddb.update_item(**request, **extra)

    # UpdateItem creates the item when it is missing.
    update(
        "SET a = :a, #n = :n", {":a": S("x"), ":n": N(10)}, ExpressionAttributeNames={"#n": "count"}
    )
    update(
        "SET #n = #n + :d, b = :ten - :d",
        {":d": N(3), ":ten": N(10)},
        ExpressionAttributeNames={"#n": "count"},
    )
    update("SET c = if_not_exists(c, :zero) + :one", {":zero": N(0), ":one": N(1)})
    update("SET c = if_not_exists(c, :zero) + :one", {":zero": N(0), ":one": N(1)})
    update(
        "SET l = list_append(if_not_exists(l, :empty), :tail)",
        {":empty": {"L": []}, ":tail": {"L": [N(1), N(2)]}},
    )
    update("SET l = list_append(:head, l)", {":head": {"L": [N(0)]}})
    update("ADD s :s, tally :five", {":s": {"SS": ["x", "y", "z"]}, ":five": N(5)})
    update("ADD tally :five DELETE s :gone", {":five": N(5), ":gone": {"SS": ["y"]}})
    update("SET m = :m", {":m": {"M": {"nest": {"L": [N(1), N(2)]}}}})
    update("SET m.nest[0] = :v, m.added = :v REMOVE a", {":v": S("new")})
    item = ddb.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"]
    assert sorted(item.pop("s")["SS"]) == ["x", "z"]
    assert item == {
        "pk": S("u"),
        "count": N(13),
        "b": N(7),
        "c": N(2),
        "l": {"L": [N(0), N(1), N(2)]},
        "tally": N(10),
        "m": {"M": {"nest": {"L": [S("new"), N(2)]}, "added": S("new")}},
    }
    # Deleting every member of a set removes the attribute.
    update("DELETE s :all", {":all": {"SS": ["x", "z"]}})
    assert "s" not in ddb.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"]
    # Arithmetic on a missing attribute, or of the wrong type, is a ValidationException.
    expect_error("ValidationException", update, "SET x = nothing + :one", {":one": N(1)})
    expect_error("ValidationException", update, "SET x = m + :one", {":one": N(1)})
    # The key cannot be updated.
    expect_error("ValidationException", update, "SET pk = :v", {":v": S("other")})


def test_update_return_values(ddb: Client, new_table: NewTable) -> None:
    name = new_table("updreturn")
    key = {"pk": S("r")}
    original = {
        "pk": S("r"),
        "a": N(1),
        "b": N(1),
        "keep": S("k"),
        "m": {"M": {"x": N(1), "sibling": S("s")}},
        "l": {"L": [S("l0"), S("l1"), S("l2")]},
    }
    ddb.put_item(TableName=name, Item=original)

    def bump(returns: str) -> dict[str, Any]:
        response = ddb.update_item(
            TableName=name,
            Key=key,
            UpdateExpression="SET a = a + :one, fresh = :one, m.x = :two, l[1] = :two REMOVE b",
            ExpressionAttributeValues={":one": N(1), ":two": N(2)},
            ReturnValues=returns,
        )
        attributes: dict[str, Any] = response.get("Attributes", {})
        ddb.put_item(TableName=name, Item=original)
        return attributes

    assert bump("NONE") == {}
    assert bump("ALL_OLD") == original
    # UPDATED_*: only what the update names, nested paths as fragments (siblings left out).
    assert bump("UPDATED_OLD") == {
        "a": N(1),
        "b": N(1),
        "m": {"M": {"x": N(1)}},
        "l": {"L": [S("l1")]},
    }
    assert bump("ALL_NEW") == {
        "pk": S("r"),
        "a": N(2),
        "fresh": N(1),
        "keep": S("k"),
        "m": {"M": {"x": N(2), "sibling": S("s")}},
        "l": {"L": [S("l0"), N(2), S("l2")]},
    }
    assert bump("UPDATED_NEW") == {
        "a": N(2),
        "fresh": N(1),
        "m": {"M": {"x": N(2)}},
        "l": {"L": [N(2)]},
    }
    expect_error("ValidationException", bump, "EVERYTHING")
    # A REMOVE-only update has nothing new to return; UPDATED_OLD of a new attribute neither.
    removed = ddb.update_item(
        TableName=name, Key=key, UpdateExpression="REMOVE keep", ReturnValues="UPDATED_NEW"
    )
    assert "Attributes" not in removed
    added = ddb.update_item(
        TableName=name,
        Key=key,
        UpdateExpression="SET brand_new = :v",
        ExpressionAttributeValues={":v": S("v")},
        ReturnValues="UPDATED_OLD",
    )
    assert "Attributes" not in added
    # An upsert: UPDATED_NEW returns the attributes set (not the key), ALL_OLD nothing.
    created = ddb.update_item(
        TableName=name,
        Key={"pk": S("new")},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": S("v")},
        ReturnValues="UPDATED_NEW",
    )
    assert created["Attributes"] == {"v": S("v")}


def test_conditions_on_put_update_delete(ddb: Client, new_table: NewTable) -> None:
    name = new_table("conditions")
    key = {"pk": S("c")}
    item = {"pk": S("c"), "v": N(1), "state": S("open")}
    ddb.put_item(TableName=name, Item=item, ConditionExpression="attribute_not_exists(pk)")
    err = expect_error(
        "ConditionalCheckFailedException",
        ddb.put_item,
        TableName=name,
        Item={"pk": S("c"), "v": N(99)},
        ConditionExpression="attribute_not_exists(pk)",
    )
    assert "Item" not in err.response
    err = expect_error(
        "ConditionalCheckFailedException",
        ddb.put_item,
        TableName=name,
        Item={"pk": S("c"), "v": N(99)},
        ConditionExpression="attribute_not_exists(pk)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    assert err.response["Item"] == item
    expect_error(
        "ValidationException",
        ddb.put_item,
        TableName=name,
        Item=item,
        ReturnValuesOnConditionCheckFailure="ALL_NEW",
    )
    # boto3's modeled exception class catches it too.
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.put_item(TableName=name, Item=item, ConditionExpression="attribute_not_exists(pk)")

    # Optimistic locking with UpdateItem.
    ddb.update_item(
        TableName=name,
        Key=key,
        UpdateExpression="SET v = v + :one",
        ConditionExpression="v = :expected AND #s IN (:open, :held)",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={
            ":one": N(1),
            ":expected": N(1),
            ":open": S("open"),
            ":held": S("held"),
        },
    )
    err = expect_error(
        "ConditionalCheckFailedException",
        ddb.update_item,
        TableName=name,
        Key=key,
        UpdateExpression="SET v = v + :one",
        ConditionExpression="v = :expected",
        ExpressionAttributeValues={":one": N(1), ":expected": N(1)},
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    assert err.response["Item"]["v"] == N(2)
    # A condition on a missing item: the update must not create it.
    expect_error(
        "ConditionalCheckFailedException",
        ddb.update_item,
        TableName=name,
        Key={"pk": S("absent")},
        UpdateExpression="SET v = :one",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":one": N(1)},
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    absent = ddb.get_item(TableName=name, Key={"pk": S("absent")}, ConsistentRead=True)
    assert "Item" not in absent

    # Conditional delete.
    expect_error(
        "ConditionalCheckFailedException",
        ddb.delete_item,
        TableName=name,
        Key=key,
        ConditionExpression="v > :big",
        ExpressionAttributeValues={":big": N(100)},
    )
    deleted = ddb.delete_item(
        TableName=name,
        Key=key,
        ConditionExpression="begins_with(#s, :o) AND size(#s) = :four",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":o": S("o"), ":four": N(4)},
        ReturnValues="ALL_OLD",
    )
    assert deleted["Attributes"]["v"] == N(2)
    assert "Item" not in ddb.get_item(TableName=name, Key=key, ConsistentRead=True)


# --- Query and Scan --------------------------------------------------------------------------

SORT_NUMBERS = ["-10", "-1.5", "0", "0.25", "2", "3", "5", "7", "10", "100", "1000.5"]


@pytest.fixture
def numbers_table(ddb: Client, new_table: NewTable) -> str:
    """Partition "p" with numeric sort keys (negative, fractional, large) and a decoy partition."""
    name = new_table("qnum", hash_=("pk", "S"), range_=("sk", "N"))
    writes = [
        {"PutRequest": {"Item": {"pk": S("p"), "sk": N(n), "odd": {"BOOL": i % 2 == 1}}}}
        for i, n in enumerate(SORT_NUMBERS)
    ]
    writes.append({"PutRequest": {"Item": {"pk": S("other"), "sk": N(5)}}})
    assert ddb.batch_write_item(RequestItems={name: writes})["UnprocessedItems"] == {}
    return name


def _sorts(items: list[dict[str, Any]]) -> list[str]:
    return [item["sk"]["N"] for item in items]


NUMERIC_CONDITIONS = [
    ("sk = :a", {":a": "5"}, ["5"]),
    ("sk = :a", {":a": "5.000"}, ["5"]),  # numbers compare by value
    ("sk < :a", {":a": "2"}, ["-10", "-1.5", "0", "0.25"]),
    ("sk <= :a", {":a": "2"}, ["-10", "-1.5", "0", "0.25", "2"]),
    ("sk > :a", {":a": "10"}, ["100", "1000.5"]),
    ("sk >= :a", {":a": "10"}, ["10", "100", "1000.5"]),
    ("sk BETWEEN :a AND :b", {":a": "-1.5", ":b": "3"}, ["-1.5", "0", "0.25", "2", "3"]),
    ("sk BETWEEN :a AND :b", {":a": "3", ":b": "3"}, ["3"]),
    (":a < sk", {":a": "100"}, ["1000.5"]),  # the value may come first
    ("sk = :a", {":a": "4"}, []),
    ("sk > :a", {":a": "1e10"}, []),
]


def test_query_numeric_sort_key_conditions_and_errors(
    ddb: Client, raw: Client, numbers_table: str
) -> None:
    assert_schema(ddb.describe_table(TableName=numbers_table)["Table"], ("pk", "S"), ("sk", "N"))
    for condition, values, expected in NUMERIC_CONDITIONS:
        page = ddb.query(
            TableName=numbers_table,
            KeyConditionExpression=f"pk = :p AND {condition}",
            ExpressionAttributeValues={":p": S("p"), **{k: N(v) for k, v in values.items()}},
            ConsistentRead=True,
        )
        assert _sorts(page["Items"]) == expected, (condition, values)
        assert page["Count"] == page["ScannedCount"] == len(expected)
        assert "LastEvaluatedKey" not in page
    cases: list[tuple[str, dict[str, Any]]] = [
        ("sk = :a", {":a": N(1)}),  # no partition key condition
        ("pk < :p", {":p": S("p")}),  # the partition key needs equality
        ("pk = :p AND odd = :t", {":p": S("p"), ":t": {"BOOL": True}}),  # not a key
        ("pk = :p AND sk = :a", {":p": S("p"), ":a": S("text")}),  # wrong sort key type
        ("pk = :p", {":p": N(1)}),  # wrong partition key type
        ("pk = :p AND sk BETWEEN :b AND :a", {":p": S("p"), ":a": N(1), ":b": N(2)}),
        ("pk = :p OR sk = :a", {":p": S("p"), ":a": N(1)}),
        ("pk = :p AND sk <> :a", {":p": S("p"), ":a": N(1)}),
        ("pk = :p AND", {":p": S("p")}),  # syntax error
    ]
    for condition, values in cases:
        expect_error(
            "ValidationException",
            ddb.query,
            TableName=numbers_table,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
        )
    base = {
        "TableName": numbers_table,
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": S("p")},
    }
    bad_starts = [
        {"pk": S("p")},  # missing the sort key
        {"pk": S("other"), "sk": N(1)},  # another partition
        {"pk": S("p"), "sk": S("1")},  # wrong type
    ]
    for start in bad_starts:
        expect_error("ValidationException", ddb.query, **base, ExclusiveStartKey=start)
    expect_error(
        "ValidationException", ddb.query, **base, Select="COUNT", ProjectionExpression="sk"
    )
    expect_error("ValidationException", raw.query, **base, Limit=0)
    expect_error(
        "ResourceNotFoundException", ddb.query, **{**base, "TableName": unique("nosuchtable")}
    )


def test_query_numeric_order_paging_filter_and_count(ddb: Client, numbers_table: str) -> None:
    base = {
        "TableName": numbers_table,
        "KeyConditionExpression": "#k = :p",
        "ExpressionAttributeNames": {"#k": "pk"},
        "ExpressionAttributeValues": {":p": S("p")},
        "ConsistentRead": True,
    }
    everything = ddb.query(**base)
    assert _sorts(everything["Items"]) == SORT_NUMBERS  # numeric, not string, order
    backwards = ddb.query(**base, ScanIndexForward=False)
    assert _sorts(backwards["Items"]) == SORT_NUMBERS[::-1]
    # Limit + ExclusiveStartKey, forwards and backwards, until LastEvaluatedKey is absent.
    for limit in (1, 3, 4, len(SORT_NUMBERS), 50):
        items, pages = query_all(ddb, **base, Limit=limit)
        assert _sorts(items) == SORT_NUMBERS
        assert pages >= -(-len(SORT_NUMBERS) // limit)
        items, _ = query_all(ddb, **base, Limit=limit, ScanIndexForward=False)
        assert _sorts(items) == SORT_NUMBERS[::-1]
    first = ddb.query(**base, Limit=3)
    assert first["LastEvaluatedKey"] == {"pk": S("p"), "sk": N("0")}
    # FilterExpression applies after Limit: Count counts matches, ScannedCount what was read.
    filtered = ddb.query(
        **{**base, "ExpressionAttributeValues": {":p": S("p"), ":t": {"BOOL": True}}},
        FilterExpression="odd = :t",
    )
    assert _sorts(filtered["Items"]) == SORT_NUMBERS[1::2]
    assert filtered["Count"] == len(SORT_NUMBERS) // 2
    assert filtered["ScannedCount"] == len(SORT_NUMBERS)
    items, _ = query_all(
        ddb,
        **{**base, "ExpressionAttributeValues": {":p": S("p"), ":t": {"BOOL": True}}},
        FilterExpression="odd = :t",
        Limit=2,
    )
    assert _sorts(items) == SORT_NUMBERS[1::2]
    counted = ddb.query(**base, Select="COUNT")
    assert counted["Count"] == len(SORT_NUMBERS)
    assert "Items" not in counted
    # The paginator boto3 users reach for.
    paginated = [
        item
        for page in ddb.get_paginator("query").paginate(**base, PaginationConfig={"PageSize": 4})
        for item in page["Items"]
    ]
    assert _sorts(paginated) == SORT_NUMBERS
    # begins_with applies to strings and binary only: on a number it is a ValidationException.
    expect_error(
        "ValidationException",
        ddb.query,
        TableName=numbers_table,
        KeyConditionExpression="pk = :p AND begins_with(sk, :n)",
        ExpressionAttributeValues={":p": S("p"), ":n": N(1)},
    )


def test_query_string_sort_key(ddb: Client, new_table: NewTable) -> None:
    name = new_table("qstr", hash_=("user", "S"), range_=("ts", "S"))
    assert_schema(ddb.describe_table(TableName=name)["Table"], ("user", "S"), ("ts", "S"))
    stamps = [f"2024-0{m}-{d:02d}" for m in (1, 2, 3) for d in (1, 15, 28)] + ["2025-01-01"]
    writes = [
        {"PutRequest": {"Item": {"user": S("u1"), "ts": S(t), "n": N(i)}}}
        for i, t in enumerate(stamps)
    ]
    ddb.batch_write_item(RequestItems={name: writes})
    ddb.put_item(TableName=name, Item={"user": S("u2"), "ts": S("2024-02-15")})

    def q(condition: str, **values: str) -> list[str]:
        page = ddb.query(
            TableName=name,
            KeyConditionExpression="#u = :u AND " + condition,
            ExpressionAttributeNames={"#u": "user"},
            ExpressionAttributeValues={":u": S("u1"), **{f":{k}": S(v) for k, v in values.items()}},
            ConsistentRead=True,
        )
        return [item["ts"]["S"] for item in page["Items"]]

    assert q("begins_with(ts, :p)", p="2024-02") == ["2024-02-01", "2024-02-15", "2024-02-28"]
    assert q("begins_with(ts, :p)", p="2025") == ["2025-01-01"]
    assert q("begins_with(ts, :p)", p="2026") == []
    assert q("ts BETWEEN :a AND :b", a="2024-01-15", b="2024-02-15") == [
        "2024-01-15",
        "2024-01-28",
        "2024-02-01",
        "2024-02-15",
    ]
    assert q("ts < :a", a="2024-01-15") == ["2024-01-01"]
    assert q("ts <= :a", a="2024-01-15") == ["2024-01-01", "2024-01-15"]
    assert q("ts > :a", a="2024-03-28") == ["2025-01-01"]
    assert q("ts >= :a", a="2024-03-28") == ["2024-03-28", "2025-01-01"]
    assert q("ts = :a", a="2024-03-15") == ["2024-03-15"]
    # Eventually consistent queries see the data too (after a bounded wait).
    started = time.monotonic()
    while True:
        page = ddb.query(
            TableName=name,
            KeyConditionExpression="#u = :u",
            ExpressionAttributeNames={"#u": "user"},
            ExpressionAttributeValues={":u": S("u1")},
        )
        if page["Count"] == len(stamps) or not lagging(started):
            break
    assert [item["ts"]["S"] for item in page["Items"]] == stamps
    # Projection with a reserved-word name, paged backwards.
    items, _ = query_all(
        ddb,
        TableName=name,
        KeyConditionExpression="#u = :u AND begins_with(ts, :y)",
        ExpressionAttributeNames={"#u": "user"},
        ExpressionAttributeValues={":u": S("u1"), ":y": S("2024")},
        ProjectionExpression="ts",
        ScanIndexForward=False,
        Limit=2,
        ConsistentRead=True,
    )
    assert items == [{"ts": S(t)} for t in reversed(stamps[:-1])]


def test_query_binary_sort_key(ddb: Client, new_table: NewTable) -> None:
    name = new_table("qbin", hash_=("pk", "B"), range_=("sk", "B"))
    assert_schema(ddb.describe_table(TableName=name)["Table"], ("pk", "B"), ("sk", "B"))
    keys = [b"\x00", b"\x01\x00", b"\x01\x01", b"\x01\xff", b"\x02", b"\xff\xff"]
    ddb.batch_write_item(
        RequestItems={
            name: [{"PutRequest": {"Item": {"pk": {"B": b"p"}, "sk": {"B": k}}}} for k in keys]
        }
    )
    page = ddb.query(
        TableName=name,
        KeyConditionExpression="pk = :p AND begins_with(sk, :pre)",
        ExpressionAttributeValues={":p": {"B": b"p"}, ":pre": {"B": b"\x01"}},
        ConsistentRead=True,
    )
    assert [item["sk"]["B"] for item in page["Items"]] == [b"\x01\x00", b"\x01\x01", b"\x01\xff"]
    page = ddb.query(
        TableName=name,
        KeyConditionExpression="pk = :p AND sk > :lo",
        ExpressionAttributeValues={":p": {"B": b"p"}, ":lo": {"B": b"\x01\xff"}},
        ConsistentRead=True,
    )
    assert [item["sk"]["B"] for item in page["Items"]] == [b"\x02", b"\xff\xff"]
    # Pages stop at 1 MB: four 350 KB items take more than one page, Query and Scan alike.
    for i in range(4):
        item = {"pk": {"B": b"big"}, "sk": {"B": bytes([i])}, "blob": S("x" * 350_000)}
        ddb.put_item(TableName=name, Item=item)
    request = {
        "TableName": name,
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"B": b"big"}},
        "ProjectionExpression": "sk",
        "ConsistentRead": True,
    }
    first = ddb.query(**request)
    assert 1 <= first["Count"] < 4 and "LastEvaluatedKey" in first
    items, pages = query_all(ddb, **request)
    assert [item["sk"]["B"] for item in items] == [bytes([i]) for i in range(4)]
    assert pages >= 2
    scanned, pages, _ = scan_all(
        ddb, TableName=name, ProjectionExpression="sk", ConsistentRead=True
    )
    assert len(scanned) == len(keys) + 4 and pages >= 2


def test_scan_pages_every_item_exactly_once(ddb: Client, new_table: NewTable) -> None:
    name = new_table("scan", hash_=("pk", "S"), range_=("sk", "N"))
    expected: set[tuple[str, str]] = set()
    writes: list[dict[str, Any]] = []
    for i in range(200):
        pk, sk = f"key-{i % 67}", str(i)
        expected.add((pk, sk))
        writes.append(
            {"PutRequest": {"Item": {"pk": S(pk), "sk": N(sk), "even": {"BOOL": i % 2 == 0}}}}
        )
    for start in range(0, len(writes), 25):
        response = ddb.batch_write_item(RequestItems={name: writes[start : start + 25]})
        assert response["UnprocessedItems"] == {}

    def keys(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(item["pk"]["S"], item["sk"]["N"]) for item in items]

    whole = ddb.scan(TableName=name, ConsistentRead=True)
    assert sorted(keys(whole["Items"])) == sorted(expected)
    assert whole["Count"] == whole["ScannedCount"] == 200
    assert "LastEvaluatedKey" not in whole
    for limit in (3, 37, 64, 199, 200, 1000):
        items, pages, scanned = scan_all(ddb, TableName=name, Limit=limit, ConsistentRead=True)
        got = keys(items)
        assert len(got) == len(set(got)) == 200, f"limit {limit}: duplicates or gaps"
        assert set(got) == expected
        assert scanned == 200
        assert pages >= -(-200 // limit)
    # A filtered, projected, paged scan.
    items, _, scanned = scan_all(
        ddb,
        TableName=name,
        Limit=30,
        FilterExpression="#e = :t AND sk >= :min",
        ProjectionExpression="pk, sk",
        ExpressionAttributeNames={"#e": "even"},
        ExpressionAttributeValues={":t": {"BOOL": True}, ":min": N(100)},
        ConsistentRead=True,
    )
    assert scanned == 200
    assert sorted(keys(items)) == sorted(
        (p, s) for p, s in expected if int(s) % 2 == 0 and int(s) >= 100
    )
    assert all(set(item) == {"pk", "sk"} for item in items)
    # boto3's paginator, and Select=COUNT (eventually consistent: it may lag, briefly).
    paged = [
        item
        for page in ddb.get_paginator("scan").paginate(
            TableName=name, ConsistentRead=True, PaginationConfig={"PageSize": 64}
        )
        for item in page["Items"]
    ]
    assert sorted(keys(paged)) == sorted(expected)
    started = time.monotonic()
    while True:
        counted = ddb.scan(TableName=name, Select="COUNT")
        if counted["Count"] == 200 or not lagging(started):
            break
    assert counted["Count"] == 200 and "Items" not in counted
    expect_error(
        "ValidationException", ddb.scan, TableName=name, ExclusiveStartKey={"pk": S("key-1")}
    )


# --- batches ---------------------------------------------------------------------------------


def test_batch_write_and_get(ddb: Client, new_table: NewTable, local_cluster: LocalCluster) -> None:
    name = new_table("batch", hash_=("pk", "S"), range_=("sk", "N"))
    other = new_table("batch2")
    puts = [
        {"PutRequest": {"Item": {"pk": S(f"k{i}"), "sk": N(i), "v": S(f"value {i}"), "n": N(i)}}}
        for i in range(24)
    ]
    response = ddb.batch_write_item(
        RequestItems={name: puts, other: [{"PutRequest": {"Item": {"pk": S("solo")}}}]}
    )
    assert response["UnprocessedItems"] == {}
    keys = [{"pk": S(f"k{i}"), "sk": N(i)} for i in range(24)]
    got = ddb.batch_get_item(
        RequestItems={
            name: {"Keys": [*keys, {"pk": S("missing"), "sk": N(0)}], "ConsistentRead": True},
            other: {"Keys": [{"pk": S("solo")}], "ConsistentRead": True},
        }
    )
    assert got["UnprocessedKeys"] == {}
    assert sorted(got["Responses"][name], key=lambda item: int(item["sk"]["N"])) == [
        put["PutRequest"]["Item"] for put in puts
    ]
    assert got["Responses"][other] == [{"pk": S("solo")}]
    # Projection with names, per table.
    projected = ddb.batch_get_item(
        RequestItems={
            name: {
                "Keys": keys[:3],
                "ProjectionExpression": "#v, sk",
                "ExpressionAttributeNames": {"#v": "v"},
                "ConsistentRead": True,
            }
        }
    )
    assert sorted(projected["Responses"][name], key=lambda item: int(item["sk"]["N"])) == [
        {"v": S(f"value {i}"), "sk": N(i)} for i in range(3)
    ]
    # Deletes and puts mixed; a batch of exactly 25.
    mixed = [{"DeleteRequest": {"Key": key}} for key in keys[:20]] + [
        {"PutRequest": {"Item": {"pk": S(f"new{i}"), "sk": N(i)}}} for i in range(5)
    ]
    assert ddb.batch_write_item(RequestItems={name: mixed})["UnprocessedItems"] == {}
    left = ddb.scan(TableName=name, ConsistentRead=True)["Items"]
    assert sorted(item["pk"]["S"] for item in left) == sorted(
        [f"k{i}" for i in range(20, 24)] + [f"new{i}" for i in range(5)]
    )
    # 100 keys is the BatchGetItem maximum (missing keys simply do not come back).
    hundred = [{"pk": S(f"x{i}"), "sk": N(i)} for i in range(100)]
    response = ddb.batch_get_item(RequestItems={name: {"Keys": hundred}})
    assert response["Responses"] == {name: []} and response["UnprocessedKeys"] == {}
    # boto3's resource layer (batch_writer) works unchanged.
    table = boto3.resource(
        "dynamodb",
        endpoint_url=ddb.meta.endpoint_url,
        region_name=REGION,
        aws_access_key_id=DEFAULT_ACCESS_KEY,
        aws_secret_access_key=_secret(local_cluster),
    ).Table(other)
    with table.batch_writer() as writer:
        for i in range(60):
            writer.put_item(Item={"pk": f"bw{i}", "n": i})
    assert table.get_item(Key={"pk": "bw59"}, ConsistentRead=True)["Item"] == {
        "pk": "bw59",
        "n": 59,
    }


def test_batch_limits_and_validation(ddb: Client, new_table: NewTable) -> None:
    name = new_table("batchlimits")
    item = {"pk": S("a")}
    too_many = [{"PutRequest": {"Item": {"pk": S(f"k{i}")}}} for i in range(26)]
    expect_error("ValidationException", ddb.batch_write_item, RequestItems={name: too_many})
    duplicates = [{"PutRequest": {"Item": item}}, {"DeleteRequest": {"Key": item}}]
    expect_error("ValidationException", ddb.batch_write_item, RequestItems={name: duplicates})
    expect_error(
        "ValidationException",
        ddb.batch_write_item,
        RequestItems={name: [{"PutRequest": {"Item": {"pk": N(1)}}}]},
    )
    expect_error(
        "ResourceNotFoundException",
        ddb.batch_write_item,
        RequestItems={unique("nosuchtable"): [{"PutRequest": {"Item": item}}]},
    )
    # A bad batch writes nothing.
    expect_error(
        "ValidationException",
        ddb.batch_write_item,
        RequestItems={
            name: [
                {"PutRequest": {"Item": {"pk": S("good")}}},
                {"PutRequest": {"Item": {"pk": S("")}}},
            ]
        },
    )
    assert "Item" not in ddb.get_item(TableName=name, Key={"pk": S("good")}, ConsistentRead=True)
    keys = [{"pk": S(f"k{i}")} for i in range(101)]
    expect_error("ValidationException", ddb.batch_get_item, RequestItems={name: {"Keys": keys}})
    expect_error(
        "ValidationException",
        ddb.batch_get_item,
        RequestItems={name: {"Keys": [item, item]}},
    )
    expect_error(
        "ValidationException",
        ddb.batch_get_item,
        RequestItems={name: {"Keys": [{"pk": S("a"), "extra": S("b")}]}},
    )
    expect_error(
        "ResourceNotFoundException",
        ddb.batch_get_item,
        RequestItems={unique("nosuchtable"): {"Keys": [item]}},
    )


# --- errors ----------------------------------------------------------------------------------


def test_key_and_item_validation_errors(ddb: Client, raw: Client, new_table: NewTable) -> None:
    name = new_table("keyerrors", hash_=("pk", "S"), range_=("sk", "N"))
    good = {"pk": S("a"), "sk": N(1)}
    bad_keys = [
        {"pk": N(1), "sk": N(1)},  # wrong hash key type
        {"pk": S("a"), "sk": S("1")},  # wrong range key type
        {"pk": S("a")},  # missing the range key
        {"sk": N(1)},  # missing the hash key
        {"pk": S("a"), "sk": N(1), "x": S("extra")},  # not only the key
        {"pk": S(""), "sk": N(1)},  # empty string key
        {"pk": S("a"), "sk": N("one")},  # not a number
    ]
    for key in bad_keys:
        expect_error("ValidationException", ddb.get_item, TableName=name, Key=key)
        expect_error("ValidationException", ddb.delete_item, TableName=name, Key=key)
        expect_error(
            "ValidationException",
            ddb.update_item,
            TableName=name,
            Key=key,
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": S("v")},
        )
        if set(key) <= {"pk", "sk"}:
            expect_error("ValidationException", ddb.put_item, TableName=name, Item=key)
    bad_items = [
        {**good, "big": S("x" * (400 * 1024))},  # over 400 KB
        {**good, "set": {"SS": []}},  # empty set
        {**good, "set": {"SS": ["a", "a"]}},  # duplicate set members
        {**good, "n": N("1e999")},  # out of range
        {**good, "n": N("1" * 39)},  # 39 significant digits
        {**good, "null": {"NULL": False}},
        {**good, "": S("empty name")},
    ]
    for item in bad_items:
        expect_error("ValidationException", ddb.put_item, TableName=name, Item=item)
    # Attribute values with no type, two types or an unknown type (sent past boto3's checks).
    for value in ({}, {"S": "a", "N": "1"}):
        expect_error("ValidationException", raw.put_item, TableName=name, Item={**good, "v": value})
    # A value of the wrong JSON type inside one ({"N": 123}) is a SerializationException. The
    # AWS CLI cannot send one (botocore's parameter validation refuses it client-side: "Invalid
    # type for parameter Item.v.N"); PynamoDB's connection can (test_clients.py).
    for value in ({"BOOL": "yes"}, {"S": 5}, {"N": 123}):
        err = expect_error(
            "SerializationException", raw.put_item, TableName=name, Item={**good, "v": value}
        )
    assert err.response["Error"]["Message"] == (
        "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to "
        "an String"
    )
    for call in (raw.get_item, raw.delete_item):  # in a key too
        expect_error("SerializationException", call, TableName=name, Key={**good, "sk": {"N": 1}})
    # A big but legal item goes through (and the key's size limits hold).
    ddb.put_item(TableName=name, Item={**good, "big": S("x" * (390 * 1024))})
    expect_error(
        "ValidationException", ddb.get_item, TableName=name, Key={"pk": S("k" * 2049), "sk": N(1)}
    )
    assert "Attributes" not in ddb.delete_item(TableName=name, Key=good)
    # Parameters of the wrong JSON type (boto3 would refuse them) are SerializationExceptions.
    for call, request in [
        (raw.scan, {"TableName": name, "Limit": "ten"}),
        (raw.get_item, {"TableName": name, "Key": good, "ConsistentRead": "yes"}),
        (raw.query, {"TableName": name, "KeyConditionExpression": 7}),
    ]:
        with pytest.raises(ClientError) as exc:
            call(**request)
        assert error_of(exc) == ("SerializationException", 400), request


def test_expression_errors(ddb: Client, new_table: NewTable) -> None:
    name = new_table("exprerrors")
    ddb.put_item(TableName=name, Item={"pk": S("a"), "n": N(1)})
    key = {"pk": S("a")}
    cases: list[dict[str, Any]] = [
        {"UpdateExpression": "SET = :v", "ExpressionAttributeValues": {":v": N(1)}},  # syntax
        {"UpdateExpression": "SET n = :v"},  # undefined value
        {
            "UpdateExpression": "SET n = :v",
            "ExpressionAttributeValues": {":v": N(1), ":unused": N(2)},
        },
        {
            "UpdateExpression": "SET #x = :v",
            "ExpressionAttributeValues": {":v": N(1)},
        },  # undefined name
        {
            "UpdateExpression": "SET n = :v",
            "ExpressionAttributeValues": {":v": N(1)},
            "ExpressionAttributeNames": {"#unused": "n"},
        },
        {"UpdateExpression": "SET n = :v", "ExpressionAttributeValues": {}},
        {"UpdateExpression": "SET n = :v SET m = :v", "ExpressionAttributeValues": {":v": N(1)}},
        {"UpdateExpression": "SET n = :v REMOVE n", "ExpressionAttributeValues": {":v": N(1)}},
        {"UpdateExpression": "ADD n :v", "ExpressionAttributeValues": {":v": S("text")}},
        {"UpdateExpression": "DELETE n :v", "ExpressionAttributeValues": {":v": N(1)}},
        {"UpdateExpression": "SET n = nope(:v)", "ExpressionAttributeValues": {":v": N(1)}},
        {
            "UpdateExpression": "SET n = :v",
            "ConditionExpression": "n ==== :v",
            "ExpressionAttributeValues": {":v": N(1)},
        },
        {
            "UpdateExpression": "SET n = :v",
            "ConditionExpression": "attribute_type(n, :t)",
            "ExpressionAttributeValues": {":v": N(1), ":t": S("NOPE")},
        },
    ]
    for request in cases:
        expect_error("ValidationException", ddb.update_item, TableName=name, Key=key, **request)
    for condition in ("", "n <", "size(n)", "(n = :v", "n = :v AND"):
        expect_error(
            "ValidationException",
            ddb.put_item,
            TableName=name,
            Item=key,
            ConditionExpression=condition,
            ExpressionAttributeValues={":v": N(1)},
        )
    expect_error(
        "ValidationException",
        ddb.scan,
        TableName=name,
        FilterExpression="n = :v",
        ExpressionAttributeValues={":v": N(1), ":w": N(2)},
    )
    expect_error(
        "ValidationException", ddb.get_item, TableName=name, Key=key, ProjectionExpression="a,,b"
    )
    # Nothing above changed the item.
    assert ddb.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"] == {
        "pk": S("a"),
        "n": N(1),
    }


def test_unknown_tables(ddb: Client) -> None:
    missing = unique("nosuchtable")
    expect_error("ResourceNotFoundException", ddb.describe_table, TableName=missing)
    expect_error("ResourceNotFoundException", ddb.delete_table, TableName=missing)
    expect_error("ResourceNotFoundException", ddb.get_item, TableName=missing, Key={"k": S("a")})
    expect_error("ResourceNotFoundException", ddb.put_item, TableName=missing, Item={"k": S("a")})
    expect_error(
        "ResourceNotFoundException",
        ddb.update_item,
        TableName=missing,
        Key={"k": S("a")},
        UpdateExpression="SET a = :a",
        ExpressionAttributeValues={":a": S("a")},
    )
    expect_error("ResourceNotFoundException", ddb.delete_item, TableName=missing, Key={"k": S("a")})
    expect_error("ResourceNotFoundException", ddb.scan, TableName=missing)
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.describe_table(TableName=missing)


def test_authentication_errors(local_cluster: LocalCluster) -> None:
    stranger = _client(local_cluster, key="AKIDNOBODY", secret="whatever")
    with pytest.raises(ClientError) as exc:
        stranger.list_tables()
    assert error_of(exc) == ("UnrecognizedClientException", 400)
    wrong_secret = _client(local_cluster, secret="not-the-secret")
    with pytest.raises(ClientError) as exc:
        wrong_secret.list_tables()
    assert error_of(exc) == ("InvalidSignatureException", 400)


# --- raw HTTP: what boto3 would never send ---------------------------------------------------


def _send(
    cluster: LocalCluster,
    body: bytes,
    target: str | None = "DynamoDB_20120810.ListTables",
    sign: bool = True,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST ``body`` to rt-a, signed with botocore's SigV4 signer; (status, JSON, headers)."""
    url = cluster.endpoints()["rt-a"] + "/"
    headers = {"Content-Type": "application/x-amz-json-1.0"}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    if sign:
        credentials = Credentials(DEFAULT_ACCESS_KEY, _secret(cluster))
        SigV4Auth(credentials, "dynamodb", REGION).add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(url, data=body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(http, timeout=60) as response:
            status, payload, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, payload, got = exc.code, exc.read(), dict(exc.headers)
    return status, json.loads(payload), got


def _type(body: dict[str, Any]) -> str:
    return str(body["__type"]).rsplit("#", 1)[-1]


def test_raw_requests_signed_with_botocore(local_cluster: LocalCluster) -> None:
    status, body, headers = _send(local_cluster, b"{}")
    assert status == 200 and isinstance(body["TableNames"], list)
    assert headers["Content-Type"].startswith("application/x-amz-json-1.0")
    cases = [
        (b"{not json", "DynamoDB_20120810.ListTables", "SerializationException"),
        (b'{"TableName": ', "DynamoDB_20120810.DescribeTable", "SerializationException"),
        (b"\xff\xfe\x00garbage", "DynamoDB_20120810.ListTables", "SerializationException"),
        (b"[1, 2, 3]", "DynamoDB_20120810.ListTables", "SerializationException"),
        (b'"a string"', "DynamoDB_20120810.ListTables", "SerializationException"),
        (b"[" * 100_000, "DynamoDB_20120810.ListTables", "SerializationException"),
        (b"{}", "DynamoDB_20120810.Frobnicate", "UnknownOperationException"),
        (b"{}", "DynamoDB_20991231.ListTables", "UnknownOperationException"),
        (b"{}", None, "UnknownOperationException"),
        (b'{"TableName": "x"}', "DynamoDB_20120810.DescribeTable", "ValidationException"),
    ]
    for payload, target, expected in cases:
        status, body, _ = _send(local_cluster, payload, target)
        assert (status, _type(body)) == (400, expected), (payload[:40], target, body)
        assert isinstance(body.get("message") or body.get("Message"), str)
    # DynamoDB's wire form of a request validation error, as real responses carry it.
    _, body, _ = _send(local_cluster, b'{"TableName": "x"}', "DynamoDB_20120810.DescribeTable")
    assert body["__type"] == "com.amazon.coral.validate#ValidationException"
    # Unsigned requests are refused, never served.
    status, body, _ = _send(local_cluster, b"{}", sign=False)
    assert status == 400 and _type(body) == "MissingAuthenticationTokenException"


def test_raw_malformed_shapes_are_client_errors(
    local_cluster: LocalCluster, new_table: NewTable
) -> None:
    """Well-formed JSON of the wrong shape is a 400, never a 500 (and writes nothing)."""
    name = new_table("shapes")
    key = {"pk": {"S": "a"}}
    deep: dict[str, Any] = {"S": "leaf"}
    for _ in range(40):
        deep = {"M": {"m": deep}}
    shallow: dict[str, Any] = {"S": "leaf"}
    for _ in range(20):
        shallow = {"L": [shallow]}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("GetItem", {"TableName": name, "Key": [key]}),
        ("GetItem", {"TableName": name, "Key": {"pk": "a"}}),
        ("GetItem", {"TableName": name, "Key": key, "ProjectionExpression": ["a"]}),
        ("GetItem", {"TableName": None, "Key": key}),
        ("DescribeTable", {"TableName": 12345}),
        ("GetItem", {"TableName": "", "Key": key}),
        ("GetItem", {"TableName": "no/slashes", "Key": key}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": {"X": "1"}}}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": {"L": {}}}}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": {"M": []}}}),
        ("PutItem", {"TableName": name, "Item": "not a map"}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": None}}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": {"NS": ["1", 2]}}}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": {"N": 5}}}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": {"B": "not base64!"}}}),
        ("PutItem", {"TableName": name, "Item": {**key, "v": deep}}),
        ("PutItem", {"TableName": name, "Item": key, "ReturnValues": 5}),
        ("PutItem", {"TableName": name, "Item": key, "ConditionExpression": {"a": 1}}),
        (
            "PutItem",
            {
                "TableName": name,
                "Item": key,
                "ConditionExpression": "NOT " * 400 + "attribute_exists(pk)",
            },
        ),
        (
            "PutItem",
            {
                "TableName": name,
                "Item": key,
                "ConditionExpression": "a = :v",
                "ExpressionAttributeValues": {":v": "plain"},
            },
        ),
        (
            "UpdateItem",
            {
                "TableName": name,
                "Key": key,
                "UpdateExpression": "SET #a = :v",
                "ExpressionAttributeNames": {"#a": 5},
                "ExpressionAttributeValues": {":v": {"S": "x"}},
            },
        ),
        ("UpdateItem", {"TableName": name, "Key": key, "AttributeUpdates": {"a": {}}}),
        ("UpdateItem", {"TableName": name, "Key": key, "AttributeUpdates": {"a": "x"}}),
        ("DeleteItem", {"TableName": name, "Key": key, "Expected": {"a": {}}}),
        ("DeleteItem", {"TableName": name, "Key": key, "Expected": []}),
        ("BatchWriteItem", {"RequestItems": {name: "not a list"}}),
        ("BatchWriteItem", {"RequestItems": {name: [{"PutRequest": "x"}]}}),
        ("BatchWriteItem", {"RequestItems": {name: [{"Frobnicate": {}}]}}),
        ("BatchWriteItem", {"RequestItems": {name: [{"PutRequest": {"Item": "x"}}]}}),
        (
            "BatchWriteItem",
            {
                "RequestItems": {
                    name: [{"PutRequest": {"Item": key}, "DeleteRequest": {"Key": key}}]
                }
            },
        ),
        ("BatchWriteItem", {"RequestItems": []}),
        ("BatchWriteItem", {"RequestItems": {}}),
        ("BatchGetItem", {"RequestItems": {name: {"Keys": "x"}}}),
        ("BatchGetItem", {"RequestItems": {name: "x"}}),
        ("BatchGetItem", {"RequestItems": {name: {"Keys": []}}}),
        ("BatchGetItem", {"RequestItems": {}}),
        ("BatchGetItem", {"RequestItems": {name: {"Keys": [key], "ConsistentRead": "yes"}}}),
        ("Query", {"TableName": name}),
        ("Query", {"TableName": name, "KeyConditionExpression": "pk = :p"}),
        (
            "Query",
            {
                "TableName": name,
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"S": "a"}},
                "ExclusiveStartKey": "x",
            },
        ),
        (
            "Query",
            {
                "TableName": name,
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"L": []}},
            },
        ),
        (
            "Query",
            {
                "TableName": name,
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"S": "a"}},
                "Limit": 1.5,
            },
        ),
        ("Scan", {"TableName": name, "Segment": 2, "TotalSegments": 2}),
        ("Scan", {"TableName": name, "Select": "EVERYTHING"}),
        ("Scan", {"TableName": name, "ScanIndexForward": "no", "Limit": -1}),
        ("CreateTable", {"TableName": unique("shape"), "KeySchema": "pk"}),
        (
            "CreateTable",
            {
                "TableName": unique("shape"),
                "KeySchema": [1, 2],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            },
        ),
        (
            "CreateTable",
            {
                "TableName": unique("shape"),
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": ["S"]}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        ),
        (
            "CreateTable",
            {
                "TableName": unique("shape"),
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "ProvisionedThroughput": {"ReadCapacityUnits": "5", "WriteCapacityUnits": 5},
            },
        ),
        ("ListTables", {"Limit": 0}),
        ("ListTables", {"ExclusiveStartTableName": 5}),
        ("DescribeTable", {}),
    ]
    for operation, request in cases:
        body = json.dumps(request).encode()
        status, reply, _ = _send(local_cluster, body, f"DynamoDB_20120810.{operation}")
        assert status == 400, (operation, request, reply)
        assert _type(reply) in ("ValidationException", "SerializationException"), (
            operation,
            request,
            reply,
        )
    # Parentheses 1000 deep are redundant, a ValidationException (not a stack overflow).
    deep_parens = "(" * 1000 + "attribute_exists(pk)" + ")" * 1000
    request = {"TableName": name, "Item": key, "ConditionExpression": deep_parens}
    status, reply, _ = _send(
        local_cluster, json.dumps(request).encode(), "DynamoDB_20120810.PutItem"
    )
    assert (status, _type(reply)) == (400, "ValidationException")
    assert "redundant parentheses" in reply["message"]
    status, reply, _ = _send(
        local_cluster,
        json.dumps({"TableName": name, "Key": key, "ConsistentRead": True}).encode(),
        "DynamoDB_20120810.GetItem",
    )
    assert (status, reply) == (200, {})  # nothing above wrote anything
    status, reply, _ = _send(
        local_cluster,
        json.dumps({"TableName": name, "Item": {**key, "v": shallow}}).encode(),
        "DynamoDB_20120810.PutItem",
    )
    assert (status, reply) == (200, {})  # 20 levels of nesting is fine


def test_oversized_request_is_rejected_cleanly(local_cluster: LocalCluster) -> None:
    """A body over DynamoDB's 16 MB request limit is a 4xx error, not a 500 or a reset."""
    item = {"pk": {"S": "a"}, "blob": {"S": "x" * (17 * 1024 * 1024)}}
    body = json.dumps({"TableName": "whatever", "Item": item}).encode()
    status, reply, _ = _send(local_cluster, body, "DynamoDB_20120810.PutItem")
    assert 400 <= status < 500, reply
    assert _type(reply) in ("ValidationException", "RequestEntityTooLarge")
    # The router is still fine afterwards.
    assert _send(local_cluster, b"{}")[0] == 200
