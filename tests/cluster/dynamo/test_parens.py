"""Parentheses around operands and conditions: what DynamoDB accepts, what it calls redundant
and what is a syntax error (cases from dynalite's tests, which were checked against DynamoDB)."""

from __future__ import annotations

import pytest

from cluster.dynamo import ValidationError, parse_condition, parse_update
from cluster.dynamo.nodes import (
    And,
    AttributeExists,
    Between,
    Compare,
    In,
    Or,
    Path,
    Size,
    ValueRef,
)

A, B, V = Path(("a",)), Path(("b",)), ValueRef(":v")


@pytest.mark.parametrize(
    ("text", "same_as"),
    [
        ("(a) = :v", "a = :v"),
        ("a = (:v)", "a = :v"),
        ("(a) <> (b)", "a <> b"),
        ("(a)between(:lo)and(:hi)", "a BETWEEN :lo AND :hi"),
        ("(a) IN ((b), :v)", "a IN (b, :v)"),
        ("size((a)) > :v", "size(a) > :v"),
        ("(size(a)) > :v", "size(a) > :v"),
        ("attribute_exists((a))", "attribute_exists(a)"),
        ("(attribute_exists(a))", "attribute_exists(a)"),
        ("begins_with((a), (:v))", "begins_with(a, :v)"),
        ("(a = :v) AND (b = :v OR (a) = (b))", "a = :v AND (b = :v OR a = b)"),
        ("((a = :v) OR (b = :v))", "a = :v OR b = :v"),  # not redundant: the inner ones group
        ("NOT (a = :v)", "NOT a = :v"),
    ],
)
def test_single_parentheses_parse_as_without(text: str, same_as: str) -> None:
    assert parse_condition(text) == parse_condition(same_as)


def test_parenthesised_operands_keep_their_meaning() -> None:
    assert parse_condition("(a) = :v") == Compare("=", A, V)
    assert parse_condition("(a)between(:v)and(b)") == Between(A, V, B)
    assert parse_condition("(a) IN ((b))") == In(A, (B,))
    assert parse_condition("(size(a)) > :v") == Compare(">", Size(A), V)
    assert parse_condition("(attribute_exists(a)) OR ((a) = :v)") == Or(
        AttributeExists(A), Compare("=", A, V)
    )
    assert parse_condition("(a = :v) AND b = :v") == And(Compare("=", A, V), Compare("=", B, V))


@pytest.mark.parametrize(
    "text",
    [
        "((a = :v))",
        "((a)) = :v",
        "a = ((:v))",
        "a=a and a > ((views))",  # reported before the reserved word
        "(a)between(((b.c)))and(c)",
        "a > whatever((:things), ((a)))",  # reported before the unknown function
        "a=a AND ((a=a AND a=a)) AND a=a",
        "a=a OR ((a=a OR (a=a OR a=a)))",
        "size(((a))) > :v",
        "(" * 1000 + "attribute_exists(a)" + ")" * 1000,
    ],
)
def test_redundant_parentheses(text: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_condition(text, "FilterExpression")
    assert e.value.message == "Invalid FilterExpression: The expression has redundant parentheses;"


def test_a_call_s_own_parentheses_are_not_redundant() -> None:
    with pytest.raises(ValidationError, match="Invalid function name; function: whatever"):
        parse_condition("a=a and whatever((:things)) > a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # An operand, parenthesised or not, is not a condition: the error is after it.
        ("(a)", 'Syntax error; token: "<EOF>", near: ")"'),
        ("a", 'Syntax error; token: "<EOF>", near: "a"'),
        ("(a) AND b = :v", 'Syntax error; token: "AND", near: ") AND b"'),
        ("NOT (:v)", 'Syntax error; token: "<EOF>", near: ")"'),
        ("a = :v OR b", 'Syntax error; token: "<EOF>", near: "b"'),
        # A condition is not an operand: the error is after its ")".
        ("(a = :v) = :v", 'Syntax error; token: "=", near: ") = :v"'),
        ("a BETWEEN (a = :v) AND b", 'Syntax error; token: "AND", near: ") AND b"'),
        ("size((a = :v)) > :v", 'Syntax error; token: ")", near: ")) >"'),
        # Unbalanced, and parentheses inside a path (dynalite's syntax-error cases).
        ("(a)between(b.c.d)and((c)", 'Syntax error; token: "<EOF>", near: ")"'),
        ("(a)between(b.(c.d))and(c)", 'Syntax error; token: "(", near: ".(c"'),
        ("(size(a)).b > a", 'Syntax error; token: ".", near: ").b"'),
        ("(size(a))[0] > a", 'Syntax error; token: "[", near: ")[0"'),
    ],
)
def test_misplaced_parentheses_are_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_condition(text)
    assert e.value.message == f"Invalid ConditionExpression: {message}"


@pytest.mark.parametrize(
    ("text", "same_as"),
    [
        ("SET a = (b)", "SET a = b"),
        ("SET a = (b + :v)", "SET a = b + :v"),
        ("SET a = (b) - (:v)", "SET a = b - :v"),
        ("SET a = ((b.c.d)+(e))", "SET a = b.c.d + e"),  # dynalite: not a syntax error
        ("SET a = list_append((b), :v), c = (:v)", "SET a = list_append(b, :v), c = :v"),
        ("SET a = if_not_exists((a), (:v)) REMOVE c", "SET a = if_not_exists(a, :v) REMOVE c"),
    ],
)
def test_update_operands_take_parentheses(text: str, same_as: str) -> None:
    assert parse_update(text) == parse_update(same_as)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SET a = ((b))", "The expression has redundant parentheses;"),
        ("SET a = b + ((:v))", "The expression has redundant parentheses;"),
        ("SET a = b + (c + d)", 'Syntax error; token: "+", near: "c + d"'),
        ("SET a = b + c + d", 'Syntax error; token: "+", near: "c + d"'),
        ("SET (a = (b + c))", 'Syntax error; token: "(", near: "SET (a"'),
        ("SET a = (b.c).d + e", 'Syntax error; token: ".", near: ").d"'),
        ("SET a = (b.c)[0] + e", 'Syntax error; token: "[", near: ")[0"'),
        ("SET a = list_append((a = b), c)", 'Syntax error; token: ",", near: "), c"'),
        ("REMOVE (a)", 'Syntax error; token: "(", near: "REMOVE (a"'),
    ],
)
def test_update_parentheses_refused(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_update(text)
    assert e.value.message == f"Invalid UpdateExpression: {message}"


def test_deep_nesting_is_refused_by_the_operator_limit_before_parentheses_are_checked() -> None:
    # Checking parentheses recurses: 1000 NOTs must meet the 300-operator limit first (they
    # once hit Python's recursion limit there).
    with pytest.raises(ValidationError, match="too many operators; operator count: 1001"):
        parse_condition("NOT " * 1000 + "a = :v")
    with pytest.raises(ValidationError, match="too many operators"):
        parse_condition("NOT (" * 600 + "a = :v" + ")" * 600)
