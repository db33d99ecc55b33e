"""Parentheses in condition and update expressions: which DynamoDB accepts, and removing them.

The grammar (``cluster.dynamo.expressions``) has one ``paren`` node for both a parenthesised
condition and a parenthesised operand (and one for a SET value), so it stays LALR without
conflicts: a bare operand parses as a predicate and a whole condition parses as an operand.
``strip_parentheses`` checks each parenthesis is used the way DynamoDB allows and returns the
tree without ``paren`` nodes:

    (a) = :v              ok: an operand in parentheses
    a BETWEEN (:lo) AND (:hi), attribute_exists((a)), size((a))   ok
    (a = :v) AND (b = :w) ok
    ((a = :v)), a > ((b)) "The expression has redundant parentheses;"
    (a), NOT a, a AND b   syntax error after the operand (an operand is not a condition)
    (a = :v) = :w         syntax error after the ")" (a condition is not an operand)

Evidence (dynalite's tests, checked against DynamoDB): "(a)between(b.c[45].#d)and(:a)" and
"attribute_exists((views), (#a)) > b" parse; "a=a and a > ((views))" and
"a > whatever((:things), ((a)))" are redundant parentheses (before the reserved word and the
unknown function are reported); "whatever((:things)) > a" is not (a call's own parentheses do
not count). In an UpdateExpression a SET value and each of its operands (around "+" and "-",
function arguments) may be parenthesised: dynalite's tests take "set a = (b + c)" and
"set a = ((b.c.d)+(e))" off their syntax-error list and keep "set (a = (b + c))",
"set a = (b.c).d + e" and "set a = b + c + d" on it. Doubled parentheses there are reported as
redundant, as in conditions (not evidenced for updates).
"""

from __future__ import annotations

from typing import Literal

from lark import Token, Tree

from cluster.dynamo.values import ValidationError

_CONDITIONS = frozenset({"or_", "and_", "not_", "compare", "between", "in_"})
_Want = Literal["condition", "operand", "set_value"]
_Node = Tree[Token] | Token


class Misplaced(Exception):
    """A parenthesis or operand DynamoDB's grammar refuses: a syntax error at ``pos``."""

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.pos = pos


def strip_parentheses(tree: Tree[Token], kind: str) -> Tree[Token]:
    """``tree`` without ``paren`` nodes; raises ``Misplaced`` or redundant parentheses."""
    if tree.data == "projection":
        return tree
    if tree.data == "update":
        stripped = Tree("update", [_strip_clause(c) for c in tree.children], tree.meta)
    else:
        stripped = _strip(tree, "condition")
    if any(t.data == "paren" and _is_paren(t.children[0]) for t in tree.iter_subtrees()):
        raise ValidationError(f"Invalid {kind}: The expression has redundant parentheses;")
    return stripped


def _strip_clause(clause: _Node) -> _Node:
    if not isinstance(clause, Tree) or clause.data != "set_clause":
        return clause
    actions = []
    for action in clause.children:
        assert isinstance(action, Tree)
        path, value = action.children
        assert isinstance(value, Tree)
        actions.append(Tree("set_action", [path, _strip(value, "set_value")], action.meta))
    return Tree("set_clause", list[_Node](actions), clause.meta)


def _strip(node: Tree[Token], want: _Want) -> Tree[Token]:
    inner = node
    while inner.data == "paren":
        child = inner.children[0]
        assert isinstance(child, Tree)
        inner = child
    is_condition = inner.data in _CONDITIONS
    if want == "operand" and is_condition:
        raise Misplaced(node.meta.end_pos)  # "(a = :v) = :w": the token after the ")"
    if want == "condition" and not is_condition and inner.data != "call":
        raise Misplaced(node.meta.end_pos)  # "(a) AND ...": an operand where a condition goes
    if want == "operand" and inner.data in ("plus", "minus"):
        left = inner.children[0]
        assert isinstance(left, Tree)
        raise Misplaced(left.meta.end_pos)  # "SET a = b + (c + d)": at the second "+"
    if inner.data in ("or_", "and_", "not_"):
        kids_want: _Want = "condition"
    elif inner.data in ("path", "value"):
        return inner
    else:
        kids_want = "operand"
    kids = [
        _strip(k, kids_want) if isinstance(k, Tree) and _is_tree(k) else k for k in inner.children
    ]
    return Tree(inner.data, kids, inner.meta)


def _is_tree(node: object) -> bool:
    return isinstance(node, Tree) and node.data != "comparator"


def _is_paren(node: object) -> bool:
    return isinstance(node, Tree) and node.data == "paren"
