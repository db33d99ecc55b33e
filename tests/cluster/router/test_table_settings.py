"""Table settings and the rest of the API surface, through boto3 against the session cluster:
UpdateTable, tags, Time to Live (with background expiry), DescribeEndpoints, DescribeLimits,
parallel Scan, ReturnConsumedCapacity, DescribeTable's counts and ids, and DynamoDB's exact
validation of expressions on real requests."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.cluster.router.test_api_boto3 import (
    WAIT,
    Client,
    N,
    NewTable,
    S,
    expect_error,
    key_schema,
    lagging,
    unique,
)

pytestmark = pytest.mark.slow


def _message(err: Any) -> str:
    return str(err.response["Error"]["Message"])


def test_update_table_billing_and_throughput(ddb: Client, new_table: NewTable) -> None:
    name = new_table("upd", ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    table = ddb.update_table(
        TableName=name, ProvisionedThroughput={"ReadCapacityUnits": 7, "WriteCapacityUnits": 9}
    )["TableDescription"]
    assert table["ProvisionedThroughput"]["ReadCapacityUnits"] == 7
    assert table["ProvisionedThroughput"]["WriteCapacityUnits"] == 9
    same = expect_error(
        "ValidationException",
        ddb.update_table,
        TableName=name,
        ProvisionedThroughput={"ReadCapacityUnits": 7, "WriteCapacityUnits": 9},
    )
    assert _message(same).startswith("The provisioned throughput for the table will not change.")
    table = ddb.update_table(TableName=name, BillingMode="PAY_PER_REQUEST")["TableDescription"]
    summary = table["BillingModeSummary"]
    assert summary["BillingMode"] == "PAY_PER_REQUEST"
    assert "LastUpdateToPayPerRequestDateTime" in summary
    described = ddb.describe_table(TableName=name)["Table"]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert described["ProvisionedThroughput"]["ReadCapacityUnits"] == 0
    err = expect_error("ValidationException", ddb.update_table, TableName=name)
    assert _message(err).startswith("At least one of ProvisionedThroughput, BillingMode")
    # Back to PROVISIONED: the summary keeps when the table last became on-demand.
    table = ddb.update_table(
        TableName=name,
        BillingMode="PROVISIONED",
        ProvisionedThroughput={"ReadCapacityUnits": 2, "WriteCapacityUnits": 2},
    )["TableDescription"]
    assert table["BillingModeSummary"] == {
        "BillingMode": "PROVISIONED",
        "LastUpdateToPayPerRequestDateTime": summary["LastUpdateToPayPerRequestDateTime"],
    }
    ddb.put_item(TableName=name, Item={"pk": S("still works")})
    expect_error(
        "ResourceNotFoundException",
        ddb.update_table,
        TableName=unique("gone"),
        BillingMode="PAY_PER_REQUEST",
    )


def test_describe_table_ids_counts_and_sse(ddb: Client) -> None:
    name = unique("ids")
    created = ddb.create_table(
        TableName=name,
        **key_schema(("pk", "S")),
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": False},
        Tags=[{"Key": "team", "Value": "sre"}],
    )["TableDescription"]
    try:
        assert created["TableStatus"] == "CREATING"  # DynamoDB's reply to CreateTable
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig=WAIT)
        assert uuid.UUID(created["TableId"]).version == 4
        for i in range(7):
            ddb.put_item(TableName=name, Item={"pk": S(f"k{i}"), "pad": S("x" * 100)})
        # ItemCount is counted from eventually consistent reads: a replica may still be a
        # write behind on a busy machine, so wait for the count (a bound, not a pace).
        deadline = time.monotonic() + 30
        table = ddb.describe_table(TableName=name)["Table"]
        while table["ItemCount"] != 7 and time.monotonic() < deadline:
            time.sleep(0.5)
            table = ddb.describe_table(TableName=name)["Table"]
        assert table["TableId"] == created["TableId"]
        assert table["BillingModeSummary"] == {  # on-demand since it was created
            "BillingMode": "PAY_PER_REQUEST",
            "LastUpdateToPayPerRequestDateTime": table["CreationDateTime"],
        }
        assert table["ItemCount"] == 7
        assert 7 * 100 < table["TableSizeBytes"] < 7 * 200
        assert "SSEDescription" not in table
        tags = ddb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
        assert tags == [{"Key": "team", "Value": "sre"}]
    finally:
        ddb.delete_table(TableName=name)


def test_tags(ddb: Client, new_table: NewTable) -> None:
    name = new_table("tags")
    arn = ddb.describe_table(TableName=name)["Table"]["TableArn"]
    assert ddb.list_tags_of_resource(ResourceArn=arn)["Tags"] == []
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "a", "Value": "3"}])
    assert ddb.list_tags_of_resource(ResourceArn=arn)["Tags"] == [
        {"Key": "a", "Value": "3"},
        {"Key": "b", "Value": "2"},
    ]
    ddb.untag_resource(ResourceArn=arn, TagKeys=["a", "nope"])
    assert ddb.list_tags_of_resource(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    expect_error("ValidationException", ddb.list_tags_of_resource, ResourceArn="arn:nonsense")
    missing = arn.rsplit("/", 1)[0] + "/" + unique("missing")
    expect_error("ResourceNotFoundException", ddb.list_tags_of_resource, ResourceArn=missing)


def test_time_to_live_expires_items_in_the_background(ddb: Client, new_table: NewTable) -> None:
    name = new_table("ttl")
    assert ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "DISABLED"
    }
    now = int(time.time())
    ddb.put_item(TableName=name, Item={"pk": S("old"), "exp": N(now - 60)})
    ddb.put_item(TableName=name, Item={"pk": S("future"), "exp": N(now + 3600)})
    ddb.put_item(TableName=name, Item={"pk": S("ancient"), "exp": N(now - 6 * 365 * 86400)})
    ddb.put_item(TableName=name, Item={"pk": S("text"), "exp": S(str(now - 60))})
    spec = {"Enabled": True, "AttributeName": "exp"}
    assert (
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=spec)[
            "TimeToLiveSpecification"
        ]
        == spec
    )
    assert ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "exp",
    }
    err = expect_error(
        "ValidationException",
        ddb.update_time_to_live,
        TableName=name,
        TimeToLiveSpecification=spec,
    )
    assert _message(err) == "TimeToLive is already enabled"
    deadline = time.monotonic() + 180  # a bound for a sweeper that never runs, not its pace
    while time.monotonic() < deadline:
        got = ddb.get_item(TableName=name, Key={"pk": S("old")}, ConsistentRead=True)
        if "Item" not in got:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the expired item was not deleted within 180 s")
    left = ddb.scan(TableName=name, ConsistentRead=True)["Items"]
    assert sorted(i["pk"]["S"] for i in left) == ["ancient", "future", "text"]
    ddb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": False, "AttributeName": "exp"}
    )
    assert ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "DISABLED"
    }


def test_endpoints_and_limits(ddb: Client) -> None:
    endpoints = ddb.describe_endpoints()["Endpoints"]
    assert endpoints and endpoints[0]["CachePeriodInMinutes"] == 1440
    limits = ddb.describe_limits()
    assert limits["TableMaxReadCapacityUnits"] == 40000


def test_parallel_scan_segments_partition_the_table(ddb: Client, new_table: NewTable) -> None:
    name = new_table("seg", ("pk", "S"), ("sk", "N"))
    for i in range(40):
        ddb.put_item(TableName=name, Item={"pk": S(f"k{i % 13}"), "sk": N(i)})
    seen: list[tuple[str, str]] = []
    for segment in range(3):
        request: dict[str, Any] = {
            "TableName": name,
            "Segment": segment,
            "TotalSegments": 3,
            "Limit": 7,
            "ConsistentRead": True,
        }
        while True:
            page = ddb.scan(**request)
            seen += [(i["pk"]["S"], i["sk"]["N"]) for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    assert len(seen) == 40 and len(set(seen)) == 40
    for request, message in [
        (
            {"Segment": 3, "TotalSegments": 3},
            "The Segment parameter is zero-based and must be "
            "less than parameter TotalSegments: Segment: 3 is not less than TotalSegments: 3",
        ),
        (
            {"Segment": 0},
            "The TotalSegments parameter is required but was not present in the "
            "request when Segment parameter is present",
        ),
    ]:
        err = expect_error("ValidationException", ddb.scan, TableName=name, **request)
        assert _message(err) == message
    # No table here has secondary indexes: DynamoDB's answer for an index the table lacks.
    for call, extra in [
        (ddb.scan, {}),
        (
            ddb.query,
            {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": S("k1")}},
        ),
    ]:
        err = expect_error("ValidationException", call, TableName=name, IndexName="byN", **extra)
        assert _message(err) == "The table does not have the specified index: byN"


def test_return_consumed_capacity(ddb: Client, new_table: NewTable) -> None:
    name = new_table("rcc", ("pk", "S"), ("sk", "N"))
    big = {"pk": S("a"), "sk": N(1), "blob": S("x" * 5000)}  # 2 write KB-units... 5 KB: 5
    put = ddb.put_item(TableName=name, Item=big, ReturnConsumedCapacity="TOTAL")
    assert put["ConsumedCapacity"] == {"TableName": name, "CapacityUnits": 5.0}
    key = {"pk": S("a"), "sk": N(1)}
    strong = ddb.get_item(
        TableName=name, Key=key, ConsistentRead=True, ReturnConsumedCapacity="TOTAL"
    )
    assert strong["ConsumedCapacity"]["CapacityUnits"] == 2.0  # 5 KB: two 4 KB read units
    # An eventual read may reach a replica that has not applied the put yet (then it reads
    # nothing, 0.5 units): the read that returns the item is the one whose capacity counts.
    started = time.monotonic()
    while True:
        eventual = ddb.get_item(TableName=name, Key=key, ReturnConsumedCapacity="INDEXES")
        if "Item" in eventual or not lagging(started):
            break
    assert eventual.get("Item") == big
    assert eventual["ConsumedCapacity"] == {
        "TableName": name,
        "CapacityUnits": 1.0,
        "Table": {"CapacityUnits": 1.0},
    }
    missing = ddb.get_item(
        TableName=name, Key={"pk": S("b"), "sk": N(1)}, ReturnConsumedCapacity="TOTAL"
    )
    assert missing["ConsumedCapacity"]["CapacityUnits"] == 0.5
    query = ddb.query(
        TableName=name,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": S("a")},
        ConsistentRead=True,
        ReturnConsumedCapacity="TOTAL",
    )
    assert query["ConsumedCapacity"]["CapacityUnits"] == 2.0
    batch = ddb.batch_get_item(
        RequestItems={name: {"Keys": [key, {"pk": S("b"), "sk": N(2)}]}},
        ReturnConsumedCapacity="TOTAL",
    )
    assert batch["ConsumedCapacity"] == [{"TableName": name, "CapacityUnits": 1.5}]
    assert "ConsumedCapacity" not in ddb.get_item(TableName=name, Key=key)
    written = ddb.batch_write_item(
        RequestItems={name: [{"PutRequest": {"Item": {"pk": S("c"), "sk": N(1)}}}]},
        ReturnConsumedCapacity="TOTAL",
        ReturnItemCollectionMetrics="SIZE",
    )
    assert written["ConsumedCapacity"] == [{"TableName": name, "CapacityUnits": 1.0}]


def test_write_capacity_charges_the_larger_item(ddb: Client, new_table: NewTable) -> None:
    """DynamoDB charges a write by the larger of the item before and after it (PutItem,
    UpdateItem), a delete by the deleted item, and each write of a BatchWriteItem as its own
    PutItem or DeleteItem, whatever ReturnValues asks for."""
    name = new_table("wcu", ("pk", "S"))
    big = {"pk": S("a"), "blob": S("x" * 3000)}  # 3 KB: three write units
    small = {"pk": S("a")}

    def units(out: dict[str, Any]) -> float:
        consumed = out["ConsumedCapacity"]
        entry = consumed[0] if isinstance(consumed, list) else consumed
        assert entry["TableName"] == name
        return float(entry["CapacityUnits"])

    total = {"ReturnConsumedCapacity": "TOTAL"}
    ddb.put_item(TableName=name, Item=big)
    assert units(ddb.put_item(TableName=name, Item=small, **total)) == 3.0  # old was 3 KB
    assert units(ddb.put_item(TableName=name, Item=small, **total)) == 1.0
    ddb.put_item(TableName=name, Item=big)
    bump = {"UpdateExpression": "SET n = :one", "ExpressionAttributeValues": {":one": N(1)}}
    assert units(ddb.update_item(TableName=name, Key=small, **bump, **total)) == 3.0
    assert units(ddb.delete_item(TableName=name, Key=small, **total)) == 3.0
    assert units(ddb.delete_item(TableName=name, Key=small, **total)) == 1.0  # nothing there
    ddb.put_item(TableName=name, Item=big)
    ddb.put_item(TableName=name, Item={"pk": S("b"), "blob": S("y" * 2000)})
    batch = ddb.batch_write_item(
        RequestItems={
            name: [
                {"PutRequest": {"Item": small}},  # over 3 KB: 3
                {"DeleteRequest": {"Key": {"pk": S("b")}}},  # 2 KB deleted: 2
                {"PutRequest": {"Item": {"pk": S("c")}}},  # new and small: 1
            ]
        },
        **total,
    )
    assert batch["UnprocessedItems"] == {}
    assert units(batch) == 6.0


def test_exact_validation_on_requests(ddb: Client, new_table: NewTable) -> None:
    name = new_table("exact", ("pk", "S"), ("sk", "N"))
    key = {"pk": S("a"), "sk": N(1)}
    V = {":n": N(1)}
    # A REMOVE-only update of a missing item creates nothing.
    ddb.update_item(TableName=name, Key=key, UpdateExpression="REMOVE gone")
    assert "Item" not in ddb.get_item(TableName=name, Key=key, ConsistentRead=True)
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (
            ddb.query,
            {
                "KeyConditionExpression": "pk = :p",
                "FilterExpression": "sk > :n",
                "ExpressionAttributeValues": {":p": S("a"), ":n": N(1)},
            },
            "Filter Expression can only contain non-primary key attributes: Primary key "
            "attribute: sk",
        ),
        (
            ddb.put_item,
            {
                "Item": key,
                "ConditionExpression": "n BETWEEN :hi AND :lo",
                "ExpressionAttributeValues": {":hi": N(5), ":lo": N(1)},
            },
            "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be "
            "greater than or equal to lower bound; lower bound operand: AttributeValue: {N:5}, "
            "upper bound operand: AttributeValue: {N:1}",
        ),
        (
            ddb.scan,
            {"FilterExpression": "begins_with(s, :n)", "ExpressionAttributeValues": {":n": N(1)}},
            "Invalid FilterExpression: Incorrect operand type for operator or function; "
            "operator or function: begins_with, operand type: N",
        ),
        (
            ddb.scan,
            {"FilterExpression": "((s = :n))", "ExpressionAttributeValues": {":n": N(1)}},
            "Invalid FilterExpression: The expression has redundant parentheses;",
        ),
        (  # the syntax error is reported before the undefined value
            ddb.scan,
            {"FilterExpression": "s = = :undefined"},
            'Invalid FilterExpression: Syntax error; token: "=", near: "= = :undefined"',
        ),
        (
            ddb.get_item,
            {"Key": key, "ProjectionExpression": "a, a.b"},
            "Invalid ProjectionExpression: Two document paths overlap with each other; must "
            "remove or rewrite one of these paths; path one: [a], path two: [a, b]",
        ),
        (
            ddb.update_item,
            {"Key": key, "UpdateExpression": "SET status = :n", "ExpressionAttributeValues": V},
            "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: "
            "status",
        ),
        (
            ddb.scan,
            {"FilterExpression": "pk = :n AND __kind = :n", "ExpressionAttributeValues": V},
            'Invalid FilterExpression: Syntax error; token: "_", near: "AND __"',
        ),
        (
            ddb.update_item,
            {
                "Key": key,
                "UpdateExpression": "ADD m :m",
                "ExpressionAttributeValues": {":m": {"M": {}}},
            },
            "Invalid UpdateExpression: Incorrect operand type for operator or function; "
            "operator: ADD, operand type: MAP, typeSet: ALLOWED_FOR_ADD_OPERAND",
        ),
        (
            ddb.scan,
            {"FilterExpression": "a < :l", "ExpressionAttributeValues": {":l": {"L": []}}},
            "Invalid FilterExpression: Incorrect operand type for operator or function; "
            "operator: <, operand type: LIST",
        ),
        (
            ddb.scan,
            {"FilterExpression": "a > :m", "ExpressionAttributeValues": {":m": {"M": {}}}},
            "Invalid FilterExpression: Incorrect operand type for operator or function; "
            "operator: >, operand type: MAP",
        ),
        (
            ddb.get_item,
            {"Key": key, "ProjectionExpression": "a[0], a.b"},
            "Invalid ProjectionExpression: Two document paths conflict with each other; must "
            "remove or rewrite one of these paths; path one: [a, [0]], path two: [a, b]",
        ),
        (
            ddb.get_item,
            {"Key": key, "ProjectionExpression": "a" + ".b" * 32},
            "Invalid ProjectionExpression: The document path has too many nesting levels; "
            "nesting levels: 33",
        ),
    ]
    for call, request, message in cases:
        err = expect_error("ValidationException", call, TableName=name, **request)
        assert _message(err) == message, request
    # Reserved words are fine through placeholders, size() takes a name placeholder.
    ddb.put_item(
        TableName=name,
        Item={**key, "status": S("ok")},
        ConditionExpression="attribute_not_exists(#s) OR size(#s) < :n",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=V,
    )


def test_binary_key_sizes_and_list_appends(ddb: Client, new_table: NewTable) -> None:
    name = new_table("bin", ("pk", "B"), ("sk", "B"))
    # Key limits count the raw bytes, not their base64 text (1024 bytes is 1368 characters).
    ddb.put_item(TableName=name, Item={"pk": {"B": b"h" * 2048}, "sk": {"B": b"\xff" * 1024}})
    for item, message in [
        (
            {"pk": {"B": b"h"}, "sk": {"B": b"r" * 1025}},
            "One or more parameter values were invalid: Size of range key attribute sk exceeds "
            "the limit of 1024 bytes",
        ),
        (
            {"pk": {"B": b"h" * 2049}, "sk": {"B": b"r"}},
            "One or more parameter values were invalid: Size of hash key attribute pk exceeds "
            "the limit of 2048 bytes",
        ),
    ]:
        err = expect_error("ValidationException", ddb.put_item, TableName=name, Item=item)
        assert _message(err) == message
    # Indexes past the end of a list append, in index order (not in the order written).
    key = {"pk": {"B": b"h"}, "sk": {"B": b"l"}}
    ddb.put_item(TableName=name, Item={**key, "l": {"L": [N(0)]}})
    new = ddb.update_item(
        TableName=name,
        Key=key,
        UpdateExpression="SET l[9] = :nine, l[5] = :five, l[7] = :seven",
        ExpressionAttributeValues={":nine": N(9), ":five": N(5), ":seven": N(7)},
        ReturnValues="ALL_NEW",
    )["Attributes"]
    assert new["l"] == {"L": [N(0), N(5), N(7), N(9)]}
