"""DynamoDB's request-time checks: syntax DynamoDB refuses, constant operands, Query filters on
key attributes, projections, and the order several list appends land in."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.dynamo import (
    ValidationError,
    apply_update,
    parse_condition,
    parse_projection,
    parse_update,
    validate_update,
)
from cluster.dynamo.checks import (
    check_condition_operands,
    check_filter_keys,
    check_projection,
    show_value,
)

N5, N1 = {"N": "5"}, {"N": "1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("((a = :v))", "Invalid ConditionExpression: The expression has redundant parentheses;"),
        ("a = :v AND ((b = :v))", "redundant parentheses"),
        ("_a = :v", 'Syntax error; token: "_", near: "_a"'),
        # DynamoDB's own wording for a name starting with "__".
        ("pk = :v AND __typename = :v", 'Syntax error; token: "_", near: "AND __"'),
    ],
)
def test_syntax_dynamodb_refuses(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_condition(text)
    assert message in e.value.message


def test_single_parentheses_and_size_with_a_name_placeholder_parse() -> None:
    parse_condition("(a = :v) AND (b = :w OR c = :x)")
    parse_condition("size(#n) > :v")


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        (
            "a < :v",
            {":v": {"L": []}},
            "Invalid ConditionExpression: Incorrect operand type for operator or function; "
            "operator: <, operand type: LIST",
        ),
        (":v >= a", {":v": {"SS": ["x"]}}, "operator: >=, operand type: SET OF STRING"),
        ("a BETWEEN :v AND :w", {":v": {"M": {}}, ":w": N1}, "operator: BETWEEN"),
        (
            "a BETWEEN :v AND :w",
            {":v": N5, ":w": N1},
            "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be "
            "greater than or equal to lower bound; lower bound operand: AttributeValue: {N:5}, "
            "upper bound operand: AttributeValue: {N:1}",
        ),
        (
            "a BETWEEN :v AND :w",
            {":v": N1, ":w": {"S": "2"}},
            "Invalid ConditionExpression: The BETWEEN operator requires same data type for lower "
            "and upper bounds; lower bound operand: AttributeValue: {N:1}, upper bound operand: "
            "AttributeValue: {S:2}",
        ),
        (
            "a IN (" + ", ".join(f":v{i}" for i in range(101)) + ")",
            {},
            "Invalid ConditionExpression: Too many operands for the operator or function; "
            "operator or function: IN, number of operands: 101",
        ),
        (
            "begins_with(a, :v)",
            {":v": N5},
            "Incorrect operand type for operator or function; operator or function: "
            "begins_with, operand type: N",
        ),
        ("NOT attribute_type(a, :t)", {":t": {"S": "STRING"}}, "Invalid attribute type name"),
        (
            "attribute_type(a, :t)",
            {":t": N1},
            "Invalid ConditionExpression: Incorrect operand type for operator or function; "
            "operator or function: attribute_type, operand type: N",
        ),
        (
            "begins_with(a, size(a)) and a = :t",
            {":t": N1},
            "Incorrect operand type for operator or function; operator or function: "
            "begins_with, operand type: N",
        ),
        (
            "begins_with(:v, a)",
            {":v": N5},
            "Invalid ConditionExpression: Incorrect operand type for operator or function; "
            "operator or function: begins_with, operand type: N",
        ),
        (
            "size(:v) > a",
            {":v": {"BOOL": True}},
            "Invalid ConditionExpression: Incorrect operand type for operator or function; "
            "operator or function: size, operand type: BOOL",
        ),
    ],
)
def test_constant_operands_checked_at_parse_time(
    text: str, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as e:
        check_condition_operands(parse_condition(text), values, "ConditionExpression")
    assert message in e.value.message


def test_fine_constants_pass() -> None:
    values = {":l": {"L": []}, ":lo": N1, ":hi": N5, ":s": {"S": "x"}, ":t": {"S": "SS"}}
    text = "a = :l AND b BETWEEN :lo AND :hi AND begins_with(c, :s) AND attribute_type(d, :t)"
    check_condition_operands(parse_condition(text), values, "ConditionExpression")
    check_condition_operands(parse_condition("a < :undefined"), {}, "ConditionExpression")
    in_100 = "a IN (" + ", ".join(f":v{i}" for i in range(100)) + ")"
    check_condition_operands(parse_condition(in_100), {}, "ConditionExpression")
    assert show_value({"S": "abc"}) == "{S:abc}"


def test_query_filter_may_not_name_a_key_attribute() -> None:
    check_filter_keys(parse_condition("size(x) > :v"), None, ("pk", "sk"))
    with pytest.raises(ValidationError) as e:
        check_filter_keys(parse_condition("x = :v OR size(#k) > :v"), {"#k": "sk"}, ("pk", "sk"))
    assert e.value.message == (
        "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk"
    )
    # The hash key is named first, whatever the order in the expression.
    with pytest.raises(ValidationError) as e:
        check_filter_keys(parse_condition("sk = :v AND pk = :v"), None, ("pk", "sk"), "QueryFilter")
    assert e.value.message == (
        "QueryFilter can only contain non-primary key attributes: Primary key attribute: pk"
    )


def test_projection_overlap_and_depth_are_request_errors() -> None:
    check_projection(parse_projection("a.b, a.c, l[1]"), None)
    with pytest.raises(ValidationError, match="Two document paths overlap"):
        check_projection(parse_projection("a, a.b"), None)
    with pytest.raises(ValidationError, match="Two document paths conflict"):
        check_projection(parse_projection("a[0], a.b"), None)
    deep = ".".join(["m"] * 33)
    with pytest.raises(ValidationError, match="nesting levels: 33"):
        check_projection(parse_projection(deep), None)


def test_list_indexes_past_the_end_are_appended_in_index_order() -> None:
    item = {"id": {"S": "a"}, "l": {"L": [{"N": "0"}]}}
    values = {":a": {"S": "a"}, ":b": {"S": "b"}}
    after = apply_update(parse_update("SET l[12] = :b, l[10] = :a"), item, None, values, ["id"])
    assert after["l"] == {"L": [{"N": "0"}, {"S": "a"}, {"S": "b"}]}


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        (
            "SET a = list_append(:n, b)",
            {":n": N1},
            "Invalid UpdateExpression: Incorrect operand type for operator or function; "
            "operator or function: list_append, operand type: N",
        ),
        (
            "SET a = if_not_exists(a, :z) - list_append(:m, l)",
            {":z": N1, ":m": {"M": {}}},
            "operator or function: list_append, operand type: M",
        ),
    ],
)
def test_update_constants_checked_up_front(text: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        validate_update(parse_update(text), None, values, ["id"])
    assert message in e.value.message
    validate_update(
        parse_update("SET a = b + :n, l = list_append(l, :l)"),
        None,
        {":n": N1, ":l": {"L": []}},
        ["id"],
    )
