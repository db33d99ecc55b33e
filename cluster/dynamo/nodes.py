"""The AST of DynamoDB expressions: immutable values built by ``cluster.dynamo.expressions``.

Paths keep their ``#name`` placeholders and operands their ``:value`` placeholders, so one AST
serves every request that uses the same expression text.

    parse_condition("#a.b[2] = :v")
    # -> Compare("=", Path(("#a", "b", 2)), ValueRef(":v"))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from cluster.dynamo.values import AttributeValue


@dataclass(frozen=True, slots=True)
class Path:
    """A document path: a name, then names (map keys) and ints (list indexes).

    Names starting with ``#`` are placeholders for ``ExpressionAttributeNames``.
    """

    elements: tuple[str | int, ...]

    def __str__(self) -> str:
        return "".join(
            f"[{e}]" if isinstance(e, int) else (f".{e}" if i else e)
            for i, e in enumerate(self.elements)
        )


@dataclass(frozen=True, slots=True)
class ValueRef:
    """A ``:name`` placeholder for an entry of ``ExpressionAttributeValues``."""

    name: str


@dataclass(frozen=True, slots=True)
class Size:
    """``size(path)`` as an operand; ``size(:v)``, the size of a constant, parses too."""

    path: Path | ValueRef


Operand = Path | ValueRef | Size


@dataclass(frozen=True, slots=True)
class Compare:
    op: Literal["=", "<>", "<", "<=", ">", ">="]
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class Between:
    subject: Operand
    low: Operand
    high: Operand


@dataclass(frozen=True, slots=True)
class In:
    subject: Operand
    choices: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class And:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Or:
    left: Condition
    right: Condition


@dataclass(frozen=True, slots=True)
class Not:
    condition: Condition


@dataclass(frozen=True, slots=True)
class AttributeExists:
    path: Path


@dataclass(frozen=True, slots=True)
class AttributeNotExists:
    path: Path


@dataclass(frozen=True, slots=True)
class AttributeType:
    path: Path
    type: ValueRef


@dataclass(frozen=True, slots=True)
class BeginsWith:
    path: Path | ValueRef  # DynamoDB also parses a constant here: begins_with(:v, a)
    prefix: Operand


@dataclass(frozen=True, slots=True)
class Contains:
    path: Path | ValueRef
    operand: Operand


Condition = (
    Compare
    | Between
    | In
    | And
    | Or
    | Not
    | AttributeExists
    | AttributeNotExists
    | AttributeType
    | BeginsWith
    | Contains
)


@dataclass(frozen=True, slots=True)
class IfNotExists:
    path: Path
    default: UpdateOperand


@dataclass(frozen=True, slots=True)
class ListAppend:
    first: UpdateOperand
    second: UpdateOperand


UpdateOperand = Path | ValueRef | IfNotExists | ListAppend


@dataclass(frozen=True, slots=True)
class Arithmetic:
    op: Literal["+", "-"]
    left: UpdateOperand
    right: UpdateOperand


@dataclass(frozen=True, slots=True)
class SetAction:
    path: Path
    value: UpdateOperand | Arithmetic


@dataclass(frozen=True, slots=True)
class RemoveAction:
    path: Path


@dataclass(frozen=True, slots=True)
class AddAction:
    path: Path
    value: ValueRef


@dataclass(frozen=True, slots=True)
class DeleteAction:
    path: Path
    value: ValueRef


UpdateAction = SetAction | RemoveAction | AddAction | DeleteAction


@dataclass(frozen=True, slots=True)
class UpdateExpression:
    """The actions of an update, in the order written."""

    actions: tuple[UpdateAction, ...]


@dataclass(frozen=True, slots=True)
class Projection:
    paths: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class SortCondition:
    """The sort-key part of a key condition, with its values resolved."""

    name: str
    op: Literal["=", "<", "<=", ">", ">=", "BETWEEN", "begins_with"]
    values: tuple[AttributeValue, ...]  # two for BETWEEN, else one


@dataclass(frozen=True, slots=True)
class KeyCondition:
    """A KeyConditionExpression: partition key equality, optionally a sort-key condition."""

    partition_name: str
    partition_value: AttributeValue
    sort: SortCondition | None


def walk(ast: Condition) -> Iterator[Condition]:
    """``ast`` and every condition under it (through AND, OR, NOT), outermost first."""
    yield ast
    match ast:
        case And(left, right) | Or(left, right):
            yield from walk(left)
            yield from walk(right)
        case Not(inner):
            yield from walk(inner)


def compared_operands(node: Condition) -> tuple[Operand, ...]:
    """The operands of a comparison, BETWEEN or IN node (none for any other node)."""
    match node:
        case Compare(_, left, right):
            return (left, right)
        case Between(subject, low, high):
            return (subject, low, high)
        case In(subject, choices):
            return (subject, *choices)
    return ()


def paths_in(ast: Condition) -> Iterator[Path]:
    """Every document path a condition reads (``size(path)`` included), in order."""
    for node in walk(ast):
        operands = compared_operands(node)
        match node:
            case AttributeExists(path) | AttributeNotExists(path) | AttributeType(path, _):
                operands = (path,)
            case BeginsWith(path, other) | Contains(path, other):
                operands = (path, other)
        for operand in operands:
            if isinstance(operand, Path):
                yield operand
            elif isinstance(operand, Size) and isinstance(operand.path, Path):
                yield operand.path
