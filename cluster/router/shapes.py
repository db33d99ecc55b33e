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

# A member's kind: a JSON type (str, bool, int, dict, list) or the tuple of an enum's values.
Kind: TypeAlias = type | tuple[str, ...]

CAPACITY: Kind = ("INDEXES", "TOTAL", "NONE")
METRICS: Kind = ("SIZE", "NONE")
OPERATOR: Kind = ("AND", "OR")
ON_CONDITION_FAILURE: Kind = ("ALL_OLD", "NONE")
RETURN_VALUES: Kind = ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW")
SELECT: Kind = ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "SPECIFIC_ATTRIBUTES", "COUNT")

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


def check_members(operation: str, request: Mapping[str, Any]) -> None:
    """Raise the error DynamoDB gives for the first top-level member of the wrong type or
    outside its enum; ``null`` counts as absent, unknown members are ignored."""
    members = MEMBERS.get(operation, {})
    for name, value in request.items():
        kind = members.get(name)
        if kind is None or value is None:
            continue
        if isinstance(kind, tuple):
            if not isinstance(value, str):
                raise _wrong_type(name, "a string")
            if value not in kind:
                raise DynamoError.validation(
                    f"1 validation error detected: Value '{value}' at '{_camel(name)}' failed "
                    f"to satisfy constraint: Member must satisfy enum value set: "
                    f"[{', '.join(kind)}]"
                )
        elif (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise _wrong_type(name, _JSON_NAMES.get(kind, "an array"))


def _wrong_type(name: str, expected: str) -> DynamoError:
    return DynamoError(
        "SerializationException", f"Unexpected value type for field {name}: expected {expected}"
    )


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]
