"""Top-level member checks (no cluster): the item operations list every broken constraint in one
"N validation errors detected" (cases from dynalite's tests, which were checked against
DynamoDB); a member of the wrong JSON type is a SerializationException before any of them."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.router.errors import DynamoError
from cluster.router.shapes import check_members

RCC = (
    "Value 'hi' at 'returnConsumedCapacity' failed to satisfy constraint: "
    "Member must satisfy enum value set: [INDEXES, TOTAL, NONE]"
)
RICM = (
    "Value 'hi' at 'returnItemCollectionMetrics' failed to satisfy constraint: "
    "Member must satisfy enum value set: [SIZE, NONE]"
)
RV = (
    "Value 'hi' at 'returnValues' failed to satisfy constraint: "
    "Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]"
)
PATTERN = (
    "Value '{}' at 'tableName' failed to satisfy constraint: "
    "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
)
SHORT = (
    "Value '{}' at 'tableName' failed to satisfy constraint: "
    "Member must have length greater than or equal to 3"
)
BAD = {"TableName": "abc;", "ReturnConsumedCapacity": "hi"}
WRITE_BAD = {**BAD, "ReturnItemCollectionMetrics": "hi", "ReturnValues": "hi"}


def _null(member: str) -> str:
    return f"Value null at '{member}' failed to satisfy constraint: Member must not be null"


def _refused(operation: str, request: dict[str, Any]) -> str:
    with pytest.raises(DynamoError) as e:
        check_members(operation, request)
    assert e.value.type == "ValidationException"
    return e.value.message


def _listed(*problems: str) -> str:
    count = f"{len(problems)} validation error{'s' if len(problems) > 1 else ''} detected"
    return f"{count}: {'; '.join(problems)}"


@pytest.mark.parametrize(
    ("operation", "request_", "problems"),
    [
        ("GetItem", {}, [_null("tableName"), _null("key")]),
        ("PutItem", {}, [_null("tableName"), _null("item")]),
        ("DeleteItem", {"TableName": ""}, [PATTERN.format(""), SHORT.format(""), _null("key")]),
        (
            "UpdateItem",
            {"TableName": "a;"},
            [PATTERN.format("a;"), SHORT.format("a;"), _null("key")],
        ),
        (
            "UpdateItem",
            {"TableName": "a" * 256},
            [
                f"Value '{'a' * 256}' at 'tableName' failed to satisfy constraint: "
                "Member must have length less than or equal to 255",
                _null("key"),
            ],
        ),
        (
            "PutItem",
            WRITE_BAD,
            [RCC, PATTERN.format("abc;"), _null("item"), RV, RICM],
        ),
        (
            "DeleteItem",
            WRITE_BAD,
            [RCC, PATTERN.format("abc;"), RV, RICM, _null("key")],
        ),
        (
            "UpdateItem",
            WRITE_BAD,
            [RCC, PATTERN.format("abc;"), RICM, RV, _null("key")],
        ),
        (
            "GetItem",
            {**BAD, "AttributesToGet": []},
            [
                "Value '[]' at 'attributesToGet' failed to satisfy constraint: "
                "Member must have length greater than or equal to 1",
                RCC,
                PATTERN.format("abc;"),
                _null("key"),
            ],
        ),
        # One problem alone keeps the singular wording.
        ("PutItem", {"TableName": "abc", "Item": {}, "ReturnValues": "hi"}, [RV]),
        ("GetItem", {"TableName": "abc"}, [_null("key")]),
    ],
)
def test_item_operations_list_every_broken_constraint(
    operation: str, request_: dict[str, Any], problems: list[str]
) -> None:
    assert _refused(operation, request_) == _listed(*problems)


def test_a_well_formed_item_request_passes() -> None:
    check_members("PutItem", {"TableName": "abc", "Item": {"pk": {"S": "x"}}})
    check_members("GetItem", {"TableName": "abc", "Key": {"pk": {"S": "x"}}, "Select": None})


def test_a_wrong_type_is_a_serialization_error_before_any_constraint() -> None:
    with pytest.raises(DynamoError) as e:
        check_members("PutItem", {"ReturnValues": "hi", "ReturnConsumedCapacity": 3})
    assert e.value.type == "SerializationException"
    assert "ReturnConsumedCapacity" in e.value.message


def test_other_operations_report_their_first_enum_problem() -> None:
    message = _refused("Scan", {"TableName": "abc", "Select": "hi", "ReturnConsumedCapacity": "x"})
    assert message == _listed(
        "Value 'hi' at 'select' failed to satisfy constraint: Member must satisfy enum value "
        "set: [SPECIFIC_ATTRIBUTES, COUNT, ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]"
    )
