"""The top-level members of every operation's request, typed as DynamoDB's API model types them.

DynamoDB refuses a member of the wrong JSON type (``"Limit": "ten"``) with a
SerializationException and an enum member outside its values (``"ReturnConsumedCapacity":
"ALL"``) with a ValidationException naming the member, before the operation runs; members it
does not know are ignored. ``check_members`` does the same, so handlers meet only the types the
model promises. Nested structures (items, keys, RequestItems) are checked by the handlers.

    check_members("PutItem", {"TableName": "t", "Item": {...}, "ReturnValues": "ALL_OLD"})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from .errors import DynamoError
from .validate import name_problems, refuse

# A member's kind: a JSON type (str, bool, int, dict, list) or the tuple of an enum's values.
Kind: TypeAlias = type | tuple[str, ...]

CAPACITY: Kind = ("INDEXES", "TOTAL", "NONE")
METRICS: Kind = ("SIZE", "NONE")
OPERATOR: Kind = ("AND", "OR")
ON_CONDITION_FAILURE: Kind = ("ALL_OLD", "NONE")
# Enum values in the order DynamoDB's messages list them (dynalite's tests, checked against it).
RETURN_VALUES: Kind = ("ALL_NEW", "UPDATED_OLD", "ALL_OLD", "NONE", "UPDATED_NEW")
SELECT: Kind = ("SPECIFIC_ATTRIBUTES", "COUNT", "ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES")

_EXPRESSION_INPUTS: dict[str, Kind] = {
    "ExpressionAttributeNames": dict,
    "ExpressionAttributeValues": dict,
}
_WRITE: dict[str, Kind] = {
    "TableName": str,
    "Expected": dict,
    "ConditionalOperator": OPERATOR,
    "ReturnValues": RETURN_VALUES,
    "ReturnConsumedCapacity": CAPACITY,
    "ReturnItemCollectionMetrics": METRICS,
    "ConditionExpression": str,
    "ReturnValuesOnConditionCheckFailure": ON_CONDITION_FAILURE,
    **_EXPRESSION_INPUTS,
}
_READ: dict[str, Kind] = {
    "TableName": str,
    "IndexName": str,
    "Select": SELECT,
    "AttributesToGet": list,
    "Limit": int,
    "ConsistentRead": bool,
    "ConditionalOperator": OPERATOR,
    "ExclusiveStartKey": dict,
    "ReturnConsumedCapacity": CAPACITY,
    "ProjectionExpression": str,
    "FilterExpression": str,
    **_EXPRESSION_INPUTS,
}

MEMBERS: dict[str, dict[str, Kind]] = {
    "CreateTable": {
        "AttributeDefinitions": list,
        "TableName": str,
        "KeySchema": list,
        "LocalSecondaryIndexes": list,
        "GlobalSecondaryIndexes": list,
        "BillingMode": ("PROVISIONED", "PAY_PER_REQUEST"),
        "ProvisionedThroughput": dict,
        "StreamSpecification": dict,
        "SSESpecification": dict,
        "Tags": list,
        "TableClass": ("STANDARD", "STANDARD_INFREQUENT_ACCESS"),
        "DeletionProtectionEnabled": bool,
        "ResourcePolicy": str,
        "OnDemandThroughput": dict,
        "WarmThroughput": dict,
    },
    "DescribeTable": {"TableName": str},
    "DeleteTable": {"TableName": str},
    "ListTables": {"ExclusiveStartTableName": str, "Limit": int},
    "PutItem": {**_WRITE, "Item": dict},
    "DeleteItem": {**_WRITE, "Key": dict},
    "UpdateItem": {**_WRITE, "Key": dict, "AttributeUpdates": dict, "UpdateExpression": str},
    "GetItem": {
        "TableName": str,
        "Key": dict,
        "AttributesToGet": list,
        "ConsistentRead": bool,
        "ReturnConsumedCapacity": CAPACITY,
        "ProjectionExpression": str,
        "ExpressionAttributeNames": dict,
    },
    "BatchWriteItem": {
        "RequestItems": dict,
        "ReturnConsumedCapacity": CAPACITY,
        "ReturnItemCollectionMetrics": METRICS,
    },
    "BatchGetItem": {"RequestItems": dict, "ReturnConsumedCapacity": CAPACITY},
    "Query": {
        **_READ,
        "KeyConditions": dict,
        "QueryFilter": dict,
        "ScanIndexForward": bool,
        "KeyConditionExpression": str,
    },
    "Scan": {**_READ, "ScanFilter": dict, "TotalSegments": int, "Segment": int},
    "UpdateTable": {
        "TableName": str,
        "AttributeDefinitions": list,
        "BillingMode": ("PROVISIONED", "PAY_PER_REQUEST"),
        "ProvisionedThroughput": dict,
        "GlobalSecondaryIndexUpdates": list,
        "StreamSpecification": dict,
        "SSESpecification": dict,
        "ReplicaUpdates": list,
        "TableClass": ("STANDARD", "STANDARD_INFREQUENT_ACCESS"),
        "DeletionProtectionEnabled": bool,
    },
    "TagResource": {"ResourceArn": str, "Tags": list},
    "UntagResource": {"ResourceArn": str, "TagKeys": list},
    "ListTagsOfResource": {"ResourceArn": str, "NextToken": str},
    "UpdateTimeToLive": {"TableName": str, "TimeToLiveSpecification": dict},
    "DescribeTimeToLive": {"TableName": str},
    "TransactWriteItems": {
        "TransactItems": list,
        "ReturnConsumedCapacity": CAPACITY,
        "ReturnItemCollectionMetrics": METRICS,
        "ClientRequestToken": str,
    },
    "TransactGetItems": {"TransactItems": list, "ReturnConsumedCapacity": CAPACITY},
}

_JSON_NAMES = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object"}


# The item operations check every member constraint at once and list each broken one in a
# single "N validation errors detected: A; B" (a bad TableName, enum members, the missing
# Key or Item), as dynalite's tests (checked against DynamoDB) show. DynamoDB's order is not
# stable (dynalite's newer tests accept any order); this is the order its older tests pinned.
_ITEM_ORDER: dict[str, tuple[str, ...]] = {
    "PutItem": (
        "ReturnConsumedCapacity",
        "TableName",
        "Item",
        "ReturnValues",
        "ReturnItemCollectionMetrics",
    ),
    "DeleteItem": (
        "ReturnConsumedCapacity",
        "TableName",
        "ReturnValues",
        "ReturnItemCollectionMetrics",
        "Key",
    ),
    "UpdateItem": (
        "ReturnConsumedCapacity",
        "TableName",
        "ReturnItemCollectionMetrics",
        "ReturnValues",
        "Key",
    ),
    # dynalite's GetItem cases put key before and after tableName: tableName first, as above.
    "GetItem": ("AttributesToGet", "ReturnConsumedCapacity", "TableName", "Key"),
}


def check_members(operation: str, request: Mapping[str, Any]) -> None:
    """Raise the error DynamoDB gives for top-level members of the wrong type (the first one,
    a SerializationException) or outside their constraints (every one, in one
    ValidationException); ``null`` counts as absent, unknown members are ignored."""
    members = MEMBERS.get(operation, {})
    for name, value in request.items():
        kind = members.get(name)
        if kind is None or value is None:
            continue
        if isinstance(kind, tuple):
            if not isinstance(value, str):
                raise _wrong_type(name, "a string")
        elif (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise _wrong_type(name, _JSON_NAMES.get(kind, "an array"))
    problems = {
        name: [_enum_problem(name, value, kind)]
        for name, value in request.items()
        if isinstance(kind := members.get(name), tuple) and value is not None and value not in kind
    }
    order = _ITEM_ORDER.get(operation)
    if order is not None:
        problems.update(_item_problems(operation, request))
        ranked = sorted(problems, key=lambda n: order.index(n) if n in order else len(order))
        refuse([p for name in ranked for p in problems[name]])
    elif problems:
        refuse(next(iter(problems.values())))  # other operations: the first one, as before


def _enum_problem(name: str, value: str, kind: tuple[str, ...]) -> str:
    return (
        f"Value '{value}' at '{_camel(name)}' failed to satisfy constraint: "
        f"Member must satisfy enum value set: [{', '.join(kind)}]"
    )


def _item_problems(operation: str, request: Mapping[str, Any]) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    table = request.get("TableName")
    if table is None:
        problems["TableName"] = [_null("TableName")]
    elif broken := name_problems(table, "tableName"):
        problems["TableName"] = broken
    required = "Item" if operation == "PutItem" else "Key"
    if request.get(required) is None:
        problems[required] = [_null(required)]
    if operation == "GetItem" and request.get("AttributesToGet") == []:
        problems["AttributesToGet"] = [
            "Value '[]' at 'attributesToGet' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1"
        ]
    return problems


def _null(name: str) -> str:
    return f"Value null at '{_camel(name)}' failed to satisfy constraint: Member must not be null"


def _wrong_type(name: str, expected: str) -> DynamoError:
    return DynamoError(
        "SerializationException", f"Unexpected value type for field {name}: expected {expected}"
    )


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]
