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
        "One or more parameter values were invalid: An string set  may not be empty",
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
        "update_item",
        "undefined value",
        {"Key": {"pk": {"S": "x"}}, "UpdateExpression": "SET a = :a, b = :b"},
        "Invalid UpdateExpression: An expression attribute value used in expression is not "
        "defined; attribute value: :a",
    ),
    (
        "get_item",
        "undefined name",
        {"Key": {"pk": {"S": "x"}}, "ProjectionExpression": "a, #x.y"},
        "Invalid ProjectionExpression: An expression attribute name used in the document path "
        "is not defined; attribute name: #x",
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
        "bad ExclusiveStartKey value",
        {"ExclusiveStartKey": {"pk": {"S": "a", "N": "1"}}},
        "The provided starting key is invalid: Supplied AttributeValue has more than one "
        "datatypes set, must contain exactly one of the supported datatypes",
    ),
    (
        "scan",
        "size of a number constant",
        {"FilterExpression": "size(:n) > a", "ExpressionAttributeValues": {":n": N1}},
        "Invalid FilterExpression: Incorrect operand type for operator or function; operator or "
        "function: size, operand type: N",
    ),
    (
        "scan",
        "undefined name before operand count",
        {"FilterExpression": "attribute_exists(#Pictures.RearView, :a) and a = a"},
        "Invalid FilterExpression: An expression attribute name used in the document path is "
        "not defined; attribute name: #Pictures",
    ),
    (
        "scan",
        "first undefined placeholder in written order",
        {"FilterExpression": "begins_with(:hello, #a, #b)"},
        "Invalid FilterExpression: An expression attribute value used in expression is not "
        "defined; attribute value: :hello",
    ),
    (
        "scan",
        "operand count once names are defined",
        {
            "FilterExpression": "begins_with(#p)",
            "ExpressionAttributeNames": {"#p": "p"},
        },
        "Invalid FilterExpression: Incorrect number of operands for operator or function; "
        "operator or function: begins_with, number of operands: 1",
    ),
    (
        "scan",
        "attribute_type of a number",
        {"FilterExpression": "attribute_type(a, :t)", "ExpressionAttributeValues": {":t": N1}},
        "Invalid FilterExpression: Incorrect operand type for operator or function; operator or "
        "function: attribute_type, operand type: N",
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
    gone = unique("gone")
    # Item operations do not name the table; DescribeTable does.
    err = expect_error("ResourceNotFoundException", raw.describe_table, TableName=gone)
    assert (
        err.response["Error"]["Message"] == f"Requested resource not found: Table: {gone} not found"
    )
    for call, request in [
        (raw.get_item, {"Key": {"pk": N1}}),
        (raw.put_item, {"Item": {"pk": N1}}),
        (raw.update_item, {"Key": {"pk": N1}}),
        (raw.query, {"KeyConditionExpression": "pk = :v", "ExpressionAttributeValues": {":v": N1}}),
        (raw.scan, {}),
    ]:
        err = expect_error("ResourceNotFoundException", call, TableName=gone, **request)
        assert err.response["Error"]["Message"] == "Requested resource not found"
    for call, items in [
        (raw.batch_get_item, {gone: {"Keys": [{"pk": N1}]}}),
        (raw.batch_write_item, {gone: [{"PutRequest": {"Item": {"pk": N1}}}]}),
    ]:
        err = expect_error("ResourceNotFoundException", call, RequestItems=items)
        assert err.response["Error"]["Message"] == "Requested resource not found"


def test_empty_key_value_worded_as_dynamodb(raw: Client, new_table: NewTable) -> None:
    name = new_table("emptykey")
    err = expect_error("ValidationException", raw.put_item, TableName=name, Item={"pk": {"S": ""}})
    assert err.response["Error"]["Message"] == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute "
        "cannot contain an empty string value. Key: pk"
    )


def test_table_name_refusals_worded_per_operation(raw: Client) -> None:
    def message(call: Any, **kwargs: Any) -> str:
        return str(expect_error("ValidationException", call, **kwargs).response["Error"]["Message"])

    pattern = "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    # Item operations list every constraint the name breaks.
    assert message(raw.get_item, TableName="a;", Key={"pk": N1}) == (
        f"2 validation errors detected: Value 'a;' at 'tableName' failed to satisfy constraint: "
        f"{pattern}; Value 'a;' at 'tableName' failed to satisfy constraint: Member must have "
        "length greater than or equal to 3"
    )
    assert message(raw.scan, TableName="abc;") == (
        f"1 validation error detected: Value 'abc;' at 'tableName' failed to satisfy "
        f"constraint: {pattern}"
    )
    long = "a" * 256
    assert message(raw.put_item, TableName=long, Item={"pk": N1}) == (
        f"1 validation error detected: Value '{long}' at 'tableName' failed to satisfy "
        "constraint: Member must have length less than or equal to 255"
    )
    # Operations on the table as a whole word the length by hand.
    sized = "TableName must be at least 3 characters long and at most 255 characters long"
    for call in (raw.describe_table, raw.delete_table, raw.describe_time_to_live):
        assert message(call, TableName="a;") == sized
        assert message(call, TableName="abc;").endswith(pattern)
    assert message(raw.describe_table) == (
        "The paramater 'tableName' is required but was not present in the request"
    )
    assert message(raw.describe_time_to_live) == (
        "The parameter 'TableName' is required but was not present in the request"
    )
    assert message(raw.update_time_to_live, TableName="abc", TimeToLiveSpecification={}) == (
        "2 validation errors detected: Value null at 'timeToLiveSpecification.enabled' failed "
        "to satisfy constraint: Member must not be null; Value null at "
        "'timeToLiveSpecification.attributeName' failed to satisfy constraint: Member must not "
        "be null"
    )


def test_size_of_a_placeholder_and_a_starting_key_off_the_schema(
    raw: Client, new_table: NewTable
) -> None:
    name = new_table("sizev")
    raw.put_item(TableName=name, Item={"pk": {"S": "a"}, "n": {"N": "5"}})
    # Consistent scans: an eventually consistent one may not see the write yet (DynamoDB's
    # too), and these cases are about the expressions, not about when replicas catch up.
    got = raw.scan(
        TableName=name,
        FilterExpression="size(:s) = n",
        ExpressionAttributeValues={":s": {"S": "hello"}},
        ConsistentRead=True,
    )
    assert got["Items"] == [{"pk": {"S": "a"}, "n": {"N": "5"}}]
    got = raw.scan(  # a constant subject: "abc" begins with the item's pk, "a"
        TableName=name,
        FilterExpression="begins_with(:s, pk)",
        ExpressionAttributeValues={":s": {"S": "abc"}},
        ConsistentRead=True,
    )
    assert got["Count"] == 1
    err = expect_error(
        "ValidationException",
        raw.query,
        TableName=name,
        KeyConditionExpression="pk = :a AND pk = :a",
        ExpressionAttributeValues={":a": {"S": "a"}},
    )
    assert err.response["Error"]["Message"] == (
        "KeyConditionExpressions must only contain one condition per key"
    )
    err = expect_error(
        "ValidationException", raw.scan, TableName=name, ExclusiveStartKey={"x": {"S": "a"}}
    )
    assert err.response["Error"]["Message"] == (
        "The provided starting key is invalid: The provided key element does not match the schema"
    )


def test_update_table_refusals(raw: Client) -> None:
    def message(**kwargs: Any) -> str:
        err = expect_error("ValidationException", raw.update_table, **kwargs)
        return str(err.response["Error"]["Message"])

    missing = unique("nope")  # throughput is checked before the table is looked up
    assert message(ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}) == (
        "The parameter 'TableName' is required but was not present in the request"
    )
    assert message(TableName=missing, ProvisionedThroughput={}) == (
        "2 validation errors detected: Value null at 'provisionedThroughput.writeCapacityUnits' "
        "failed to satisfy constraint: Member must not be null; Value null at "
        "'provisionedThroughput.readCapacityUnits' failed to satisfy constraint: Member must "
        "not be null"
    )
    too_many = 1_000_000_000_001
    pt = {"ReadCapacityUnits": too_many, "WriteCapacityUnits": -1}
    assert message(TableName=missing, ProvisionedThroughput=pt) == (
        "1 validation error detected: Value '-1' at 'provisionedThroughput.writeCapacityUnits' "
        "failed to satisfy constraint: Member must have value greater than or equal to 1"
    )
    pt = {"ReadCapacityUnits": too_many, "WriteCapacityUnits": too_many}
    assert message(TableName=missing, ProvisionedThroughput=pt) == (
        f"Given value {too_many} for ReadCapacityUnits is out of bounds"
    )


def test_create_table_key_schema_refusals(raw: Client) -> None:
    def message(definitions: list[Any], schema: list[tuple[str, str]]) -> str:
        err = expect_error(
            "ValidationException",
            raw.create_table,
            TableName=unique("ks"),
            AttributeDefinitions=definitions,
            KeySchema=[{"KeyType": kind, "AttributeName": name} for kind, name in schema],
            BillingMode="PAY_PER_REQUEST",
        )
        return str(err.response["Error"]["Message"])

    a, b = (
        {"AttributeName": "a", "AttributeType": "S"},
        {"AttributeName": "b", "AttributeType": "S"},
    )
    assert message([{}], [("HASH", "a")]) == (
        "2 validation errors detected: Value null at 'attributeDefinitions.1.member."
        "attributeName' failed to satisfy constraint: Member must not be null; Value null at "
        "'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member "
        "must not be null"
    )
    assert message([{"AttributeName": "b", "AttributeType": "SS"}], [("HASH", "a")]) == (
        "1 validation error detected: Value 'SS' at 'attributeDefinitions.1.member."
        "attributeType' failed to satisfy constraint: Member must satisfy enum value set: "
        "[B, N, S]"
    )
    no_definition = "Invalid KeySchema: Some index key attribute have no definition"
    assert message([b], [("HASH", "a"), ("RANGE", "b")]) == no_definition
    assert message([a], [("HASH", "a"), ("HASH", "a")]) == no_definition
    assert message([a, b], [("HASH", "a"), ("HASH", "a")]) == (
        "Both the Hash Key and the Range Key element in the KeySchema have the same name"
    )
    assert message([a, b], [("HASH", "a"), ("HASH", "b")]) == (
        "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type"
    )
    assert message([a, b], [("RANGE", "a"), ("HASH", "b")]) == (
        "Invalid KeySchema: The first KeySchemaElement is not a HASH key type"
    )
    assert message([b], [("HASH", "a")]) == (
        "One or more parameter values were invalid: Some index key attributes are not defined "
        "in AttributeDefinitions. Keys: [a], AttributeDefinitions: [b]"
    )


def test_return_values_the_operation_does_not_have(raw: Client, new_table: NewTable) -> None:
    name = new_table("retval")
    for call, request in [
        (raw.put_item, {"Item": {"pk": {"S": "a"}}, "ReturnValues": "ALL_NEW"}),
        (raw.delete_item, {"Key": {"pk": {"S": "a"}}, "ReturnValues": "UPDATED_OLD"}),
    ]:
        err = expect_error("ValidationException", call, TableName=name, **request)
        assert err.response["Error"]["Message"] == "Return values set to invalid value"
    assert "Item" not in raw.get_item(TableName=name, Key={"pk": {"S": "a"}})


def test_item_operations_list_every_broken_member(raw: Client) -> None:
    # dynalite's case (checked against DynamoDB): five problems in one message, the missing Key
    # among them; before, only the first enum member was reported.
    err = expect_error(
        "ValidationException",
        raw.delete_item,
        TableName="abc;",
        ReturnConsumedCapacity="hi",
        ReturnItemCollectionMetrics="hi",
        ReturnValues="hi",
    )
    message = str(err.response["Error"]["Message"])
    assert message.startswith(
        "5 validation errors detected: Value 'hi' at 'returnConsumedCapacity'"
    )
    for part in (
        "Value 'abc;' at 'tableName' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-zA-Z0-9_.-]+",
        "Value 'hi' at 'returnValues' failed to satisfy constraint: Member must satisfy enum "
        "value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]",
        "Value 'hi' at 'returnItemCollectionMetrics' failed to satisfy constraint: Member must "
        "satisfy enum value set: [SIZE, NONE]",
        "Value null at 'key' failed to satisfy constraint: Member must not be null",
    ):
        assert part in message
    err = expect_error("ValidationException", raw.put_item)
    assert err.response["Error"]["Message"] == (
        "2 validation errors detected: Value null at 'tableName' failed to satisfy constraint: "
        "Member must not be null; Value null at 'item' failed to satisfy constraint: Member "
        "must not be null"
    )


def test_list_tables_refusals_in_order(raw: Client) -> None:
    def message(**kwargs: Any) -> str:
        err = expect_error("ValidationException", raw.list_tables, **kwargs)
        return str(err.response["Error"]["Message"])

    assert message(Limit=0) == (
        "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    )
    assert message(ExclusiveStartTableName="a;", Limit=500) == (
        "3 validation errors detected: Value '500' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 100; Value 'a;' at "
        "'exclusiveStartTableName' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: [a-zA-Z0-9_.-]+; Value 'a;' at 'exclusiveStartTableName' failed "
        "to satisfy constraint: Member must have length greater than or equal to 3"
    )


def test_batch_request_items_refusals(raw: Client) -> None:
    def message(call: Any, items: Any) -> str:
        err = expect_error("ValidationException", call, RequestItems=items)
        return str(err.response["Error"]["Message"])

    missing = unique("nobatch")
    put = {"PutRequest": {"Item": {"pk": {"S": "a"}}}}
    for call in (raw.batch_write_item, raw.batch_get_item):
        assert message(call, {}) == (
            "1 validation error detected: Value '{}' at 'requestItems' failed to satisfy "
            "constraint: Member must have length greater than or equal to 1"
        )
    got = message(raw.batch_write_item, {"a": [put]})
    assert got.startswith("1 validation error detected: Value '{a=")
    assert got.endswith(
        "at 'requestItems' failed to satisfy constraint: Map keys must satisfy constraint: "
        "[Member must have length less than or equal to 255, Member must have length greater "
        "than or equal to 3, Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+]"
    )
    got = message(raw.batch_write_item, {missing: [put] * 26})
    assert got.endswith(
        "Map value must satisfy constraint: [Member must have length less than or equal to 25, "
        "Member must have length greater than or equal to 1]"
    )
    # A bad value is found before the (missing) table is looked up.
    assert message(raw.batch_write_item, {missing: [{"PutRequest": {"Item": {"pk": {}}}}]}) == (
        "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
    )
    assert (
        message(
            raw.batch_write_item, {missing: [{"DeleteRequest": {"Key": {"pk": {"NULL": False}}}}]}
        )
        == "One or more parameter values were invalid: Null attribute value types must have the "
        "value of true"
    )
