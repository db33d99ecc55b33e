"""DynamoDB's validation order and wording, through boto3 against the session cluster.

DynamoDB checks a request on its own (attribute values, placeholder maps, expression syntax
and constants) before it looks the table up: a malformed request names its fault even when
the table does not exist. Each case below sends the same faulty request to a table that does
not exist and to one that does; both must answer the same ValidationException.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.router.test_api_boto3 import Client, NewTable, expect_error, unique

pytestmark = pytest.mark.slow

N1 = {"N": "1"}
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "get_item",
        "empty value in Key",
        {"Key": {"pk": {}}},
        "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
    ),
    (
        "delete_item",
        "empty string set in Key",
        {"Key": {"pk": {"SS": []}}},
        "One or more parameter values were invalid: An string set may not be empty",
    ),
    (
        "put_item",
        "bad number in Item",
        {"Item": {"pk": {"S": "x"}, "n": {"N": "b"}}},
        "The parameter cannot be converted to a numeric value: b",
    ),
    (
        "delete_item",
        "empty ConditionExpression",
        {"Key": {"pk": {"S": "x"}}, "ConditionExpression": ""},
        "Invalid ConditionExpression: The expression can not be empty;",
    ),
    (
        "put_item",
        "BETWEEN bounds of two types",
        {
            "Item": {"pk": {"S": "x"}},
            "ConditionExpression": "a BETWEEN :b AND :a",
            "ExpressionAttributeValues": {":a": {"S": "a"}, ":b": N1},
        },
        "Invalid ConditionExpression: The BETWEEN operator requires same data type for lower "
        "and upper bounds; lower bound operand: AttributeValue: {N:1}, upper bound operand: "
        "AttributeValue: {S:a}",
    ),
    (
        "update_item",
        "unused value",
        {
            "Key": {"pk": {"S": "x"}},
            "UpdateExpression": "SET a = :a",
            "ExpressionAttributeValues": {":a": N1, ":b": N1},
        },
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:b}",
    ),
    (
        "get_item",
        "ProjectionExpression syntax",
        {"Key": {"pk": {"S": "x"}}, "ProjectionExpression": "a,,b"},
        "Invalid ProjectionExpression: Syntax error;",
    ),
    (
        "query",
        "IN of 101 operands",
        {
            "KeyConditionExpression": "pk = :v0",
            "FilterExpression": "a IN (" + ", ".join(f":v{i}" for i in range(101)) + ")",
            "ExpressionAttributeValues": {f":v{i}": {"N": str(i)} for i in range(101)},
        },
        "Invalid FilterExpression: Too many operands for the operator or function; operator or "
        "function: IN, number of operands: 101",
    ),
    (
        "delete_item",
        "placeholder map before syntax",
        {
            "Key": {"pk": {"S": "x"}},
            "ConditionExpression": "",
            "ExpressionAttributeValues": {":b": {"NULL": False}},
        },
        "ExpressionAttributeValues contains invalid value: One or more parameter values were "
        "invalid: Null attribute value types must have the value of true for key :b",
    ),
    (
        "scan",
        "ExpressionAttributeNames empty",
        {"FilterExpression": "a = :a", "ExpressionAttributeNames": {}},
        "ExpressionAttributeNames must not be empty",
    ),
]


@pytest.mark.parametrize(
    ("operation", "fault", "request_", "message"), CASES, ids=[c[1] for c in CASES]
)
def test_request_is_checked_before_the_table_is_looked_up(
    raw: Client,
    new_table: NewTable,
    operation: str,
    fault: str,
    request_: dict[str, Any],
    message: str,
) -> None:
    for table in (unique("missing"), new_table("order")):
        err = expect_error(
            "ValidationException", getattr(raw, operation), TableName=table, **request_
        )
        assert str(err.response["Error"]["Message"]).startswith(message), (fault, table)


def test_a_sound_request_to_a_missing_table_is_resource_not_found(raw: Client) -> None:
    err = expect_error(
        "ResourceNotFoundException", raw.get_item, TableName=unique("gone"), Key={"pk": N1}
    )
    assert "Requested resource not found" in str(err.response["Error"]["Message"])
