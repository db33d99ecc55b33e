"""Evaluating expression ASTs against items: conditions, updates and projections.

The storage node's state machine runs these at apply time, so they are deterministic and pure:
inputs are never mutated and the result depends only on the arguments. Placeholders in the AST
are resolved here against ``ExpressionAttributeNames`` / ``ExpressionAttributeValues``.

    item = {"id": {"S": "a"}, "n": {"N": "1"}}
    cond = parse_condition("attribute_exists(id) AND n < :max")
    evaluate_condition(cond, item, None, {":max": {"N": "5"}})  # -> True
    update = parse_update("SET n = n + :one REMOVE gone")
    apply_update(update, item, None, {":one": {"N": "1"}}, key_names=("id",))
    # -> {"id": {"S": "a"}, "n": {"N": "2"}}
    apply_projection(parse_projection("n"), item, None)  # -> {"n": {"N": "1"}}
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cluster.dynamo.expressions import resolve_path, resolve_value
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
    Condition,
    Contains,
    DeleteAction,
    IfNotExists,
    In,
    ListAppend,
    Not,
    Operand,
    Or,
    Path,
    Projection,
    RemoveAction,
    SetAction,
    UpdateAction,
    UpdateExpression,
    UpdateOperand,
    ValueRef,
)
from cluster.dynamo.values import (
    ALL_TYPES,
    SET_TYPES,
    AttributeValue,
    Item,
    TypeMismatchError,
    ValidationError,
    add_numbers,
    compare_values,
    decode_binary,
    set_member_key,
    subtract_numbers,
    type_of,
    values_equal,
)

Names = Mapping[str, str] | None
Values = Mapping[str, AttributeValue] | None
ResolvedPath = tuple[str | int, ...]

_ORDERINGS: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}
#: DynamoDB's names for attribute types in its error messages.
TYPE_NAMES = {
    "S": "STRING",
    "N": "NUMBER",
    "B": "BINARY",
    "BOOL": "BOOLEAN",
    "NULL": "NULL",
    "L": "LIST",
    "M": "MAP",
    "SS": "SET OF STRING",
    "NS": "SET OF NUMBER",
    "BS": "SET OF BINARY",
}
_MISSING = "The provided expression refers to an attribute that does not exist in the item"
_WRONG_TYPE = "An operand in the update expression has an incorrect data type"
_BAD_PATH = "The document path provided in the update expression is invalid for update"


@dataclass(frozen=True, slots=True)
class _Scope:
    """What an expression is evaluated against: the item and the placeholder maps."""

    item: Mapping[str, AttributeValue]
    names: Names
    values: Values

    def lookup(self, path: Path) -> AttributeValue | None:
        return lookup(self.item, resolve_path(path, self.names))

    def value(self, ref: ValueRef) -> AttributeValue:
        return resolve_value(ref, self.values)


def lookup(item: Mapping[str, AttributeValue], path: ResolvedPath) -> AttributeValue | None:
    """The value at a resolved path, or None if any step is missing or of the wrong type."""
    found: AttributeValue | None = item.get(str(path[0]))
    for element in path[1:]:
        if found is None:
            return None
        found = _child(found, element)
    return found


def _child(av: AttributeValue, element: str | int) -> AttributeValue | None:
    if isinstance(element, int):
        members = av.get("L")
        return members[element] if members is not None and element < len(members) else None
    entries = av.get("M")
    return entries.get(element) if entries is not None else None


# --- conditions ----------------------------------------------------------------------------


def evaluate_condition(
    ast: Condition, item: Mapping[str, AttributeValue] | None, names: Names, values: Values
) -> bool:
    """Whether ``item`` (None: no item) satisfies a condition.

    A missing attribute makes ``=``, ordering comparisons, BETWEEN, IN and the functions false
    (and ``attribute_not_exists`` true); like DynamoDB, ``missing <> :v`` is true. Comparing
    values of different types is false, not an error.
    """
    return _holds(ast, _Scope(item or {}, names, values))


def _holds(ast: Condition, scope: _Scope) -> bool:
    match ast:
        case And(left, right):
            return _holds(left, scope) and _holds(right, scope)
        case Or(left, right):
            return _holds(left, scope) or _holds(right, scope)
        case Not(inner):
            return not _holds(inner, scope)
        case Compare(op, left, right):
            return _compare(op, _operand(left, scope), _operand(right, scope))
        case Between(subject, low, high):
            x = _operand(subject, scope)
            return _compare(">=", x, _operand(low, scope)) and _compare(
                "<=", x, _operand(high, scope)
            )
        case In(subject, choices):
            x = _operand(subject, scope)
            return any(_compare("=", x, _operand(c, scope)) for c in choices)
        case AttributeExists(path):
            return scope.lookup(path) is not None
        case AttributeNotExists(path):
            return scope.lookup(path) is None
        case AttributeType(path, ref):
            return _has_type(scope.lookup(path), scope.value(ref))
        case BeginsWith(path, prefix):
            return _begins_with(_operand(path, scope), _operand(prefix, scope))
        case Contains(path, needle):
            return _contains(_operand(path, scope), _operand(needle, scope))
    raise AssertionError(f"not a condition: {ast!r}")


def _operand(operand: Operand, scope: _Scope) -> AttributeValue | None:
    if isinstance(operand, Path):
        return scope.lookup(operand)
    if isinstance(operand, ValueRef):
        return scope.value(operand)
    if isinstance(operand.path, ValueRef):
        return _size(scope.value(operand.path))
    return _size(scope.lookup(operand.path))


def _size(av: AttributeValue | None) -> AttributeValue | None:
    """``size()``: characters of S, bytes of B, members of sets, L and M; else undefined."""
    if av is None:
        return None
    kind = type_of(av)
    if kind == "B":
        return {"N": str(len(decode_binary(av["B"])))}
    if kind in ("S", "L", "M", *SET_TYPES):
        return {"N": str(len(av[kind]))}
    return None


def _compare(op: str, left: AttributeValue | None, right: AttributeValue | None) -> bool:
    if op in ("=", "<>"):
        equal = left is not None and right is not None and values_equal(left, right)
        return equal if op == "=" else not equal
    if left is None or right is None:
        return False
    try:
        return _ORDERINGS[op](compare_values(left, right))
    except TypeMismatchError:
        return False


def _has_type(av: AttributeValue | None, wanted: AttributeValue) -> bool:
    name = wanted.get("S")
    if name not in ALL_TYPES:
        raise ValidationError(
            f"Invalid attribute type name found; type: {name or type_of(wanted)}, "
            f"valid types: {{ B,NULL,SS,BOOL,L,BS,N,NS,S,M }}"
        )
    return av is not None and type_of(av) == name


def _begins_with(av: AttributeValue | None, prefix: AttributeValue | None) -> bool:
    if av is None or prefix is None or type_of(av) != type_of(prefix):
        return False
    if type_of(av) == "S":
        return bool(av["S"].startswith(prefix["S"]))
    if type_of(av) == "B":
        return decode_binary(av["B"]).startswith(decode_binary(prefix["B"]))
    return False


def _contains(av: AttributeValue | None, needle: AttributeValue | None) -> bool:
    if av is None or needle is None:
        return False
    kind, wanted = type_of(av), type_of(needle)
    if kind == wanted == "S":
        return bool(needle["S"] in av["S"])
    if kind == wanted == "B":
        return decode_binary(needle["B"]) in decode_binary(av["B"])
    if SET_TYPES.get(kind) == wanted:
        key = set_member_key(kind, needle[wanted])
        return any(set_member_key(kind, m) == key for m in av[kind])
    if kind == "L":
        return any(values_equal(member, needle) for member in av["L"])
    return False


# --- updates -------------------------------------------------------------------------------


def validate_update(
    ast: UpdateExpression, names: Names, values: Values, key_names: Collection[str] = ()
) -> None:
    """The item-independent checks of ``apply_update``, for the router to run up front.

    Placeholders are defined, no path overlaps another, no key attribute is touched, ADD gets
    a number or a set and DELETE a set.
    """
    _bind_update(ast, names, values, key_names)


def apply_update(
    ast: UpdateExpression,
    item: Mapping[str, AttributeValue] | None,
    names: Names,
    values: Values,
    key_names: Collection[str] = (),
) -> Item:
    """The item after an update (``item`` None: it did not exist); ``item`` is not changed.

    Every operand is read from the item as it was before the update, as DynamoDB does, so
    ``SET a = b, b = a`` swaps. Removals run last, from the highest list index down.
    """
    before: Mapping[str, AttributeValue] = item or {}
    scope = _Scope(before, names, values)
    planned = [
        (path, _updated_value(action, path, scope))
        for action, path in _bind_update(ast, names, values, key_names)
    ]
    after: Item = copy.deepcopy(dict(before))
    # Assignments in path order, so that several list indexes past the end are appended in
    # index order, as DynamoDB does (paths never overlap, so the order changes nothing else).
    for path, new in sorted(planned, key=lambda p: _assign_order(p[0])):
        if new is not None:
            _assign(after, path, copy.deepcopy(new))
    for path in sorted((p for p, new in planned if new is None), key=_removal_order):
        _remove(after, path)
    return after


def _bind_update(
    ast: UpdateExpression, names: Names, values: Values, key_names: Collection[str]
) -> list[tuple[UpdateAction, ResolvedPath]]:
    bound = [(action, resolve_path(action.path, names)) for action in ast.actions]
    for action, path in bound:
        if path[0] in key_names:
            raise ValidationError(
                "One or more parameter values were invalid: Cannot update attribute "
                f"{path[0]}. This attribute is part of the key"
            )
        _check_action_operands(action, names, values)
    check_overlaps([path for _, path in bound], "UpdateExpression")
    return bound


def _check_action_operands(action: UpdateAction, names: Names, values: Values) -> None:
    if isinstance(action, SetAction):
        for operand in _update_operands(action.value):
            if isinstance(operand, Path):
                resolve_path(operand, names)
            else:
                resolve_value(operand, values)
        _check_set_constants(action.value, values)
    elif isinstance(action, AddAction | DeleteAction):
        kind = type_of(resolve_value(action.value, values))
        allowed = {"N", *SET_TYPES} if isinstance(action, AddAction) else set(SET_TYPES)
        if kind not in allowed:
            operator = "ADD" if isinstance(action, AddAction) else "DELETE"
            raise ValidationError(
                "Invalid UpdateExpression: Incorrect operand type for operator or function; "
                f"operator: {operator}, operand type: {TYPE_NAMES[kind]}, "
                f"typeSet: ALLOWED_FOR_{operator}_OPERAND"
            )


def _check_set_constants(value: UpdateOperand | Arithmetic, values: Values) -> None:
    """Constants of the wrong type where DynamoDB checks them up front: a non-list in
    ``list_append``. (A non-number in ``+``/``-`` fails when the update is applied.)"""
    match value:
        case Arithmetic(_, left, right):
            for side in (left, right):
                _check_set_constants(side, values)
        case ListAppend(first, second):
            for side in (first, second):
                _check_constant(side, values, "L", "list_append")
                _check_set_constants(side, values)
        case IfNotExists(_, default):
            _check_set_constants(default, values)


def _check_constant(operand: UpdateOperand, values: Values, wanted: str, function: str) -> None:
    if isinstance(operand, ValueRef) and values is not None and operand.name in values:
        kind = type_of(values[operand.name])
        if kind != wanted:
            raise ValidationError(
                "Invalid UpdateExpression: Incorrect operand type for operator or function; "
                f"operator or function: {function}, operand type: {kind}"
            )


def _update_operands(value: UpdateOperand | Arithmetic) -> Iterator[Path | ValueRef]:
    """The paths and value placeholders inside a SET action's value."""
    match value:
        case Arithmetic(_, left, right) | ListAppend(left, right):
            yield from _update_operands(left)
            yield from _update_operands(right)
        case IfNotExists(path, default):
            yield path
            yield from _update_operands(default)
        case Path() | ValueRef():
            yield value


def _updated_value(
    action: UpdateAction, path: ResolvedPath, scope: _Scope
) -> AttributeValue | None:
    """The value an action leaves at its path; None means the path is removed."""
    if isinstance(action, SetAction):
        return _set_value(action.value, scope)
    if isinstance(action, RemoveAction):
        return None
    current = lookup(scope.item, path)
    given = scope.value(action.value)
    if isinstance(action, AddAction):
        return _add(current, given)
    return _delete(current, given)


def _set_value(value: UpdateOperand | Arithmetic, scope: _Scope) -> AttributeValue:
    match value:
        case Arithmetic(op, left, right):
            a, b = _number(_set_value(left, scope)), _number(_set_value(right, scope))
            return {"N": add_numbers(a, b) if op == "+" else subtract_numbers(a, b)}
        case ListAppend(first, second):
            head, tail = _set_value(first, scope), _set_value(second, scope)
            if type_of(head) != "L" or type_of(tail) != "L":
                raise ValidationError(_WRONG_TYPE)
            return {"L": [*head["L"], *tail["L"]]}
        case IfNotExists(path, default):
            found = scope.lookup(path)
            return found if found is not None else _set_value(default, scope)
        case ValueRef():
            return scope.value(value)
        case Path():
            found = scope.lookup(value)
            if found is None:
                raise ValidationError(_MISSING)
            return found
    raise AssertionError(f"not an update operand: {value!r}")


def _number(av: AttributeValue) -> str:
    if type_of(av) != "N":
        raise ValidationError(_WRONG_TYPE)
    return str(av["N"])


def _add(current: AttributeValue | None, given: AttributeValue) -> AttributeValue:
    """ADD: a missing attribute becomes ``given``; numbers sum; sets take the union."""
    if current is None:
        return given
    kind = type_of(given)
    if type_of(current) != kind:
        raise ValidationError(_WRONG_TYPE)
    if kind == "N":
        return {"N": add_numbers(current["N"], given["N"])}
    present = {set_member_key(kind, m) for m in current[kind]}
    extra = [m for m in given[kind] if set_member_key(kind, m) not in present]
    return {kind: [*current[kind], *extra]}


def _delete(current: AttributeValue | None, given: AttributeValue) -> AttributeValue | None:
    """DELETE: remove members from a set; an emptied set (or a missing one) disappears."""
    if current is None:
        return None
    kind = type_of(given)
    if type_of(current) != kind:
        raise ValidationError(_WRONG_TYPE)
    gone = {set_member_key(kind, m) for m in given[kind]}
    left = [m for m in current[kind] if set_member_key(kind, m) not in gone]
    return {kind: left} if left else None


def _container(item: Item, path: ResolvedPath) -> dict[str, Any] | list[Any]:
    """The map or list that holds the last element of ``path``; raise if it is not there."""
    holder: dict[str, Any] | list[Any] = item
    for element, following in itertools.pairwise(path):
        av = _child({"M": holder} if isinstance(holder, dict) else {"L": holder}, element)
        wanted = "L" if isinstance(following, int) else "M"
        if av is None or type_of(av) != wanted:
            raise ValidationError(_BAD_PATH)
        holder = av[wanted]
    return holder


def _assign(item: Item, path: ResolvedPath, av: AttributeValue) -> None:
    holder, last = _container(item, path), path[-1]
    if isinstance(holder, list) and isinstance(last, int):
        if last < len(holder):
            holder[last] = av
        else:
            holder.append(av)  # DynamoDB appends when the index is past the end
    elif isinstance(holder, dict) and isinstance(last, str):
        holder[last] = av


def _remove(item: Item, path: ResolvedPath) -> None:
    holder, last = _container(item, path), path[-1]
    if isinstance(holder, list) and isinstance(last, int):
        if last < len(holder):
            del holder[last]
    elif isinstance(holder, dict) and isinstance(last, str):
        holder.pop(last, None)


def _assign_order(path: ResolvedPath) -> tuple[tuple[int, str, int], ...]:
    return tuple((0, e, 0) if isinstance(e, str) else (1, "", e) for e in path)


def _removal_order(path: ResolvedPath) -> tuple[tuple[int, str, int], ...]:
    """Sort key putting higher list indexes first, so earlier removals don't shift later ones."""
    return tuple((0, e, 0) if isinstance(e, str) else (1, "", -e) for e in path)


# --- paths shared by updates and projections ----------------------------------------------


def check_overlaps(paths: list[ResolvedPath], kind: str) -> None:
    """Raise if one path is a prefix of another, or two paths use one step as map and list."""
    for i, second in enumerate(paths):
        for first in paths[:i]:
            shared = next(
                (k for k, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), None
            )
            if shared is None:
                raise ValidationError(
                    f"Invalid {kind}: Two document paths overlap with each other; must remove "
                    f"or rewrite one of these paths; path one: {_show(first)}, "
                    f"path two: {_show(second)}"
                )
            if type(first[shared]) is not type(second[shared]):
                raise ValidationError(
                    f"Invalid {kind}: Two document paths conflict with each other; must "
                    f"remove or rewrite one of these paths; path one: {_show(first)}, "
                    f"path two: {_show(second)}"
                )


def _show(path: ResolvedPath) -> str:
    return "[" + ", ".join(f"[{e}]" if isinstance(e, int) else e for e in path) + "]"


# --- projections ---------------------------------------------------------------------------

_Trie = dict[str | int, "_Trie | None"]  # None marks a projected path's end


def apply_projection(ast: Projection, item: Mapping[str, AttributeValue], names: Names) -> Item:
    """The parts of ``item`` named by a projection.

    Nested paths keep their nesting: ``a.b`` yields ``{"a": {"M": {"b": ...}}}``; list
    elements picked by index come back as a shorter list, in index order.
    """
    paths = [resolve_path(p, names) for p in ast.paths]
    check_overlaps(paths, "ProjectionExpression")
    trie: _Trie = {}
    for path in paths:
        node = trie
        for element in path[:-1]:
            child = node.get(element)
            if child is None:
                child = node[element] = {}
            node = child
        node[path[-1]] = None
    return _pick_entries(item, trie)


def _pick_entries(entries: Mapping[str, AttributeValue], trie: _Trie) -> Item:
    picked: Item = {}
    for key, sub in trie.items():
        if isinstance(key, str) and key in entries:
            value = _pick(entries[key], sub)
            if value is not None:
                picked[key] = value
    return picked


def _pick(av: AttributeValue, trie: _Trie | None) -> AttributeValue | None:
    if trie is None:
        return copy.deepcopy(av)
    if type_of(av) == "M":
        entries = _pick_entries(av["M"], trie)
        return {"M": entries} if entries else None
    if type_of(av) == "L":
        members = av["L"]
        indexes = sorted(k for k in trie if isinstance(k, int) and k < len(members))
        chosen = [p for i in indexes if (p := _pick(members[i], trie[i])) is not None]
        return {"L": chosen} if chosen else None
    return None
