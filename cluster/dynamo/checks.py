"""Request-time checks of parsed expressions, the ones DynamoDB makes before touching an item.

Parsing (``cluster.dynamo.expressions``) looks at the text alone; these checks also look at the
request's placeholder maps and the table's key, so a request DynamoDB refuses is refused up
front, whatever the items hold: constant operands of the wrong type (``a < :list``,
``begins_with(a, :number)``), BETWEEN with bounds of two types or the wrong way round, an IN
of more than 100 operands, an unknown ``attribute_type`` name, a FilterExpression of a Query on
a key attribute, and projections whose paths overlap, conflict or nest too deep.

    check_condition_operands(parse_condition("a BETWEEN :lo AND :hi"), {":lo": {"N": "5"},
                             ":hi": {"N": "1"}}, "ConditionExpression")   # ValidationError
    check_filter_keys(parse_condition("pk = :p", "FilterExpression"), None, ("pk", "sk"))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cluster.dynamo.evaluate import TYPE_NAMES, check_overlaps
from cluster.dynamo.expressions import resolve_name, resolve_path
from cluster.dynamo.nodes import (
    AttributeType,
    BeginsWith,
    Between,
    Compare,
    Condition,
    In,
    Operand,
    Projection,
    Size,
    ValueRef,
    compared_operands,
    paths_in,
    walk,
)
from cluster.dynamo.values import (
    ALL_TYPES,
    MAX_NESTING,
    AttributeValue,
    TypeMismatchError,
    ValidationError,
    compare_values,
    type_of,
)

_ORDERED = frozenset({"S", "N", "B"})
MAX_IN_OPERANDS = 100  # DynamoDB's limit on the list of an IN
_SIZED = frozenset({"S", "B", "SS", "NS", "BS", "L", "M"})  # what size() measures


def check_condition_operands(
    ast: Condition, values: Mapping[str, AttributeValue] | None, kind: str
) -> None:
    """Refuse constant operands DynamoDB refuses at parse time (undefined ones are skipped:
    the placeholder check reports those)."""
    for node in walk(ast):
        _check_sized_constants(node, values, kind)
        match node:
            case Compare(op, left, right) if op not in ("=", "<>"):
                for operand in (left, right):
                    _check_ordered(_constant(operand, values), op, kind)
            case Between(_, low, high):
                bounds = [_constant(low, values), _constant(high, values)]
                for bound in bounds:
                    _check_ordered(bound, "BETWEEN", kind)
                _check_bounds(bounds[0], bounds[1], kind)
            case In(_, choices) if len(choices) > MAX_IN_OPERANDS:
                raise ValidationError(
                    f"Invalid {kind}: Too many operands for the operator or function; operator "
                    f"or function: IN, number of operands: {len(choices)}"
                )
            case BeginsWith(subject, prefix):
                for operand in (subject, prefix):
                    av = {"N": "0"} if isinstance(operand, Size) else _constant(operand, values)
                    if av is not None and type_of(av) not in ("S", "B"):
                        raise ValidationError(
                            f"Invalid {kind}: Incorrect operand type for operator or function; "
                            f"operator or function: begins_with, operand type: {type_of(av)}"
                        )
            case AttributeType(_, ref):
                av = _constant(ref, values)
                if av is not None and type_of(av) != "S":  # the type's name is a string
                    raise ValidationError(
                        f"Invalid {kind}: Incorrect operand type for operator or function; "
                        f"operator or function: attribute_type, operand type: {type_of(av)}"
                    )
                name = av.get("S") if av is not None else None
                if av is not None and name not in ALL_TYPES:
                    raise ValidationError(
                        f"Invalid {kind}: Invalid attribute type name found; type: "
                        f"{name or type_of(av)}, valid types: {{ B,NULL,SS,BOOL,L,BS,N,NS,S,M }}"
                    )


def _check_sized_constants(
    node: Condition, values: Mapping[str, AttributeValue] | None, kind: str
) -> None:
    """``size(:v)`` measures a constant: it must be a string, binary, set, list or map."""
    for operand in compared_operands(node):
        if isinstance(operand, Size) and isinstance(operand.path, ValueRef):
            av = _constant(operand.path, values)
            if av is not None and type_of(av) not in _SIZED:
                raise ValidationError(
                    f"Invalid {kind}: Incorrect operand type for operator or function; "
                    f"operator or function: size, operand type: {type_of(av)}"
                )


def check_filter_keys(
    ast: Condition,
    names: Mapping[str, str] | None,
    key_names: Sequence[str],
    label: str = "Filter Expression",
) -> None:
    """A Query's FilterExpression (``label`` "QueryFilter" for the legacy parameter) may not
    name the table's key attributes; the first of ``key_names`` (hash, then range) named is
    reported, as DynamoDB does."""
    heads = {resolve_name(str(path.elements[0]), names) for path in paths_in(ast)}
    for key in key_names:
        if key in heads:
            raise ValidationError(
                f"{label} can only contain non-primary key attributes: Primary key attribute: {key}"
            )


def check_projection(ast: Projection, names: Mapping[str, str] | None) -> None:
    """Overlapping or conflicting paths and paths nested too deep, before any item is read."""
    paths = [resolve_path(p, names) for p in ast.paths]
    for path in paths:
        if len(path) > MAX_NESTING:
            raise ValidationError(
                "Invalid ProjectionExpression: The document path has too many nesting levels; "
                f"nesting levels: {len(path)}"
            )
    check_overlaps(paths, "ProjectionExpression")


def _constant(operand: Operand, values: Mapping[str, AttributeValue] | None) -> Any:
    if isinstance(operand, ValueRef) and values is not None:
        return values.get(operand.name)
    return None


def _check_ordered(av: AttributeValue | None, op: str, kind: str) -> None:
    if av is not None and type_of(av) not in _ORDERED:
        raise ValidationError(
            f"Invalid {kind}: Incorrect operand type for operator or function; operator: {op}, "
            f"operand type: {TYPE_NAMES.get(type_of(av), type_of(av))}"
        )


def _check_bounds(low: AttributeValue | None, high: AttributeValue | None, kind: str) -> None:
    if low is None or high is None:
        return
    if type_of(low) != type_of(high):
        raise ValidationError(
            f"Invalid {kind}: The BETWEEN operator requires same data type for lower and upper "
            f"bounds; lower bound operand: AttributeValue: {show_value(low)}, upper bound "
            f"operand: AttributeValue: {show_value(high)}"
        )
    try:
        inverted = compare_values(low, high) > 0
    except TypeMismatchError:
        return
    if inverted:
        raise ValidationError(
            f"Invalid {kind}: The BETWEEN operator requires upper bound to be greater than or "
            f"equal to lower bound; lower bound operand: AttributeValue: {show_value(low)}, "
            f"upper bound operand: AttributeValue: {show_value(high)}"
        )


def show_value(av: AttributeValue) -> str:
    """A value as DynamoDB prints it in messages: ``{N:5}``, ``{S:abc}``."""
    kind = type_of(av)
    return f"{{{kind}:{av[kind]}}}"
