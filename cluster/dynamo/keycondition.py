"""KeyConditionExpression: a parsed condition shaped into a Query's key lookup.

The text is parsed by ``cluster.dynamo.expressions`` (one grammar for every expression); here
the AST must be ``pk = :v``, optionally ANDed with one condition on the sort key, and its
placeholders are resolved, so a Query gets a ``KeyCondition`` it can route and range-scan with.

    parse_key_condition("pk = :p AND begins_with(sk, :s)", None,
                        {":p": {"S": "u1"}, ":s": {"S": "2024-"}}, "pk", "sk")
    # -> KeyCondition("pk", {"S": "u1"}, SortCondition("sk", "begins_with", ({"S": "2024-"},)))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from cluster.dynamo.expressions import parse_condition, resolve_name, resolve_value
from cluster.dynamo.nodes import (
    And,
    BeginsWith,
    Between,
    Compare,
    Condition,
    In,
    KeyCondition,
    Not,
    Operand,
    Or,
    Path,
    SortCondition,
    ValueRef,
)
from cluster.dynamo.values import AttributeValue, TypeMismatchError, ValidationError, compare_values

_FLIPPED: dict[str, Literal["=", "<", "<=", ">", ">="]] = {
    "=": "=",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
}


def parse_key_condition(
    text: str,
    names: Mapping[str, str] | None,
    values: Mapping[str, AttributeValue] | None,
    partition_key: str,
    sort_key: str | None = None,
) -> KeyCondition:
    """Parse a KeyConditionExpression for a table keyed by ``partition_key`` [, ``sort_key``].

    It must be ``pk = :v``, optionally ANDed with one condition on the sort key (``= < <= > >=``,
    ``BETWEEN`` or ``begins_with``). Placeholders are resolved; the AST itself is cached.
    """
    terms = _conjuncts(parse_condition(text, "KeyConditionExpression"))
    found: dict[str, SortCondition] = {}
    for term in terms:
        condition = _key_term(term, names, values)
        if condition.name in found:
            raise ValidationError(  # DynamoDB's words, without the "Invalid ...:" prefix
                "KeyConditionExpressions must only contain one condition per key"
            )
        found[condition.name] = condition
    partition = found.pop(partition_key, None)
    if partition is None:
        raise ValidationError(f"Query condition missed key schema element: {partition_key}")
    sort = found.pop(sort_key, None) if sort_key is not None else None
    if partition.op != "=" or found:
        raise ValidationError("Query key condition not supported")
    return KeyCondition(partition_key, partition.values[0], sort)


def _conjuncts(condition: Condition) -> list[Condition]:
    if isinstance(condition, And):
        return _conjuncts(condition.left) + _conjuncts(condition.right)
    return [condition]


def _key_term(
    term: Condition, names: Mapping[str, str] | None, values: Mapping[str, AttributeValue] | None
) -> SortCondition:
    """One ``key <op> :value`` term as a (name, op, values) triple."""
    if isinstance(term, Compare) and term.op != "<>":
        op, subject, operands = term.op, term.left, [term.right]
        if isinstance(subject, ValueRef) and isinstance(term.right, Path):
            op, subject, operands = _FLIPPED[op], term.right, [subject]
        return _key_sort_condition(op, subject, operands, names, values)
    if isinstance(term, Between):
        return _key_sort_condition("BETWEEN", term.subject, [term.low, term.high], names, values)
    if isinstance(term, BeginsWith):
        return _key_sort_condition("begins_with", term.path, [term.prefix], names, values)
    raise ValidationError(
        f"Invalid KeyConditionExpression: Invalid operator used in KeyConditionExpression: "
        f"{_describe_operator(term)}"
    )


def _key_sort_condition(
    op: Literal["=", "<", "<=", ">", ">=", "BETWEEN", "begins_with"],
    subject: Operand,
    operands: list[Operand],
    names: Mapping[str, str] | None,
    values: Mapping[str, AttributeValue] | None,
) -> SortCondition:
    if not isinstance(subject, Path) or not all(isinstance(o, ValueRef) for o in operands):
        raise ValidationError(
            "Invalid KeyConditionExpression: a key condition must compare a key attribute "
            "with expression attribute values"
        )
    if len(subject.elements) != 1:
        raise ValidationError("Query key condition not supported")
    name = resolve_name(str(subject.elements[0]), names)
    resolved = tuple(resolve_value(o, values) for o in operands if isinstance(o, ValueRef))
    if op == "BETWEEN":
        _check_bounds(*resolved)
    return SortCondition(name, op, resolved)


def _check_bounds(low: AttributeValue, high: AttributeValue) -> None:
    try:
        inverted = compare_values(low, high) > 0
    except TypeMismatchError:
        return  # the caller's schema check reports the type
    if inverted:
        raise ValidationError(
            "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be "
            f"greater than or equal to lower bound; lower bound operand: AttributeValue: {low}, "
            f"upper bound operand: AttributeValue: {high}"
        )


def _describe_operator(term: Condition) -> str:
    if isinstance(term, Compare):
        return term.op
    names = {And: "AND", Or: "OR", Not: "NOT", In: "IN"}
    for cls, label in names.items():
        if isinstance(term, cls):
            return label
    return re.sub(r"(?<!^)([A-Z])", r"_\1", type(term).__name__).lower()
