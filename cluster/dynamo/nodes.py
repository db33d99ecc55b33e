"""The AST of DynamoDB expressions: immutable values built by ``cluster.dynamo.expressions``.

Paths keep their ``#name`` placeholders and operands their ``:value`` placeholders, so one AST
serves every request that uses the same expression text.

    parse_condition("#a.b[2] = :v")
    # -> Compare("=", Path(("#a", "b", 2)), ValueRef(":v"))
"""

from __future__ import annotations

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
    """``size(path)`` as an operand."""

    path: Path


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
    path: Path
    prefix: Operand


@dataclass(frozen=True, slots=True)
class Contains:
    path: Path
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
