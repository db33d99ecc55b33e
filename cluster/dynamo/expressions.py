"""DynamoDB expressions: parse condition, key condition, update and projection text into ASTs.

One lark grammar (LALR) covers ConditionExpression / FilterExpression, KeyConditionExpression,
UpdateExpression and ProjectionExpression. Parsing depends on the text alone, so ASTs keep their
``#name`` / ``:value`` placeholders and are cached by text; placeholders are resolved when an
AST is evaluated (``cluster.dynamo.evaluate``) against ``ExpressionAttributeNames`` and
``ExpressionAttributeValues``. Every error is a ``ValidationError`` with DynamoDB's wording.

    ast = parse_condition("attribute_not_exists(#v) OR #v < :max")
    parse_condition("attribute_not_exists(#v) OR #v < :max") is ast  # -> True (cached)
    check_placeholders_used({"#v": "version"}, {":max": {"N": "3"}}, [None, "#v < :max"])

KeyConditionExpressions are parsed with this grammar and then shaped into a key lookup by
``cluster.dynamo.keycondition``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput, UnexpectedToken

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
    Size,
    UpdateAction,
    UpdateExpression,
    UpdateOperand,
    ValueRef,
)
from cluster.dynamo.parens import Misplaced, strip_parentheses
from cluster.dynamo.reserved import is_reserved
from cluster.dynamo.values import (
    AttributeValue,
    SerializationError,
    ValidationError,
    validate_value,
)

ConditionKind = Literal["ConditionExpression", "FilterExpression", "KeyConditionExpression"]
MAX_EXPRESSION_BYTES = 4096
MAX_OPERATORS = 300

GRAMMAR = r"""
    // ConditionExpression, FilterExpression, KeyConditionExpression.
    // Precedence, loosest first: OR, AND, NOT, then comparisons, BETWEEN, IN and functions.
    ?condition: conjunction
              | condition _OR conjunction                       -> or_
    ?conjunction: negation
                | conjunction _AND negation                     -> and_
    ?negation: predicate
             | _NOT negation                                    -> not_
    ?predicate: operand comparator operand                      -> compare
              | operand _BETWEEN operand _AND operand           -> between
              | operand _IN "(" operand ("," operand)* ")"       -> in_
              | operand
    !comparator: "=" | "<>" | "<" | "<=" | ">" | ">="

    // Operands, shared by every kind. Which functions may appear where is checked afterwards,
    // and so is what a parenthesis holds (cluster.dynamo.parens): one "paren" node for
    // "(a = :v)" and "(a)" keeps the grammar LALR.
    ?operand: path | value | call | "(" condition ")"         -> paren
    call: NAME "(" [operand ("," operand)*] ")"
    path: (NAME | NAME_REF) ("." (NAME | NAME_REF) | "[" INDEX "]")*
    value: VALUE_REF

    // UpdateExpression: clauses in any order, each keyword at most once (checked afterwards).
    update: clause+
    ?clause: _SET set_action ("," set_action)*                 -> set_clause
           | _REMOVE path ("," path)*                           -> remove_clause
           | _ADD path value ("," path value)*                  -> add_clause
           | _DELETE path value ("," path value)*               -> delete_clause
    set_action: path "=" set_value
    ?set_value: set_operand
              | set_operand "+" set_operand                     -> plus
              | set_operand "-" set_operand                     -> minus
    ?set_operand: path | value | call | "(" set_value ")"      -> paren

    // ProjectionExpression
    projection: path ("," path)*

    _OR: "or"i
    _AND: "and"i
    _NOT: "not"i
    _BETWEEN: "between"i
    _IN: "in"i
    _SET: "set"i
    _REMOVE: "remove"i
    _ADD: "add"i
    _DELETE: "delete"i
    NAME: /[a-z][a-z0-9_]*/i
    NAME_REF: /#[a-z0-9_]+/i
    VALUE_REF: /:[a-z0-9_]+/i
    INDEX: /[0-9]+/
    %import common.WS
    %ignore WS
"""

# Parse-tree nodes that are an operator or a function call, for the 300-operator limit.
_OPERATOR_NODES = frozenset(
    {"or_", "and_", "not_", "compare", "between", "in_", "call", "plus", "minus"}
)

_PARSER = Lark(
    GRAMMAR, parser="lalr", start=["condition", "update", "projection"], propagate_positions=True
)
_NAME_REF = re.compile(r"#[A-Za-z0-9_]+")
_VALUE_REF = re.compile(r":[A-Za-z0-9_]+")
_ANY_REF = re.compile(r"[#:][A-Za-z0-9_]+")
# Tokens as DynamoDB's messages show them: "_" cannot start a name, so it is a token of its own
# ("__x" -> token "_", near "AND __").
_DISPLAY_TOKEN = re.compile(r"[#:][A-Za-z0-9_]+|[A-Za-z][A-Za-z0-9_]*|[0-9]+|<>|<=|>=|\S")


# --- parsing -------------------------------------------------------------------------------


def parse_condition(text: str, kind: ConditionKind = "ConditionExpression") -> Condition:
    """Parse a condition (``kind`` only changes the error messages); cached by text."""
    return _parse_condition(text, kind)


def parse_update(text: str) -> UpdateExpression:
    """Parse an UpdateExpression; cached by text."""
    return _parse_update(text)


def parse_projection(text: str) -> Projection:
    """Parse a ProjectionExpression; cached by text."""
    return _parse_projection(text)


class _Invalid(Exception):
    """A semantic error found while building the AST; the parser adds the expression kind."""


@functools.lru_cache(maxsize=4096)
def _parse_condition(text: str, kind: ConditionKind) -> Condition:
    tree = _parse_tree("condition", text, kind)
    with _reported_as(kind):
        return _build_condition(tree)


@functools.lru_cache(maxsize=4096)
def _parse_update(text: str) -> UpdateExpression:
    tree = _parse_tree("update", text, "UpdateExpression")
    with _reported_as("UpdateExpression"):
        return _build_update(tree)


@functools.lru_cache(maxsize=4096)
def _parse_projection(text: str) -> Projection:
    tree = _parse_tree("projection", text, "ProjectionExpression")
    with _reported_as("ProjectionExpression"):
        return _build_projection(tree)


def _parse_tree(start: str, text: str, kind: str) -> Tree[Token]:
    if not text.strip():
        raise ValidationError(f"Invalid {kind}: The expression can not be empty;")
    size = len(text.encode("utf-8"))
    if size > MAX_EXPRESSION_BYTES:
        raise ValidationError(
            f"Invalid {kind}: Expression size has exceeded the maximum allowed size; "
            f"expression size: {size}"
        )
    try:
        tree = _PARSER.parse(text, start=start)
    except UnexpectedInput as e:
        at_end = isinstance(e, UnexpectedToken) and e.token.type == "$END"
        raise _syntax_error(kind, text, None if at_end else e.pos_in_stream) from None
    # DynamoDB allows at most 300 operators and functions in an expression. The limit also
    # bounds how deeply an AST nests, so building and evaluating it (both recursive) cannot
    # exhaust the stack: "NOT NOT ... NOT a = :v" in 4 KB would otherwise nest 1000 deep.
    operators = sum(1 for t in tree.iter_subtrees() if t.data in _OPERATOR_NODES)
    if operators > MAX_OPERATORS:
        raise ValidationError(
            f"Invalid {kind}: The expression contains too many operators; "
            f"operator count: {operators}"
        )
    # Parentheses are checked and dropped once the operator limit bounds the depth (recursive).
    try:
        tree = strip_parentheses(tree, kind)
    except Misplaced as e:
        after = [m.start() for m in _DISPLAY_TOKEN.finditer(text) if m.start() >= e.pos]
        raise _syntax_error(kind, text, after[0] if after else None) from None
    # A reserved word used literally as an attribute name; the first one in the text is named.
    reserved = [
        t for p in tree.find_data("path") for t in _tokens(p) if t.type == "NAME" and is_reserved(t)
    ]
    if reserved:
        word = min(reserved, key=lambda t: t.start_pos or 0)
        raise ValidationError(
            f"Invalid {kind}: Attribute name is a reserved keyword; reserved keyword: {word}"
        )
    return tree


@contextmanager
def _reported_as(kind: str) -> Iterator[None]:
    try:
        yield
    except _Invalid as e:
        raise ValidationError(f"Invalid {kind}: {e}") from None


def _syntax_error(kind: str, text: str, pos: int | None) -> ValidationError:
    spans = [m.span() for m in _DISPLAY_TOKEN.finditer(text)]
    at = next((i for i, (s, e) in enumerate(spans) if pos is not None and s <= pos < e), None)
    if at is None:
        at, token = len(spans), "<EOF>"
    else:
        token = text[spans[at][0] : spans[at][1]]
    near = text[spans[max(at - 1, 0)][0] : spans[min(at + 1, len(spans) - 1)][1]]
    return ValidationError(f'Invalid {kind}: Syntax error; token: "{token}", near: "{near}"')


# --- building the AST from the parse tree --------------------------------------------------

_Node = Tree[Token] | Token
_CONDITION_FUNCTIONS = {
    "attribute_exists": 1,
    "attribute_not_exists": 1,
    "attribute_type": 2,
    "begins_with": 2,
    "contains": 2,
}
_UPDATE_FUNCTIONS = {"if_not_exists": 2, "list_append": 2}
_MISUSED = "The function is not allowed to be used this way in an expression"
_ALL_FUNCTIONS = {**_CONDITION_FUNCTIONS, **_UPDATE_FUNCTIONS, "size": 1}
_COMPARATORS: dict[str, Literal["=", "<>", "<", "<=", ">", ">="]] = {
    "=": "=",
    "<>": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}


def _build_condition(node: _Node) -> Condition:
    """The condition AST for a ``condition`` parse tree."""
    tree = _tree(node)
    kids = tree.children
    if tree.data == "or_":
        return Or(_build_condition(kids[0]), _build_condition(kids[1]))
    if tree.data == "and_":
        return And(_build_condition(kids[0]), _build_condition(kids[1]))
    if tree.data == "not_":
        return Not(_build_condition(kids[0]))
    if tree.data == "compare":
        op = _COMPARATORS[str(_tree(kids[1]).children[0])]
        return Compare(op, _build_operand(kids[0]), _build_operand(kids[2]))
    if tree.data == "between":
        return Between(_build_operand(kids[0]), _build_operand(kids[1]), _build_operand(kids[2]))
    if tree.data == "in_":
        return In(_build_operand(kids[0]), tuple(_build_operand(k) for k in kids[1:]))
    return _build_condition_function(tree)


def _build_operand(node: _Node) -> Operand:
    """A path, a value placeholder or ``size(path)``."""
    tree = _tree(node)
    if (ref := _path_or_value(tree)) is not None:
        return ref
    name, args = _call(tree, {"size": 1}, _MISUSED)
    if _tree(args[0]).data == "value":  # size(:v): DynamoDB takes a placeholder here
        return Size(_value(args[0]))
    inner = _tree(args[0])
    if inner.data == "call" and str(inner.children[0]) != "size":
        _call(inner, {}, _MISUSED)  # size(contains(a, b)): contains is the misused one
    return Size(_path_argument(name, args[0]))


def _path_or_value(tree: Tree[Token]) -> Path | ValueRef | None:
    """The operand a ``path`` or ``value`` node stands for; None for any other node."""
    if tree.data == "path":
        return _build_path(tree)
    if tree.data == "value":
        return ValueRef(str(tree.children[0]))
    return None


def _build_path(node: _Node) -> Path:
    tree = _tree(node)
    return Path(tuple(int(t) if t.type == "INDEX" else str(t) for t in _tokens(tree)))


def _build_condition_function(tree: Tree[Token]) -> Condition:
    name, args = _call(tree, _CONDITION_FUNCTIONS, _MISUSED)
    if name in ("begins_with", "contains") and _tree(args[0]).data == "value":
        first = _value(args[0])  # a constant subject parses; its type is checked with values
        second = _build_operand(args[1])
        return BeginsWith(first, second) if name == "begins_with" else Contains(first, second)
    path = _path_argument(name, args[0])
    if name == "attribute_exists":
        return AttributeExists(path)
    if name == "attribute_not_exists":
        return AttributeNotExists(path)
    second = _build_operand(args[1])
    if name == "begins_with":
        return BeginsWith(path, second)
    if name == "contains":
        return Contains(path, second)
    if not isinstance(second, ValueRef):
        shown = "N" if isinstance(second, Size) else "expected an expression attribute value"
        raise _Invalid(  # size() is a number: DynamoDB names its type
            "Incorrect operand type for operator or function; operator or function: "
            f"{name}, operand type: {shown}"
        )
    return AttributeType(path, second)


def _build_update(node: _Node) -> UpdateExpression:
    """The update AST for an ``update`` parse tree; each clause keyword at most once."""
    seen: set[str] = set()
    actions: list[UpdateAction] = []
    for clause in _tree(node).children:
        clause = _tree(clause)
        keyword = clause.data.removesuffix("_clause").upper()
        if keyword in seen:
            raise _Invalid(
                f'The "{keyword}" section can only be used once in an update expression;'
            )
        seen.add(keyword)
        actions.extend(_build_clause(keyword, clause.children))
    return UpdateExpression(tuple(actions))


def _build_clause(keyword: str, kids: list[_Node]) -> list[UpdateAction]:
    if keyword == "SET":
        return [_build_set_action(_tree(k)) for k in kids]
    if keyword == "REMOVE":
        return [RemoveAction(_build_path(k)) for k in kids]
    pairs = zip(kids[::2], kids[1::2], strict=True)
    if keyword == "ADD":
        return [AddAction(_build_path(p), _value(v)) for p, v in pairs]
    return [DeleteAction(_build_path(p), _value(v)) for p, v in pairs]


def _build_set_action(tree: Tree[Token]) -> SetAction:
    path, value = tree.children
    value_tree = _tree(value)
    if value_tree.data in ("plus", "minus"):
        left, right = (_build_update_operand(k) for k in value_tree.children)
        op: Literal["+", "-"] = "+" if value_tree.data == "plus" else "-"
        return SetAction(_build_path(path), Arithmetic(op, left, right))
    return SetAction(_build_path(path), _build_update_operand(value_tree))


def _build_update_operand(node: _Node) -> UpdateOperand:
    """A path, a value placeholder, ``if_not_exists(path, x)`` or ``list_append(x, y)``."""
    tree = _tree(node)
    if (ref := _path_or_value(tree)) is not None:
        return ref
    name, args = _call(
        tree, _UPDATE_FUNCTIONS, "The function is not allowed in an update expression"
    )
    if name == "if_not_exists":
        return IfNotExists(_path_argument(name, args[0]), _build_update_operand(args[1]))
    return ListAppend(_build_update_operand(args[0]), _build_update_operand(args[1]))


def _build_projection(node: _Node) -> Projection:
    return Projection(tuple(_build_path(k) for k in _tree(node).children))


def _call(tree: Tree[Token], allowed: Mapping[str, int], misuse: str) -> tuple[str, list[_Node]]:
    """Name and arguments of a function call, checked against the functions allowed here."""
    if tree.data != "call":
        raise _Invalid(f"Syntax error; unexpected {tree.data}")
    name = str(tree.children[0])
    args = [a for a in tree.children[1:] if a is not None]
    if name not in allowed:
        if name in _ALL_FUNCTIONS:
            raise _Invalid(f"{misuse}; function: {name}")
        raise _Invalid(f"Invalid function name; function: {name}")
    if len(args) != allowed[name]:
        raise _Invalid(
            "Incorrect number of operands for operator or function; "
            f"operator or function: {name}, number of operands: {len(args)}"
        )
    return name, args


def _path_argument(function: str, node: _Node) -> Path:
    if _tree(node).data != "path":
        raise _Invalid(
            f"Operator or function requires a document path; operator or function: {function}"
        )
    return _build_path(node)


def _value(node: _Node) -> ValueRef:
    return ValueRef(str(_tree(node).children[0]))


def _tree(node: _Node | None) -> Tree[Token]:
    assert isinstance(node, Tree), node
    return node


def _tokens(tree: Tree[Token]) -> list[Token]:
    return [t for t in tree.children if isinstance(t, Token)]


# --- placeholders --------------------------------------------------------------------------


def resolve_name(element: str, names: Mapping[str, str] | None) -> str:
    """An attribute name from a path element, substituting a ``#name`` placeholder."""
    if not element.startswith("#"):
        return element
    if names is None or element not in names:
        raise ValidationError(
            "An expression attribute name used in the document path is not defined; "
            f"attribute name: {element}"
        )
    return names[element]


def resolve_path(path: Path, names: Mapping[str, str] | None) -> tuple[str | int, ...]:
    """The path's elements with every ``#name`` placeholder substituted."""
    return tuple(e if isinstance(e, int) else resolve_name(e, names) for e in path.elements)


def resolve_value(ref: ValueRef, values: Mapping[str, AttributeValue] | None) -> AttributeValue:
    """The attribute value a ``:value`` placeholder stands for."""
    if values is None or ref.name not in values:
        raise ValidationError(
            "An expression attribute value used in expression is not defined; "
            f"attribute value: {ref.name}"
        )
    return values[ref.name]


def check_placeholders_used(
    names: Mapping[str, str] | None,
    values: Mapping[str, AttributeValue] | None,
    expressions: Sequence[str | None],
    kinds: Sequence[str] | None = None,
) -> None:
    """Validate one request's placeholder maps against all of its expressions.

    In DynamoDB's order: the maps themselves (``check_placeholder_maps``), placeholders used
    but not defined (expression by expression, names and values alike, in the order they are
    written; the message starts "Invalid <kind>: " when ``kinds`` names the expressions, as
    "ConditionExpression"), then placeholders defined but used by none of ``expressions``
    (``None`` entries are expressions the request does not carry).
    """
    check_placeholder_maps(names, values, expressions)
    texts = [t for t in expressions if t is not None]
    labels = list(kinds) if kinds is not None else [""] * len(expressions)
    for kind, text in zip(labels, expressions, strict=True):
        if text is not None:
            check_placeholders_defined(names, values, text, kind)
    used_names = {m for t in texts for m in _NAME_REF.findall(t)}
    used_values = {m for t in texts for m in _VALUE_REF.findall(t)}
    for label, defined, used in (("Names", names, used_names), ("Values", values, used_values)):
        unused = sorted(set(defined or ()) - used)
        if unused:
            raise ValidationError(
                f"Value provided in ExpressionAttribute{label} unused in expressions: "
                f"keys: {{{', '.join(unused)}}}"
            )


def check_placeholders_defined(
    names: Mapping[str, str] | None,
    values: Mapping[str, AttributeValue] | None,
    text: str,
    kind: str = "",
) -> None:
    """Every ``#name`` and ``:value`` of one expression is defined: the first that is not, in
    written order, names and values alike ("Invalid <kind>: " first when ``kind`` is given)."""
    try:
        for ref in _ANY_REF.findall(text):
            if ref.startswith("#"):
                resolve_name(ref, names)
            else:
                resolve_value(ValueRef(ref), values)
    except ValidationError as exc:
        raise ValidationError((f"Invalid {kind}: " if kind else "") + exc.message) from None


def check_placeholder_maps(
    names: Mapping[str, str] | None,
    values: Mapping[str, AttributeValue] | None,
    expressions: Sequence[str | None],
) -> None:
    """The placeholder maps on their own: given but empty or without any expression, malformed
    keys or values. DynamoDB reports these before it parses the expressions."""
    texts = [t for t in expressions if t is not None]
    for label, given, pattern in (("Names", names, _NAME_REF), ("Values", values, _VALUE_REF)):
        if given is None:
            continue
        if not given:
            raise ValidationError(f"ExpressionAttribute{label} must not be empty")
        if not texts:
            raise ValidationError(
                f"ExpressionAttribute{label} can only be specified when using expressions"
            )
        for key, entry in given.items():
            _check_entry(label, pattern, key, entry)


def _check_entry(label: str, pattern: re.Pattern[str], key: str, entry: Any) -> None:
    if not pattern.fullmatch(key):
        raise ValidationError(
            f'ExpressionAttribute{label} contains invalid key: Syntax error; key: "{key}"'
        )
    if label == "Names":
        if not isinstance(entry, str) or not entry:
            raise ValidationError(
                f"ExpressionAttributeNames contains invalid value: Empty attribute name "
                f"for key {key}"
            )
        return
    try:
        validate_value(entry)
    except SerializationError:
        raise
    except ValidationError as e:
        raise ValidationError(
            f"ExpressionAttributeValues contains invalid value: {e.message} for key {key}"
        ) from None
