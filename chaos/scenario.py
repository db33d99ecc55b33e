"""Scenario files: a game day written down as YAML, validated into an immutable ``Scenario``.

A scenario says which cluster to run (topology, partitions), what traffic to drive (workload),
for how long, what "healthy" means (SLOs, alarm), how much may be broken at once (blast radius),
what to break and when (an explicit ``timeline`` or a seeded ``random`` schedule), when to give
up (stop conditions) and which checks decide the verdict.

    scenario = load_scenario(Path("scenarios/az-power-off.yaml"))
    scenario.duration                                   # -> 75.0 (seconds)
    scenario.method.timeline[0].to_fault()              # -> PowerOffAz(target='az-b')
    (run_dir / "scenario.json").write_text(scenario.to_json())

A minimal file:

    name: one-node
    duration: 60s
    method:
      timeline:
        - {at: 20s, duration: 20s, fault: power_off_node, target: sn-a1}

Durations are numbers of seconds or strings like ``500ms``, ``30s``, ``2m``, ``1m30s``. A
timeline entry's keys besides ``at``, ``duration`` and ``fault`` are the fault's parameters
(``gameday faults`` lists them). ``load_scenario`` raises ``ScenarioError`` naming the file,
the field (``method.timeline[2].duration``), its line, and the problem in plain words.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from chaos.faults import (
    CATALOG,
    BlastRadius,
    Fault,
    PlanError,
    fault_fields,
    fault_params,
    make_fault,
)
from cluster.topology import DEFAULT_TOPOLOGY, Topology, parse_topology

# --- durations -----------------------------------------------------------------------------

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_HELP = "use a number of seconds (30) or a number with a unit: 500ms, 30s, 2m, 1m30s"


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"`` or ``"1m30s"``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"bad duration {value!r}: {_DURATION_HELP}")
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"bad duration {value!r}: {_DURATION_HELP}") from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad duration {value!r}: it must be a finite, non-negative time")
    return round(seconds, 6)


def format_duration(seconds: float) -> str:
    """``90`` -> ``"1m30s"``, ``0.5`` -> ``"500ms"``, ``30`` -> ``"30s"``."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes and rest:
        return f"{minutes:g}m{rest:g}s"
    return f"{minutes:g}m" if minutes else f"{rest:g}s"


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Fraction = Annotated[float, Field(ge=0, le=1)]

# --- the model -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClusterSpec(_Strict):
    topology: str = Field(default=DEFAULT_TOPOLOGY, description="AZSxRACKSxNODES, e.g. 3x2x1")
    partitions: int = Field(
        default=4, ge=1, le=1024, description="partitions of the workload's table"
    )

    @field_validator("topology")
    @classmethod
    def _known_shape(cls, value: str) -> str:
        return parse_topology(value).shape


WorkloadName = Annotated[
    Literal["register", "read_heavy", "update_heavy", "rmw", "query", "bank"],
    BeforeValidator(lambda v: v.replace("-", "_") if isinstance(v, str) else v),  # read-heavy
]
Check = Literal["linearizability", "durability", "convergence", "availability"]
ALL_CHECKS: tuple[Check, ...] = typing.get_args(Check)


class WorkloadSpec(_Strict):
    name: WorkloadName = "register"
    users: int = Field(default=10, ge=1, description="concurrent simulated clients")
    keys: int = Field(default=100, ge=1, description="distinct keys the workload touches")
    distribution: Literal["uniform", "zipfian"] = "uniform"
    rate: float | None = Field(
        default=None,
        gt=0,
        description="total operations per second, open loop (each user a fixed schedule);"
        " none: closed loop, which hides stalls from the availability verdict",
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="load processes: Locust's master plus this many local workers, the users"
        " spread over them (none: one process)",
    )
    table: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z0-9_.-]{3,255}$",
        description="the table the workload uses (default: gameday-<workload name>)",
    )

    def table_name(self) -> str:
        """The workload's table: ``table``, else the workloads' default ``gameday-register``."""
        return self.table or f"gameday-{self.name.replace('_', '-')}"


class Slos(_Strict):
    """The steady-state hypothesis: what the clients must see."""

    availability: Fraction = Field(default=0.99, description="success ratio outside fault windows")
    fault_availability: Fraction | None = Field(
        default=None, description="success ratio within each fault window (default: availability)"
    )
    p99_ms: float | None = Field(default=None, gt=0)
    recovery_seconds: PositiveDuration | None = Field(
        default=None, description="time from a fault's heal until availability is back"
    )


class Alarm(_Strict):
    error_rate: float = Field(default=0.2, gt=0, le=1)
    window_seconds: PositiveDuration = 10.0


class BlastRadiusSpec(_Strict):
    max_azs: int | None = Field(default=1, ge=0)
    max_nodes: int | None = Field(default=None, ge=0)
    max_racks: int | None = Field(default=None, ge=0)

    def to_radius(self) -> BlastRadius:
        return BlastRadius(self.max_azs, self.max_nodes, self.max_racks)


class StopCondition(_Strict):
    availability_below: Fraction
    for_seconds: PositiveDuration = 10.0


class TimelineEntryBase(_Strict):
    """One planned fault: when it starts, how long it lasts, and the fault's own parameters."""

    at: Duration
    duration: PositiveDuration
    fault: str

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"at", "duration", "fault"})

    def to_fault(self) -> Fault:
        return make_fault(self.fault, self.params())

    @model_validator(mode="after")
    def _builds(self) -> TimelineEntryBase:
        self.to_fault()  # the fault's own checks (ms >= 0, flips >= 1, ...)
        return self


_RESERVED = frozenset(TimelineEntryBase.model_fields)


def _entry_model(cls: type[Fault]) -> type[TimelineEntryBase]:
    """The timeline entry of one fault kind: ``at``, ``duration``, ``fault`` and the kind's own
    fields, taken as they are from the fault (chaos/faults/catalog.py), so one declaration
    validates a fault from code, the command line and scenario files alike."""
    defs: dict[str, Any] = {"fault": (Literal.__getitem__(cls.kind), ...)}
    for name, info in fault_fields(cls).items():
        assert name not in _RESERVED, f"{cls.kind}.{name} clashes with a timeline key"
        defs[name] = (info.annotation, copy.copy(info))
    name = "".join(w.title() for w in cls.kind.split("_")) + "Entry"
    return create_model(name, __base__=TimelineEntryBase, **defs)


ENTRY_MODELS: dict[str, type[TimelineEntryBase]] = {k: _entry_model(c) for k, c in CATALOG.items()}

if TYPE_CHECKING:
    TimelineEntry = TimelineEntryBase
else:
    TimelineEntry = Annotated[
        functools.reduce(operator.or_, ENTRY_MODELS.values()), Field(discriminator="fault")
    ]


def _known_kinds() -> str:
    return ", ".join(CATALOG)


class RandomMethod(_Strict):
    """A seeded random schedule: the same seed always yields the same timeline."""

    seed: int
    faults: dict[str, float] = Field(description="fault kind -> relative weight")
    min_duration: PositiveDuration = 10.0
    max_duration: PositiveDuration = 30.0
    min_gap: Duration = 10.0
    max_gap: Duration = 20.0
    max_concurrent: int = Field(default=1, ge=1, description="faults active at once")
    targets: list[str] | None = Field(
        default=None, description="AZs, racks or storage nodes random faults may hit (default: all)"
    )
    parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="fault kind -> parameters fixed instead of drawn"
    )

    @field_validator("faults")
    @classmethod
    def _known_weighted(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError(f"name at least one fault kind with a weight; kinds: {_known_kinds()}")
        for kind, weight in value.items():
            if kind not in CATALOG:
                raise ValueError(f"unknown fault kind {kind!r}; known kinds: {_known_kinds()}")
            if not weight > 0:
                raise ValueError(f"the weight of {kind} must be above zero, got {weight!r}")
        return value

    @field_validator("parameters")
    @classmethod
    def _known_parameters(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for kind, params in value.items():
            if kind not in CATALOG:
                raise ValueError(f"unknown fault kind {kind!r}; known kinds: {_known_kinds()}")
            names = [p.name for p in fault_params(CATALOG[kind])]
            extra = sorted(set(params) - set(names))
            if extra:
                takes = ", ".join(names) or "no parameters"
                raise ValueError(f"{kind} has no parameter {', '.join(extra)}; it takes: {takes}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RandomMethod:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.min_duration > self.max_duration:
            problems.append((("max_duration",), "must not be shorter than min_duration"))
        if self.min_gap > self.max_gap:
            problems.append((("max_gap",), "must not be shorter than min_gap"))
        if problems:
            raise FieldProblems(problems)
        return self


class Method(_Strict):
    """Exactly one of ``timeline`` and ``random``."""

    timeline: list[TimelineEntry] | None = None
    random: RandomMethod | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Method:
        if (self.timeline is None) == (self.random is None):
            raise ValueError("give exactly one of 'timeline' (a list of faults) or 'random'")
        return self


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    duration: PositiveDuration
    steady_state: Slos = Field(
        default_factory=Slos, validation_alias=AliasChoices("steady_state", "slos")
    )
    alarm: Alarm = Field(default_factory=Alarm)
    blast_radius: BlastRadiusSpec = Field(default_factory=BlastRadiusSpec)
    method: Method
    stop_conditions: list[StopCondition] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=lambda: list(ALL_CHECKS))

    @field_validator("checks")
    @classmethod
    def _unique(cls, value: list[Check]) -> list[Check]:
        twice = sorted({c for c in value if value.count(c) > 1})
        if twice:
            raise ValueError(f"listed more than once: {', '.join(twice)}")
        return value

    @model_validator(mode="after")
    def _fits_duration(self) -> Scenario:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, entry in enumerate(self.method.timeline or ()):
            end = entry.at + entry.duration
            if end > self.duration:
                problems.append(
                    (
                        ("method", "timeline", i, "duration"),
                        f"this fault ends at {format_duration(end)}, after the scenario "
                        f"(duration {format_duration(self.duration)})",
                    )
                )
        spec = self.method.random
        if spec is not None and spec.min_duration + spec.min_gap > self.duration:
            problems.append(
                (
                    ("method", "random", "min_duration"),
                    "min_gap + min_duration leaves no room for a fault in the scenario's "
                    f"{format_duration(self.duration)}",
                )
            )
        if problems:
            raise FieldProblems(problems)
        return self

    def topology(self) -> Topology:
        return parse_topology(self.cluster.topology)

    def to_json(self) -> str:
        """The resolved scenario (defaults filled in, durations in seconds) as JSON."""
        return self.model_dump_json(indent=2)


class FieldProblems(ValueError):
    """Problems found by a model validator, each with a path relative to the model."""

    def __init__(self, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = list(problems)


# --- loading and error reporting -----------------------------------------------------------


class Problem(NamedTuple):
    field: str  # "method.timeline[2].duration"; "" for the file as a whole
    message: str
    line: int | None = None
    column: int | None = None

    def where(self) -> str:
        at = f"line {self.line}" if self.line else ""
        if at and self.column and not self.field:
            at += f", column {self.column}"
        if self.field:
            return f"{self.field} ({at})" if at else self.field
        return at


class ScenarioError(ValueError):
    """A scenario file that cannot be used; ``str()`` names the file, fields and problems."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(self._text())

    def _text(self) -> str:
        def one(p: Problem) -> str:
            where = p.where()
            return f"{where}: {p.message}" if where else p.message

        if len(self.problems) == 1:
            return f"{self.source}: {one(self.problems[0])}"
        lines = [f"{self.source}: {len(self.problems)} problems"]
        lines += [f"  - {one(p)}" for p in self.problems]
        return "\n".join(lines)


def field_path(loc: Sequence[str | int]) -> str:
    """``("method", "timeline", 2, "duration")`` -> ``"method.timeline[2].duration"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file; ScenarioError says what is wrong, and where."""
    return parse_scenario(read_scenario_text(path), str(path))


def read_scenario_text(path: Path | str) -> str:
    """The text of a scenario file; ScenarioError (naming the file) when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(str(path), [Problem("", f"cannot read the file: {e.strerror}")]) from e


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate scenario YAML ``text``; ``source`` names it in errors.

    This checks the scenario as a document; whether its faults fit the cluster (targets exist,
    the blast radius holds) is the schedule's to say: ``chaos.schedule.parse_game_day``.
    """
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ScenarioError(source, [_yaml_problem(e)]) from None
    if data is None:
        raise ScenarioError(source, [Problem("", "the file is empty; a scenario is a mapping")])
    if not isinstance(data, dict):
        message = f"a scenario is a mapping (name: ..., duration: ...), not {type(data).__name__}"
        raise ScenarioError(source, [Problem("", message, 1)])
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(source, _problems(e, root)) from None


def problem_at(text: str, source: str, loc: Sequence[str | int], message: str) -> ScenarioError:
    """A ScenarioError for a problem found later (say, by the schedule) at field ``loc`` of the
    scenario ``text``: it names the field and its line like the model's own errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None
    return ScenarioError(source, [Problem(field_path(loc), message, _line_of(root, loc))])


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, typing.Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def _yaml_problem(e: yaml.YAMLError) -> Problem:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return Problem("", f"YAML syntax error: {problem}", line, column)


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The line of the deepest YAML node on ``loc`` (the parent's when a key is missing)."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


_MODELS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): Scenario,
    ("cluster",): ClusterSpec,
    ("workload",): WorkloadSpec,
    ("steady_state",): Slos,
    ("slos",): Slos,
    ("alarm",): Alarm,
    ("blast_radius",): BlastRadiusSpec,
    ("method",): Method,
    ("method", "random"): RandomMethod,
    ("stop_conditions",): StopCondition,
}


def _problems(error: ValidationError, root: yaml.Node | None) -> list[Problem]:
    out = []
    for err in error.errors():
        loc, kind = _strip_tag(tuple(err["loc"]))
        for sub_loc, message in _explain(err, loc, kind):
            full = (*loc, *sub_loc)
            out.append(Problem(field_path(full), message, _line_of(root, full)))
    return out


def _strip_tag(loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], str | None]:
    """Drop the discriminated union's tag from ``(..., "timeline", 2, "latency", "ms")``."""
    for i in range(1, len(loc)):
        if isinstance(loc[i - 1], int) and loc[i] in CATALOG:
            return (*loc[:i], *loc[i + 1 :]), str(loc[i])
    return loc, None


def _explain(
    err: Any, loc: tuple[str | int, ...], kind: str | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """Plain words for one pydantic error; may expand into several problems."""
    etype, ctx = err["type"], err.get("ctx") or {}
    name = loc[-1] if loc else ""
    cause = ctx.get("error")
    if isinstance(cause, FieldProblems):
        return cause.problems
    if isinstance(cause, PlanError) and cause.param:
        return [((cause.param,), str(cause))]
    if etype == "union_tag_invalid":
        return [(("fault",), f"unknown fault kind {ctx['tag']!r}; known kinds: {_known_kinds()}")]
    if etype == "union_tag_not_found":
        return [((), f"missing 'fault': say which fault this is; kinds: {_known_kinds()}")]
    if kind is not None and etype in ("missing", "extra_forbidden"):
        params = fault_params(CATALOG[kind])
        if etype == "missing" and name not in _RESERVED:
            help = next((f": {p.help}" for p in params if p.name == name), "")
            return [((), f"{kind} needs parameter {name!r}{help}")]
        if etype == "extra_forbidden":
            takes = ", ".join(p.name for p in params) or "no parameters"
            return [((), f"{kind} has no parameter {name!r}; it takes: {takes}")]
    if etype == "missing":
        return [((), "required, but missing")]
    if etype == "model_attributes_type" and len(loc) >= 2 and loc[-2] == "timeline":
        return [((), "a timeline entry is a mapping: {at: 30s, duration: 60s, fault: <kind>, ...}")]
    if etype == "extra_forbidden":
        parent = tuple(p for p in loc[:-1] if isinstance(p, str))
        model = _MODELS_AT.get(parent)
        known = f"; expected one of: {', '.join(model.model_fields)}" if model else ""
        return [((), f"unknown field {name!r}{known}")]
    message = str(err["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if etype != "value_error" and "input" in err:
        message += f" (got {err['input']!r})"
    return [((), message)]
