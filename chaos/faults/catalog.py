"""The catalog: the ``Fault`` base, every registered kind, and building a fault from parameters.

A fault kind is a frozen pydantic dataclass registered under its ``kind``: its fields are its
parameters (type, default and help in one declaration) and pydantic is the one validator, for
faults built in code, from a command line (``make_fault``: strings are parsed) and from a
scenario file (chaos/scenario.py builds its timeline entries from the same fields).

    fault = make_fault("latency", {"from_side": "az-a", "to_side": "*", "ms": "150"})
    fault                                  # -> Latency(from_side='az-a', ..., ms=150.0, ...)
    fault_params(type(fault))[2]           # -> ParamInfo(name='ms', type='float', ...)
    plan(fault, view)                      # -> FaultPlan(...)
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from .errors import PlanError, UnknownFaultKind
from .plans import FaultPlan
from .view import ClusterView

#: Every fault kind: ``@register`` over ``@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)``
FAULT_CONFIG = ConfigDict(extra="forbid")


def _not_bool(value: object) -> object:
    if isinstance(value, bool):  # pydantic would read true as 1
        raise ValueError("a number, not true/false")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]
Count = Annotated[int, BeforeValidator(_not_bool)]


def param(help: str, **kwargs: Any) -> Any:
    """A fault parameter: ``ms: Number = param("added delay in milliseconds", default=0.0)``."""
    return Field(description=help, **kwargs)


@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class Fault:
    """Base of every fault: a ``kind`` name, parameters as fields, a docstring description."""

    kind: ClassVar[str] = ""

    def plan(self, view: ClusterView) -> FaultPlan:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in fault_fields(type(self))}

    def describe(self) -> str:
        """``split(sides=az-a|az-b,az-c)``."""
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in self.params().items())})"


CATALOG: dict[str, type[Fault]] = {}

_C = TypeVar("_C", bound=type)


def register(cls: _C) -> _C:
    """Add a fault kind to the catalog (``gameday faults`` lists them in registration order)."""
    assert issubclass(cls, Fault), f"{cls.__name__} is not a Fault"
    assert cls.kind and cls.kind not in CATALOG, f"fault kind {cls.kind!r} registered twice"
    CATALOG[cls.kind] = cls
    return cls


def plan(fault: Fault, view: ClusterView) -> FaultPlan:
    """The plan of ``fault`` on the cluster in ``view``; PlanError (UnknownTarget, NoLeader) when
    it names something the cluster does not have."""
    return fault.plan(view)


# --- describing the catalog ------------------------------------------------------------------


class ParamInfo(NamedTuple):
    name: str
    type: str
    required: bool
    default: Any
    help: str


class CatalogEntry(NamedTuple):
    kind: str
    description: str
    parameters: tuple[ParamInfo, ...]


def fault_fields(cls: type[Fault]) -> dict[str, FieldInfo]:
    """The pydantic fields of a fault kind: its parameters, in the order of its signature
    (declaration order, keyword-only ones such as ``both_ways`` last)."""
    if cls not in _FIELDS:
        fields: dict[str, FieldInfo] = cls.__pydantic_fields__  # type: ignore[attr-defined]
        _FIELDS[cls] = dict(sorted(fields.items(), key=lambda item: bool(item[1].kw_only)))
    return _FIELDS[cls]


_FIELDS: dict[type[Fault], dict[str, FieldInfo]] = {}


def type_text(tp: Any) -> str:
    """``float``, ``data|wal``: a parameter's type as users read it."""
    if typing.get_origin(tp) is Literal:
        return "|".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def fault_params(cls: type[Fault]) -> tuple[ParamInfo, ...]:
    """The parameters of a fault kind, in declaration order."""
    return tuple(
        ParamInfo(
            name,
            type_text(f.annotation),
            f.is_required(),
            None if f.is_required() else f.default,
            f.description or "",
        )
        for name, f in fault_fields(cls).items()
    )


def describe_catalog() -> list[CatalogEntry]:
    """``(kind, description, parameters)`` of every fault, for ``gameday faults``."""
    return [
        CatalogEntry(kind, _first_paragraph(cls.__doc__ or ""), fault_params(cls))
        for kind, cls in CATALOG.items()
    ]


def _first_paragraph(doc: str) -> str:
    """A docstring's first paragraph on one line (wrapped docstrings read as one sentence)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


# --- building faults -------------------------------------------------------------------------


def fault_class(kind: str) -> type[Fault]:
    try:
        return CATALOG[kind]
    except KeyError:
        raise UnknownFaultKind(
            f"unknown fault kind {kind!r}; known kinds: {', '.join(CATALOG)}"
        ) from None


def make_fault(kind: str, params: Mapping[str, Any]) -> Fault:
    """A fault from its kind and parameters (JSON, CLI strings); errors name the parameter."""
    cls = fault_class(kind)
    fields = fault_fields(cls)
    extra = sorted(set(params) - set(fields))
    missing = [name for name, f in fields.items() if f.is_required() and name not in params]
    if extra:
        takes = ", ".join(fields) or "no parameters"
        raise PlanError(f"{kind} has no parameter {', '.join(extra)}; it takes: {takes}", extra[0])
    if missing:
        raise PlanError(f"{kind} needs parameter {', '.join(missing)}", missing[0])
    try:
        return cls(**params)
    except ValidationError as e:
        raise plain_error(kind, cls, e) from None


def plain_error(kind: str, cls: type[Fault], error: ValidationError) -> PlanError:
    """The first problem pydantic found, in the catalog's words, naming the parameter."""
    first = error.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, PlanError):  # a fault's own check (ms >= 0, flips >= 1, ...)
        return cause
    name = str(first["loc"][0]) if first["loc"] else ""
    value = first.get("input")
    field = fault_fields(cls).get(name)
    if field is None:
        return PlanError(f"{kind}: {first['msg']}")
    if first["type"] == "literal_error":
        allowed = ", ".join(map(str, typing.get_args(field.annotation)))
        return PlanError(f"{name} must be one of {allowed}; got {value!r}", name)
    what = type_text(field.annotation)
    return PlanError(f"{kind} parameter {name} must be {what}, got {value!r}", name)
