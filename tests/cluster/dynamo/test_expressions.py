"""Parsing of the four expression kinds, their errors, placeholders and the parse cache."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.dynamo.expressions import (
    MAX_EXPRESSION_BYTES,
    check_placeholders_used,
    parse_condition,
    parse_projection,
    parse_update,
)
from cluster.dynamo.keycondition import parse_key_condition
from cluster.dynamo.nodes import (
    AddAction,
    And,
    Arithmetic,
    AttributeExists,
    AttributeNotExists,
    AttributeType,
    BeginsWith,
    Between,
    Compare,
    Contains,
    DeleteAction,
    IfNotExists,
    In,
    KeyCondition,
    ListAppend,
    Not,
    Or,
    Path,
    Projection,
    RemoveAction,
    SetAction,
    Size,
    SortCondition,
    UpdateExpression,
    ValueRef,
)
from cluster.dynamo.reserved import RESERVED_WORDS, is_reserved
from cluster.dynamo.values import ValidationError


def P(*elements: str | int) -> Path:
    return Path(elements)


def V(name: str) -> ValueRef:
    return ValueRef(name)


def eq(path: str, value: str) -> Compare:
    return Compare("=", P(path), V(value))


# --- conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["=", "<>", "<", "<=", ">", ">="])
def test_comparators(op: str) -> None:
    assert parse_condition(f"a {op} :v") == Compare(op, P("a"), V(":v"))  # type: ignore[arg-type]


def test_operands_paths_and_placeholders() -> None:
    assert parse_condition("#a.b[2].c = :v") == Compare("=", P("#a", "b", 2, "c"), V(":v"))
    assert parse_condition("a[0][1] = #b") == Compare("=", P("a", 0, 1), P("#b"))
    assert parse_condition("size(a.b) > :n") == Compare(">", Size(P("a", "b")), V(":n"))
    assert str(P("#a", "b", 2, "c")) == "#a.b[2].c"


def test_between_in_and_functions() -> None:
    assert parse_condition("a BETWEEN :lo AND :hi") == Between(P("a"), V(":lo"), V(":hi"))
    assert parse_condition("a IN (:x, b, size(c))") == In(P("a"), (V(":x"), P("b"), Size(P("c"))))
    assert parse_condition("attribute_exists(a.b)") == AttributeExists(P("a", "b"))
    assert parse_condition("attribute_not_exists(#k)") == AttributeNotExists(P("#k"))
    assert parse_condition("attribute_type(a, :t)") == AttributeType(P("a"), V(":t"))
    assert parse_condition("begins_with(a, :p)") == BeginsWith(P("a"), V(":p"))
    assert parse_condition("contains(a, b)") == Contains(P("a"), P("b"))


def test_precedence_not_and_or() -> None:
    a, b, c = eq("a", ":v"), eq("b", ":v"), eq("c", ":v")
    assert parse_condition("a = :v OR b = :v AND c = :v") == Or(a, And(b, c))
    assert parse_condition("a = :v AND b = :v OR c = :v") == Or(And(a, b), c)
    assert parse_condition("NOT a = :v AND b = :v") == And(Not(a), b)
    assert parse_condition("NOT (a = :v AND b = :v)") == Not(And(a, b))
    assert parse_condition("(a = :v OR b = :v) AND c = :v") == And(Or(a, b), c)
    assert parse_condition("a = :v AND b = :v AND c = :v") == And(And(a, b), c)
    assert parse_condition("x BETWEEN :l AND :h AND c = :v") == And(
        Between(P("x"), V(":l"), V(":h")), c
    )


def test_keywords_are_case_insensitive() -> None:
    assert parse_condition("not a = :v and b = :v or c = :v") == parse_condition(
        "NOT a = :v AND b = :v OR c = :v"
    )
    assert parse_condition("a between :l And :h") == Between(P("a"), V(":l"), V(":h"))
    assert parse_condition("a in (:x)") == In(P("a"), (V(":x"),))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = ", 'Invalid ConditionExpression: Syntax error; token: "<EOF>", near: "="'),
        ("a = :v AND", 'Syntax error; token: "<EOF>", near: "AND"'),
        ("a = b = c", 'Syntax error; token: "=", near: "b = c"'),
        ("a", 'Syntax error; token: "<EOF>"'),
        ("a = :v $", 'Syntax error; token: "$"'),
        ("a[x] = :v", 'Syntax error; token: "x"'),
        ("", "Invalid ConditionExpression: The expression can not be empty;"),
        ("  ", "The expression can not be empty;"),
        ("foo(a)", "Invalid ConditionExpression: Invalid function name; function: foo"),
        ("size(a)", "not allowed to be used this way in an expression; function: size"),
        ("if_not_exists(a, :v) = :v", "function: if_not_exists"),
        (
            "attribute_exists(:v)",
            "requires a document path; operator or function: attribute_exists",
        ),
        ("begins_with(a)", "operator or function: begins_with, number of operands: 1"),
        ("attribute_type(a, b)", "operator or function: attribute_type"),
        ("a = size(size(b))", "requires a document path; operator or function: size"),
        (
            "size(contains(a, b)) > a",
            "The function is not allowed to be used this way in an expression; function: contains",
        ),
        ("size(whatever(a)) > a", "Invalid function name; function: whatever"),
        ("a = :v SET b = :v", 'Syntax error; token: "SET"'),
    ],
)
def test_condition_errors(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_condition(text)
    assert message in e.value.message


def test_error_names_the_expression_kind() -> None:
    with pytest.raises(ValidationError, match=r"^Invalid FilterExpression: Syntax error"):
        parse_condition("a =", "FilterExpression")
    with pytest.raises(ValidationError, match=r"^Invalid UpdateExpression: Syntax error"):
        parse_update("SET a")
    with pytest.raises(ValidationError, match=r"^Invalid ProjectionExpression: Syntax error"):
        parse_projection("a,")


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_update, "SET status = :s", "Invalid UpdateExpression: {} status"),
        (parse_update, "SET a = :a REMOVE b.Data", "Invalid UpdateExpression: {} Data"),
        (parse_projection, "a, m.name, l[0].value", "Invalid ProjectionExpression: {} name"),
        (parse_condition, "a.b = :v AND Size > :v", "Invalid ConditionExpression: {} Size"),
        (parse_condition, "attribute_exists(comment)", "Invalid ConditionExpression: {} comment"),
    ],
)
def test_reserved_words_are_refused_as_literal_names(parse: Any, text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse(text)
    assert e.value.message == message.format(
        "Attribute name is a reserved keyword; reserved keyword:"
    )


def test_reserved_words_are_fine_as_placeholders_and_functions() -> None:
    assert parse_update("SET #status = :s").actions == (
        SetAction(Path(("#status",)), ValueRef(":s")),
    )
    assert parse_condition("size(a) > :n AND begins_with(b, :p)")
    assert parse_projection("statuses, datum, ab")  # only whole words are reserved
    assert is_reserved("STATUS") and is_reserved("ttl") and not is_reserved("pk")
    assert len(RESERVED_WORDS) == 573


def test_expression_size_limit() -> None:
    text = " OR ".join(f"a{i} = :v" for i in range(MAX_EXPRESSION_BYTES // 8))
    with pytest.raises(ValidationError, match="Expression size has exceeded the maximum"):
        parse_condition(text)


# --- updates -------------------------------------------------------------------------------


def test_update_clauses() -> None:
    ast = parse_update(
        "SET a = :v, b = b + :one, c = c - :one, d = if_not_exists(d, :z),"
        " e = list_append(e, :l) REMOVE f, g[1] ADD h :n DELETE i :s"
    )
    assert ast == UpdateExpression(
        (
            SetAction(P("a"), V(":v")),
            SetAction(P("b"), Arithmetic("+", P("b"), V(":one"))),
            SetAction(P("c"), Arithmetic("-", P("c"), V(":one"))),
            SetAction(P("d"), IfNotExists(P("d"), V(":z"))),
            SetAction(P("e"), ListAppend(P("e"), V(":l"))),
            RemoveAction(P("f")),
            RemoveAction(P("g", 1)),
            AddAction(P("h"), V(":n")),
            DeleteAction(P("i"), V(":s")),
        )
    )


def test_update_clauses_in_any_order_and_case() -> None:
    ast = parse_update("remove x add y :n set z = :v")
    assert ast.actions == (
        RemoveAction(P("x")),
        AddAction(P("y"), V(":n")),
        SetAction(P("z"), V(":v")),
    )


def test_update_nested_functions() -> None:
    ast = parse_update(
        "SET l = list_append(if_not_exists(l, :empty), :v), n = if_not_exists(n, :z) + :one"
    )
    assert ast.actions == (
        SetAction(P("l"), ListAppend(IfNotExists(P("l"), V(":empty")), V(":v"))),
        SetAction(P("n"), Arithmetic("+", IfNotExists(P("n"), V(":z")), V(":one"))),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SET a = :v SET b = :v", 'The "SET" section can only be used once in an update'),
        ("REMOVE a REMOVE b", 'The "REMOVE" section can only be used once'),
        ("SET a = size(b)", "The function is not allowed in an update expression; function: size"),
        ("SET a = contains(b, :v)", "not allowed in an update expression; function: contains"),
        ("SET a = nope(b)", "Invalid function name; function: nope"),
        (
            "SET a = if_not_exists(:v, :w)",
            "requires a document path; operator or function: if_not_exists",
        ),
        ("SET a = list_append(:v)", "function: list_append, number of operands: 1"),
        ("SET a = b + c + d", 'Syntax error; token: "+"'),
        ("ADD a", 'Syntax error; token: "<EOF>"'),
        ("ADD a b", 'Syntax error; token: "b"'),
        ("DELETE a", 'Syntax error; token: "<EOF>"'),
        ("a = :v", 'Syntax error; token: "a"'),
    ],
)
def test_update_errors(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_update(text)
    assert e.value.message.startswith("Invalid UpdateExpression: ")
    assert message in e.value.message


# --- projections ---------------------------------------------------------------------------


def test_projection() -> None:
    assert parse_projection("a, #b.c[1], d") == Projection((P("a"), P("#b", "c", 1), P("d")))


# --- caching -------------------------------------------------------------------------------


def test_parses_are_cached_by_text() -> None:
    text = "attribute_not_exists(#v) OR #v < :max"
    assert parse_condition(text) is parse_condition(text)
    assert parse_condition(text) is parse_condition(text, "ConditionExpression")
    assert parse_update("SET a = :v") is parse_update("SET a = :v")
    assert parse_projection("a, b") is parse_projection("a, b")
    assert parse_condition(text, "FilterExpression") == parse_condition(text)


# --- key conditions ------------------------------------------------------------------------

KEY_VALUES = {":p": {"S": "u1"}, ":a": {"N": "1"}, ":b": {"N": "5"}, ":s": {"S": "x"}}


@pytest.mark.parametrize(
    ("text", "sort"),
    [
        ("pk = :p", None),
        ("pk = :p AND sk = :a", SortCondition("sk", "=", ({"N": "1"},))),
        ("pk = :p AND sk < :a", SortCondition("sk", "<", ({"N": "1"},))),
        ("pk = :p AND sk <= :a", SortCondition("sk", "<=", ({"N": "1"},))),
        ("pk = :p AND sk > :a", SortCondition("sk", ">", ({"N": "1"},))),
        ("pk = :p AND sk >= :a", SortCondition("sk", ">=", ({"N": "1"},))),
        ("pk = :p AND :a < sk", SortCondition("sk", ">", ({"N": "1"},))),
        (
            "pk = :p AND sk BETWEEN :a AND :b",
            SortCondition("sk", "BETWEEN", ({"N": "1"}, {"N": "5"})),
        ),
        ("begins_with(sk, :s) AND pk = :p", SortCondition("sk", "begins_with", ({"S": "x"},))),
        ("(pk = :p) and (sk = :a)", SortCondition("sk", "=", ({"N": "1"},))),
    ],
)
def test_key_conditions(text: str, sort: SortCondition | None) -> None:
    assert parse_key_condition(text, None, KEY_VALUES, "pk", "sk") == KeyCondition(
        "pk", {"S": "u1"}, sort
    )


def test_key_condition_with_placeholder_names() -> None:
    got = parse_key_condition("#k = :p", {"#k": "pk"}, KEY_VALUES, "pk")
    assert got == KeyCondition("pk", {"S": "u1"}, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sk = :a", "Query condition missed key schema element: pk"),
        ("pk < :p", "Query key condition not supported"),
        ("begins_with(pk, :p)", "Query key condition not supported"),
        ("pk = :p AND extra = :a", "Query key condition not supported"),
        ("pk = :p AND pk = :p", "KeyConditionExpressions must only contain one condition per key"),
        ("pk = :p AND sk > :a AND sk < :b", "must only contain one condition per key"),
        ("pk = :p OR sk = :a", "Invalid operator used in KeyConditionExpression: OR"),
        ("pk = :p AND sk <> :a", "Invalid operator used in KeyConditionExpression: <>"),
        ("pk = :p AND NOT sk = :a", "Invalid operator used in KeyConditionExpression: NOT"),
        ("pk = :p AND sk IN (:a)", "Invalid operator used in KeyConditionExpression: IN"),
        ("pk = :p AND attribute_exists(sk)", "KeyConditionExpression: attribute_exists"),
        ("pk = :p AND contains(sk, :s)", "KeyConditionExpression: contains"),
        ("pk = :p AND sk = extra", "must compare a key attribute with expression attribute"),
        ("pk.x = :p", "Query key condition not supported"),
        ("pk = :p AND sk BETWEEN :b AND :a", "requires upper bound to be greater than or equal"),
        ("pk = :nope", "attribute value used in expression is not defined; attribute value: :nope"),
        (
            "#nope = :p",
            "attribute name used in the document path is not defined; attribute name: #nope",
        ),
        ("pk = ", 'Invalid KeyConditionExpression: Syntax error; token: "<EOF>"'),
    ],
)
def test_key_condition_errors(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_key_condition(text, None, KEY_VALUES, "pk", "sk")
    assert message in e.value.message


# --- placeholders --------------------------------------------------------------------------


def test_placeholders_used_across_expressions() -> None:
    check_placeholders_used(
        {"#a": "a", "#b": "b"},
        {":v": {"S": "x"}, ":w": {"N": "1"}},
        ["#a = :v", None, "SET #b = :w"],
    )
    check_placeholders_used(None, None, [None, "a = b"])


@pytest.mark.parametrize(
    ("names", "values", "expressions", "message"),
    [
        (
            None,
            {":v": {"S": "x"}, ":x": {"S": "y"}},
            ["a = :v"],
            "Value provided in ExpressionAttributeValues unused in expressions: keys: {:x}",
        ),
        (
            {"#a": "a", "#b": "b", "#c": "c"},
            None,
            ["#a = b"],
            "Value provided in ExpressionAttributeNames unused in expressions: keys: {#b, #c}",
        ),
        (
            None,
            {":v": {"S": "x"}},
            ["a = :v AND b = :x"],
            "An expression attribute value used in expression is not defined; attribute value: :x",
        ),
        (
            {"#a": "a"},
            None,
            ["#a = #b"],
            "An expression attribute name used in the document path is not defined; "
            "attribute name: #b",
        ),
        ({}, None, ["a = b"], "ExpressionAttributeNames must not be empty"),
        (None, {}, ["a = b"], "ExpressionAttributeValues must not be empty"),
        (
            None,
            {":v": {"S": "x"}},
            [None, None],
            "ExpressionAttributeValues can only be specified when using expressions",
        ),
        (
            None,
            {"v": {"S": "x"}},
            ["a = :v"],
            'ExpressionAttributeValues contains invalid key: Syntax error; key: "v"',
        ),
        (
            None,
            {":v": {"SS": []}},
            ["a = :v"],
            "ExpressionAttributeValues contains invalid value: One or more parameter values "
            "were invalid: An string set  may not be empty",
        ),
        ({"#a": ""}, None, ["#a = b"], "ExpressionAttributeNames contains invalid value"),
    ],
)
def test_placeholder_errors(
    names: dict[str, str] | None,
    values: dict[str, dict[str, object]] | None,
    expressions: list[str | None],
    message: str,
) -> None:
    with pytest.raises(ValidationError) as e:
        check_placeholders_used(names, values, expressions)
    assert message in e.value.message
