"""Legacy (pre-expression) parameters through boto3, against the session cluster.

Expected, AttributeUpdates, AttributesToGet, KeyConditions, QueryFilter, ScanFilter and
ConditionalOperator behave as DynamoDB documents them (they are rewritten into expressions), and
mixing them with expression parameters is refused with DynamoDB's message.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.router.test_api_boto3 import Client, N, NewTable, S, expect_error

pytestmark = pytest.mark.slow


def test_expected_on_put_update_delete(ddb: Client, new_table: NewTable) -> None:
    name = new_table("lexp")
    key = {"pk": S("a")}
    absent = {"pk": {"Exists": False}}
    ddb.put_item(TableName=name, Item={**key, "v": N(1)}, Expected=absent)
    expect_error(
        "ConditionalCheckFailedException",
        ddb.put_item,
        TableName=name,
        Item={**key, "v": N(9)},
        Expected=absent,
    )
    # Value alone means equality; Exists True with a Value too.
    ddb.put_item(TableName=name, Item={**key, "v": N(2)}, Expected={"v": {"Value": N(1)}})
    ddb.put_item(
        TableName=name, Item={**key, "v": N(3)}, Expected={"v": {"Exists": True, "Value": N(2)}}
    )
    # ComparisonOperator with AttributeValueList, combined with OR.
    either = {
        "v": {"ComparisonOperator": "GT", "AttributeValueList": [N(100)]},
        "w": {"ComparisonOperator": "NULL"},
    }
    ddb.update_item(
        TableName=name,
        Key=key,
        AttributeUpdates={"w": {"Value": S("x")}},
        Expected=either,
        ConditionalOperator="OR",
    )
    expect_error(  # now neither holds
        "ConditionalCheckFailedException",
        ddb.delete_item,
        TableName=name,
        Key=key,
        Expected=either,
        ConditionalOperator="OR",
    )
    expect_error(  # AND (the default): v > 100 fails
        "ConditionalCheckFailedException",
        ddb.delete_item,
        TableName=name,
        Key=key,
        Expected={
            "v": {"ComparisonOperator": "GT", "AttributeValueList": [N(100)]},
            "w": {"ComparisonOperator": "NOT_NULL"},
        },
    )
    ddb.delete_item(
        TableName=name,
        Key=key,
        Expected={
            "v": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [N(1), N(3)]},
            "w": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [S("x")]},
        },
    )
    assert "Item" not in ddb.get_item(TableName=name, Key=key, ConsistentRead=True)


def test_attribute_updates_actions(ddb: Client, new_table: NewTable) -> None:
    name = new_table("lupd")
    key = {"pk": S("a")}
    got = ddb.update_item(
        TableName=name,
        Key=key,
        AttributeUpdates={
            "n": {"Action": "ADD", "Value": N(5)},
            "tags": {"Action": "ADD", "Value": {"SS": ["x", "y"]}},
            "log": {"Action": "ADD", "Value": {"L": [S("first")]}},
            "s": {"Value": S("put by default")},
        },
        ReturnValues="ALL_NEW",
    )["Attributes"]
    assert got == {
        **key,
        "n": N(5),
        "tags": {"SS": ["x", "y"]},
        "log": {"L": [S("first")]},
        "s": S("put by default"),
    }
    got = ddb.update_item(
        TableName=name,
        Key=key,
        AttributeUpdates={
            "n": {"Action": "ADD", "Value": N(-2)},
            "tags": {"Action": "DELETE", "Value": {"SS": ["x"]}},
            "log": {"Action": "ADD", "Value": {"L": [S("second")]}},
            "s": {"Action": "DELETE"},
        },
        ReturnValues="UPDATED_NEW",
    )["Attributes"]
    assert got == {"n": N(3), "tags": {"SS": ["y"]}, "log": {"L": [S("first"), S("second")]}}
    item = ddb.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"]
    assert "s" not in item
    for update, message in [
        (
            {"n": {"Action": "PUT"}},
            "One or more parameter values were invalid: Only DELETE action is allowed when no "
            "attribute value is specified",
        ),
        (
            {"s": {"Action": "ADD", "Value": S("x")}},
            "One or more parameter values were invalid: ADD action is not supported for the type S",
        ),
        (
            {"pk": {"Value": S("b")}},
            "One or more parameter values were invalid: Cannot update attribute pk. This "
            "attribute is part of the key",
        ),
    ]:
        err = expect_error(
            "ValidationException", ddb.update_item, TableName=name, Key=key, AttributeUpdates=update
        )
        assert err.response["Error"]["Message"] == message


def test_attributes_to_get_in_get_batch_get_and_scan(ddb: Client, new_table: NewTable) -> None:
    name = new_table("lget")
    for k in ("a", "b"):
        ddb.put_item(TableName=name, Item={"pk": S(k), "x": N(1), "y": N(2), "z": N(3)})
    got = ddb.get_item(
        TableName=name, Key={"pk": S("a")}, AttributesToGet=["x", "z"], ConsistentRead=True
    )
    assert got["Item"] == {"x": N(1), "z": N(3)}
    batch = ddb.batch_get_item(
        RequestItems={
            name: {
                "Keys": [{"pk": S("a")}, {"pk": S("b")}],
                "AttributesToGet": ["pk", "y"],
                "ConsistentRead": True,
            }
        }
    )
    assert sorted(batch["Responses"][name], key=lambda i: i["pk"]["S"]) == [
        {"pk": S("a"), "y": N(2)},
        {"pk": S("b"), "y": N(2)},
    ]
    items = ddb.scan(TableName=name, AttributesToGet=["y"], ConsistentRead=True)["Items"]
    assert items == [{"y": N(2)}, {"y": N(2)}]
    err = expect_error(
        "ValidationException",
        ddb.get_item,
        TableName=name,
        Key={"pk": S("a")},
        AttributesToGet=["x"],
        ProjectionExpression="x",
    )
    assert err.response["Error"]["Message"] == (
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {AttributesToGet} Expression parameters: "
        "{ProjectionExpression}"
    )
    err = expect_error(
        "ValidationException",
        ddb.scan,
        TableName=name,
        AttributesToGet=["x"],
        Select="COUNT",
    )
    assert err.response["Error"]["Message"] == (
        "Cannot specify the AttributesToGet when choosing to get only the COUNT"
    )


@pytest.fixture
def events(ddb: Client, new_table: NewTable) -> str:
    name = new_table("lq", ("pk", "S"), ("ts", "N"))
    for ts in range(10):
        item = {"pk": S("u1"), "ts": N(ts), "kind": S("even" if ts % 2 == 0 else "odd")}
        if ts % 3 == 0:
            item["tags"] = {"SS": ["three", f"t{ts}"]}
        ddb.put_item(TableName=name, Item=item)
    ddb.put_item(TableName=name, Item={"pk": S("u2"), "ts": N(1), "kind": S("odd")})
    return name


def _ts(items: list[dict[str, Any]]) -> list[int]:
    return [int(i["ts"]["N"]) for i in items]


def test_key_conditions_query_filter_and_scan_filter(ddb: Client, events: str) -> None:
    def query(**request: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = ddb.query(TableName=events, ConsistentRead=True, **request)[
            "Items"
        ]
        return items

    user = {"ComparisonOperator": "EQ", "AttributeValueList": [S("u1")]}
    between = {"ComparisonOperator": "BETWEEN", "AttributeValueList": [N(2), N(7)]}
    assert _ts(query(KeyConditions={"pk": user, "ts": between})) == [2, 3, 4, 5, 6, 7]
    got = query(
        KeyConditions={"pk": user, "ts": between},
        QueryFilter={"kind": {"ComparisonOperator": "EQ", "AttributeValueList": [S("odd")]}},
        ScanIndexForward=False,
        AttributesToGet=["ts"],
    )
    assert got == [{"ts": N(7)}, {"ts": N(5)}, {"ts": N(3)}]
    # KeyConditions with a FilterExpression is accepted, as DynamoDB accepts it.
    got = query(
        KeyConditions={
            "pk": user,
            "ts": {"ComparisonOperator": "LT", "AttributeValueList": [N(4)]},
        },
        FilterExpression="kind = :k",
        ExpressionAttributeValues={":k": S("even")},
    )
    assert _ts(got) == [0, 2]
    scan = ddb.scan(
        TableName=events,
        ConsistentRead=True,
        ScanFilter={
            "tags": {"ComparisonOperator": "CONTAINS", "AttributeValueList": [S("three")]},
            "ts": {"ComparisonOperator": "IN", "AttributeValueList": [N(1), N(8)]},
        },
        ConditionalOperator="OR",
    )
    assert sorted(_ts(scan["Items"])) == [0, 1, 1, 3, 6, 8, 9]
    assert scan["ScannedCount"] == 11
    not_contains = ddb.scan(
        TableName=events,
        ConsistentRead=True,
        ScanFilter={
            "tags": {"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [S("t3")]},
            "kind": {"ComparisonOperator": "NE", "AttributeValueList": [S("odd")]},
        },
    )
    # NOT_CONTAINS is false where tags is missing (as in DynamoDB): even items with tags only.
    assert sorted(_ts(not_contains["Items"])) == [0, 6]


def test_legacy_validation_messages(ddb: Client, events: str) -> None:
    user = {"ComparisonOperator": "EQ", "AttributeValueList": [S("u1")]}
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (
            ddb.query,
            {
                "KeyConditions": {"pk": user},
                "QueryFilter": {},
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": S("u1")},
            },
            "Can not use both expression and non-expression parameters in the same request: "
            "Non-expression parameters: {QueryFilter, KeyConditions} Expression parameters: "
            "{KeyConditionExpression}",
        ),
        (
            ddb.query,
            {"KeyConditions": {"pk": {"ComparisonOperator": "NE", "AttributeValueList": [S("a")]}}},
            "Attempted conditional constraint is not an indexable operation",
        ),
        (
            ddb.query,
            {
                "KeyConditions": {
                    "pk": user,
                    "ts": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [N(5), N(1)]},
                }
            },
            "The BETWEEN condition was provided a range where the lower bound is greater than "
            "the upper bound",
        ),
        (
            ddb.scan,
            {"ScanFilter": {"ts": {"ComparisonOperator": "GT", "AttributeValueList": []}}},
            "One or more parameter values were invalid: Invalid number of argument(s) for the GT "
            "ComparisonOperator",
        ),
        (
            ddb.scan,
            {
                "ScanFilter": {
                    "tags": {"ComparisonOperator": "GT", "AttributeValueList": [{"SS": ["a"]}]}
                }
            },
            "One or more parameter values were invalid: ComparisonOperator GT is not valid for SS "
            "AttributeValue type",
        ),
        (
            ddb.scan,
            {
                "ScanFilter": {
                    "ts": {"ComparisonOperator": "IN", "AttributeValueList": [N(1), S("x")]}
                }
            },
            "One or more parameter values were invalid: AttributeValues inside "
            "AttributeValueList must be of same type",
        ),
        (
            ddb.scan,
            {
                "ScanFilter": {"ts": {"ComparisonOperator": "NULL"}},
                "ExpressionAttributeNames": {"#a": "a"},
            },
            "ExpressionAttributeNames can only be specified when using expressions",
        ),
        (
            ddb.delete_item,
            {"Key": {"pk": S("u1"), "ts": N(1)}, "Expected": {"kind": {}}},
            "One or more parameter values were invalid: Value must be provided when Exists is "
            "null for Attribute: kind",
        ),
        (
            ddb.delete_item,
            {
                "Key": {"pk": S("u1"), "ts": N(1)},
                "Expected": {"kind": {"Exists": False, "Value": S("x")}},
            },
            "One or more parameter values were invalid: Value cannot be used when Exists is "
            "false for Attribute: kind",
        ),
        (
            ddb.delete_item,
            {
                "Key": {"pk": S("u1"), "ts": N(1)},
                "Expected": {"kind": {"Exists": True}},
                "ConditionExpression": "attribute_exists(kind)",
            },
            "Can not use both expression and non-expression parameters in the same request: "
            "Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
        ),
        (
            ddb.update_item,
            {
                "Key": {"pk": S("u1"), "ts": N(1)},
                "AttributeUpdates": {"a": {"Value": N(1)}},
                "UpdateExpression": "SET b = :b",
                "ExpressionAttributeValues": {":b": N(1)},
            },
            "Can not use both expression and non-expression parameters in the same request: "
            "Non-expression parameters: {AttributeUpdates} Expression parameters: "
            "{UpdateExpression}",
        ),
    ]
    for call, request, message in cases:
        err = expect_error("ValidationException", call, TableName=events, **request)
        assert err.response["Error"]["Message"] == message, request


def test_not_contains_is_false_on_a_missing_attribute(ddb: Client, events: str) -> None:
    """CONTAINS and NOT_CONTAINS are both false where the attribute is missing (NE is true)."""
    key = {"pk": S("u1"), "ts": N(1)}  # an item without tags
    expect_error(
        "ConditionalCheckFailedException",
        ddb.update_item,
        TableName=events,
        Key=key,
        AttributeUpdates={"z": {"Value": N(1)}},
        Expected={"tags": {"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [S("x")]}},
    )
    ddb.update_item(
        TableName=events,
        Key=key,
        AttributeUpdates={"z": {"Value": N(1)}},
        Expected={"tags": {"ComparisonOperator": "NE", "AttributeValueList": [S("x")]}},
    )
    scan = ddb.scan(
        TableName=events,
        ConsistentRead=True,
        ScanFilter={
            "tags": {"ComparisonOperator": "NOT_CONTAINS", "AttributeValueList": [S("t3")]}
        },
    )
    assert sorted(_ts(scan["Items"])) == [0, 6, 9]  # the items with tags, but not t3


def test_conditional_operator_needs_expected(ddb: Client, new_table: NewTable) -> None:
    name = new_table("lcop")
    for request in ({"Expected": {}}, {}):
        err = expect_error(
            "ValidationException",
            ddb.put_item,
            TableName=name,
            Item={"pk": S("a")},
            ConditionalOperator="OR",
            **request,
        )
        assert err.response["Error"]["Message"] == (
            "ConditionalOperator cannot be used without Expected or with an empty Expected"
        )
    ddb.put_item(TableName=name, Item={"pk": S("a")}, Expected={})  # empty: no condition
    assert "Item" in ddb.get_item(TableName=name, Key={"pk": S("a")}, ConsistentRead=True)


def test_attribute_updates_type_mismatch_and_missing_items(
    ddb: Client, new_table: NewTable
) -> None:
    name = new_table("lmis")
    key = {"pk": S("a")}
    ddb.put_item(TableName=name, Item={**key, "s": S("dog"), "ns": {"NS": ["1"]}, "l": {"L": []}})
    for update in (
        {"s": {"Action": "DELETE", "Value": {"NS": ["1"]}}},
        {"ns": {"Action": "DELETE", "Value": {"SS": ["a"]}}},
        {"ns": {"Action": "ADD", "Value": N(2)}},
        {"l": {"Action": "ADD", "Value": {"SS": ["a"]}}},
        {"s": {"Action": "ADD", "Value": {"L": [S("a")]}}},
    ):
        err = expect_error(
            "ValidationException", ddb.update_item, TableName=name, Key=key, AttributeUpdates=update
        )
        assert err.response["Error"]["Message"] == (
            "One or more parameter values were invalid: Type mismatch for attribute to update"
        ), update
    # On a missing item: deleting creates nothing, an empty update creates the key alone.
    for update in (
        {"x": {"Action": "DELETE"}},
        {"x": {"Action": "DELETE", "Value": {"NS": ["4"]}}},
    ):
        ddb.update_item(TableName=name, Key={"pk": S("gone")}, AttributeUpdates=update)
        assert "Item" not in ddb.get_item(
            TableName=name, Key={"pk": S("gone")}, ConsistentRead=True
        )
    ddb.update_item(TableName=name, Key={"pk": S("empty")}, AttributeUpdates={})
    got = ddb.get_item(TableName=name, Key={"pk": S("empty")}, ConsistentRead=True)
    assert got["Item"] == {"pk": S("empty")}


def test_comparison_operator_errors_name_their_path(ddb: Client, raw: Client, events: str) -> None:
    enum = (
        "failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, "
        "LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"
    )
    user = {"ComparisonOperator": "EQ", "AttributeValueList": [S("u1")]}
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (
            ddb.delete_item,
            {
                "Key": {"pk": S("u1"), "ts": N(1)},
                "Expected": {"kind": {"ComparisonOperator": "eq", "AttributeValueList": [S("x")]}},
            },
            f"1 validation error detected: Value 'eq' at 'expected.kind.member.comparisonOperator' "
            f"{enum}",
        ),
        (
            ddb.query,
            {"KeyConditions": {"pk": {**user, "ComparisonOperator": "DOG"}}},
            f"1 validation error detected: Value 'DOG' at 'keyConditions.pk.member."
            f"comparisonOperator' {enum}",
        ),
        (
            ddb.query,
            {"KeyConditions": {"pk": user}, "QueryFilter": {"kind": {"ComparisonOperator": "ne"}}},
            f"1 validation error detected: Value 'ne' at 'queryFilter.kind.member."
            f"comparisonOperator' {enum}",
        ),
        (
            ddb.query,
            {"KeyConditions": {"pk": {**user, "AttributeValueList": [N(1)]}}},
            "One or more parameter values were invalid: Condition parameter type does not match "
            "schema type",
        ),
        (  # the same words for a KeyConditionExpression (on the sort key here)
            ddb.query,
            {
                "KeyConditionExpression": "pk = :p AND ts > :t",
                "ExpressionAttributeValues": {":p": S("u1"), ":t": S("1")},
            },
            "One or more parameter values were invalid: Condition parameter type does not match "
            "schema type",
        ),
        (  # a non-key attribute instead of the sort key: DynamoDB names the sort key
            ddb.query,
            {"KeyConditions": {"pk": user, "kind": {**user, "AttributeValueList": [S("odd")]}}},
            "Query condition missed key schema element: ts",
        ),
        (
            raw.scan,  # botocore refuses to send it
            {"ScanFilter": {"kind": {"AttributeValueList": [S("odd")]}}},
            "1 validation error detected: Value null at 'scanFilter.kind.member."
            "comparisonOperator' failed to satisfy constraint: Member must not be null",
        ),
    ]
    for call, request, message in cases:
        err = expect_error("ValidationException", call, TableName=events, **request)
        assert err.response["Error"]["Message"] == message, request


def test_query_filter_paging_counts_what_was_read(ddb: Client, events: str) -> None:
    """Limit counts items read before the QueryFilter, and a page that Limit stopped always has
    a LastEvaluatedKey, even after the last item (DynamoDB does not look ahead): 10 items at
    Limit=1 take 11 pages, the last one empty."""
    pages: list[tuple[int, int]] = []
    found: list[dict[str, Any]] = []
    start: dict[str, Any] | None = None
    while True:
        page = ddb.query(
            TableName=events,
            ConsistentRead=True,
            Limit=1,
            KeyConditions={"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [S("u1")]}},
            QueryFilter={"kind": {"ComparisonOperator": "EQ", "AttributeValueList": [S("even")]}},
            **({"ExclusiveStartKey": start} if start else {}),
        )
        pages.append((page["Count"], page["ScannedCount"]))
        found += page["Items"]
        start = page.get("LastEvaluatedKey")
        if start is None:
            break
    assert _ts(found) == [0, 2, 4, 6, 8]
    assert pages == [(1, 1), (0, 1)] * 5 + [(0, 0)]
    scan = ddb.scan(TableName=events, ConsistentRead=True, Limit=11)  # all 11 items: a key still
    assert scan["Count"] == 11 and "LastEvaluatedKey" in scan
    rest = ddb.scan(
        TableName=events, ConsistentRead=True, Limit=11, ExclusiveStartKey=scan["LastEvaluatedKey"]
    )
    assert rest["Count"] == 0 and "LastEvaluatedKey" not in rest
