"""Schedules: a scenario's faults resolved into a timeline, by pure and deterministic functions.

``build_timeline`` turns a scenario's ``method`` into ``TimedFault`` values: the explicit
timeline as written, or a random schedule drawn from one seed, so the same scenario always gives
the same timeline. Every fault is planned against the cluster a fresh deployment of the scenario
would have, so unknown targets and blast-radius breaches surface before anything runs. The
orchestrator (one interpreter that owns time) replays the timeline; ``events.jsonl`` and
``gameday replay`` use the JSON form.

    game = load_game_day(Path("scenarios/random-power-off.yaml"))    # validated, built once
    timeline = game.timeline     # == build_timeline(game.scenario)
    timeline[0]     # -> TimedFault(at_s=8.8, fault=PowerOffRack(target='az-c/r1'),
                    #               duration_s=10.9, fault_id='f1', plan_seed=3950672277)
    timeline == timeline_from_json(timeline_to_json(timeline))          # -> True
    view = live_view.with_rng(timeline[0].plan_rng())   # plan it as it was planned here

Random schedules: each step waits a gap drawn from [min_gap, max_gap] (after the previous fault
ends, or after it starts when ``max_concurrent`` > 1 allows overlap), draws a duration from
[min_duration, max_duration] and a fault kind by weight, then fills in the kind's targets from
``targets``. A fault that cannot be planned or would exceed the blast radius together with the
faults overlapping it is redrawn, up to ``MAX_DRAWS`` times, then its slot is skipped. Every
fault ends at least ``min_gap`` before the scenario does.
"""

from __future__ import annotations

import functools
import json
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from chaos.faults import (
    ANY_GROUP,
    EVERYONE_ELSE,
    BlastRadiusExceeded,
    ClusterView,
    Fault,
    FaultPlan,
    PlanError,
    UnknownTarget,
    check_blast_radius,
    make_fault,
    plan,
)
from chaos.scenario import (
    RandomMethod,
    Scenario,
    parse_scenario,
    problem_at,
    read_scenario_text,
)
from cluster.topology import Topology

MAX_DRAWS = 25  # attempts to find an acceptable fault for one slot
MAX_FAULTS = 1000  # a schedule longer than this is a mistake in the scenario


class ScheduleError(ValueError):
    """A scenario whose faults cannot be scheduled; ``loc`` is the scenario field at fault."""

    def __init__(self, loc: tuple[str | int, ...], problem: str) -> None:
        self.loc = loc
        self.problem = problem
        path = ".".join(f"[{p}]" if isinstance(p, int) else p for p in loc).replace(".[", "[")
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True, slots=True)
class TimedFault:
    """A fault in a timeline: active over ``[at_s, at_s + duration_s)`` seconds into the run.

    ``plan_seed`` seeds the ``ClusterView`` rng when the fault is planned, so randomized shapes
    (bridge, random halves, group ``any``) come out the same on replay.
    """

    at_s: float
    fault: Fault
    duration_s: float
    fault_id: str
    plan_seed: int = 0

    @property
    def end_s(self) -> float:
        return round(self.at_s + self.duration_s, 6)

    def overlaps(self, at_s: float, end_s: float) -> bool:
        return self.at_s < end_s and at_s < self.end_s

    def plan_rng(self) -> random.Random:
        return random.Random(self.plan_seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.fault_id,
            "at": self.at_s,
            "duration": self.duration_s,
            "fault": self.fault.kind,
            "params": self.fault.params(),
            "plan_seed": self.plan_seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TimedFault:
        try:
            return cls(
                float(d["at"]),
                make_fault(str(d["fault"]), dict(d.get("params") or {})),
                float(d["duration"]),
                str(d["id"]),
                int(d.get("plan_seed", 0)),
            )
        except KeyError as e:
            raise ValueError(f"timeline entry {dict(d)!r} lacks {e.args[0]!r}") from None

    def describe(self) -> str:
        return f"{self.fault_id} {self.at_s:g}s-{self.end_s:g}s {self.fault.describe()}"


def timeline_to_json(timeline: Sequence[TimedFault]) -> str:
    return json.dumps([tf.to_dict() for tf in timeline], indent=2)


def timeline_from_json(text: str) -> list[TimedFault]:
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("a timeline is a JSON list of faults")
    return [TimedFault.from_dict(d) for d in data]


@dataclass(frozen=True, slots=True)
class GameDay:
    """A scenario and the timeline it runs, each built once: all a run needs before it starts."""

    scenario: Scenario
    timeline: tuple[TimedFault, ...]


def load_game_day(path: Path | str, seed: int | None = None) -> GameDay:
    """Read a scenario file, validate it and build its timeline (``seed`` overrides a random
    schedule's); ScenarioError names the file, field and line of any problem, the timeline's
    (an unknown target, a breached blast radius) included."""
    return parse_game_day(read_scenario_text(path), str(path), seed)


def parse_game_day(text: str, source: str = "<scenario>", seed: int | None = None) -> GameDay:
    """``load_game_day`` for scenario YAML ``text``; ``source`` names it in errors."""
    scenario = with_seed(parse_scenario(text, source), seed)
    try:
        timeline = build_timeline(scenario)
    except ScheduleError as e:
        raise problem_at(text, source, e.loc, e.problem) from None
    return GameDay(scenario, tuple(timeline))


def with_seed(scenario: Scenario, seed: int | None) -> Scenario:
    """``scenario`` with its random schedule drawn from ``seed`` (unchanged when None, or when
    its faults are an explicit timeline)."""
    spec = scenario.method.random
    if seed is None or spec is None:
        return scenario
    method = scenario.method.model_copy(update={"random": spec.model_copy(update={"seed": seed})})
    return scenario.model_copy(update={"method": method})


def build_timeline(scenario: Scenario, topology: Topology | None = None) -> list[TimedFault]:
    """The scenario's faults in start order; ScheduleError for unknown targets, faults the blast
    radius forbids (explicit timelines) and random ``targets`` that name nothing."""
    topology = topology or scenario.topology()
    if scenario.method.random is not None:
        return _random_timeline(scenario, scenario.method.random, topology)
    return _explicit_timeline(scenario, topology)


def assumed_view(scenario: Scenario, topology: Topology, seed: int) -> ClusterView:
    """The cluster a fresh deployment of ``scenario`` would have, planning with ``seed``."""
    view = _assumed(topology, scenario.cluster.partitions, scenario.workload.table_name())
    return view.with_rng(random.Random(seed))


@functools.lru_cache(maxsize=16)
def _assumed(topology: Topology, partitions: int, table: str) -> ClusterView:
    return ClusterView.assumed(topology, partitions=partitions, table=table)


def _explicit_timeline(scenario: Scenario, topology: Topology) -> list[TimedFault]:
    entries = sorted(enumerate(scenario.method.timeline or ()), key=lambda e: e[1].at)
    radius = scenario.blast_radius.to_radius()
    out: list[TimedFault] = []
    plans: list[FaultPlan] = []
    for n, (i, entry) in enumerate(entries, start=1):
        fault_id = f"f{n}"
        seed = zlib.crc32(f"{scenario.name}/{fault_id}".encode())
        tf = TimedFault(entry.at, entry.to_fault(), entry.duration, fault_id, seed)
        try:
            new = plan(tf.fault, assumed_view(scenario, topology, seed))
        except PlanError as e:
            raise ScheduleError(_loc(("method", "timeline", i), e.param), str(e)) from None
        active = [
            p for other, p in zip(out, plans, strict=True) if other.overlaps(tf.at_s, tf.end_s)
        ]
        try:
            check_blast_radius(active, new, radius, topology)
        except BlastRadiusExceeded as e:
            raise ScheduleError(("method", "timeline", i), str(e)) from None
        out.append(tf)
        plans.append(new)
    return out


def _loc(base: tuple[str | int, ...], param: str | None) -> tuple[str | int, ...]:
    return (*base, param) if param else base


# --- random schedules ----------------------------------------------------------------------


class _Pools(NamedTuple):
    """What random faults may target."""

    azs: tuple[str, ...]
    racks: tuple[str, ...]
    nodes: tuple[str, ...]


def _pools(topology: Topology, targets: Sequence[str] | None) -> _Pools:
    if targets is None:
        nodes = tuple(n.id for n in topology.storage_nodes())
        return _Pools(topology.azs, topology.racks(), nodes)
    known = {*topology.azs, *topology.racks(), *(n.id for n in topology.storage_nodes())}
    for i, name in enumerate(targets):
        if name not in known:
            raise ScheduleError(
                ("method", "random", "targets", i),
                f"{name!r} is not an AZ, rack or storage node of this {topology.shape} cluster; "
                f"AZs: {', '.join(topology.azs)}; racks: {', '.join(topology.racks())}",
            )
    chosen = set(targets)
    return _Pools(
        tuple(az for az in topology.azs if az in chosen),
        tuple(r for r in topology.racks() if r in chosen or r.split("/")[0] in chosen),
        tuple(
            n.id
            for n in topology.storage_nodes()
            if n.id in chosen or n.rack in chosen or n.az in chosen
        ),
    )


Drawer = Callable[[_Pools, random.Random], dict[str, Any] | None]


def _pick(pool: Sequence[str], rng: random.Random) -> str | None:
    return rng.choice(pool) if pool else None


def _on(pool_name: str, param: str = "target") -> Drawer:
    def draw(pools: _Pools, rng: random.Random) -> dict[str, Any] | None:
        target = _pick(getattr(pools, pool_name), rng)
        return None if target is None else {param: target}

    return draw


def _az_to_rest(**extra: Callable[[random.Random], Any]) -> Drawer:
    def draw(pools: _Pools, rng: random.Random) -> dict[str, Any] | None:
        az = _pick(pools.azs, rng)
        if az is None:
            return None
        return {"from_side": az, "to_side": EVERYONE_ELSE, **{k: f(rng) for k, f in extra.items()}}

    return draw


def _fixed(**params: Any) -> Drawer:
    return lambda pools, rng: dict(params)


def _split_az(pools: _Pools, rng: random.Random) -> dict[str, Any] | None:
    az = _pick(pools.azs, rng)
    return None if az is None else {"sides": f"{az}|{EVERYONE_ELSE}"}


def _bit_rot(pools: _Pools, rng: random.Random) -> dict[str, Any] | None:
    node = _pick(pools.nodes, rng)
    if node is None:
        return None
    target = rng.choice(["data", "wal"])
    return {"node": node, "group": ANY_GROUP, "target": target, "flips": rng.randint(1, 8)}


# How each kind fills in its parameters when drawn; every catalog kind has an entry.
DRAWERS: dict[str, Drawer] = {
    "power_off_node": _on("nodes"),
    "power_off_rack": _on("racks"),
    "power_off_az": _on("azs"),
    "power_loss_node": _on("nodes"),
    "power_loss_rack": _on("racks"),
    "power_loss_az": _on("azs"),
    "pause_node": _on("nodes"),
    "rolling_restart": _fixed(role="storage"),
    "isolate_node": _on("nodes"),
    "isolate_az": _on("azs"),
    "split": _split_az,
    "one_way": _az_to_rest(),
    "bridge": _fixed(),
    "majorities_ring": _fixed(),
    "random_halves": _fixed(),
    "leader_isolation": _fixed(group=ANY_GROUP),
    "minority_of": _fixed(group=ANY_GROUP),
    "majority_of": _fixed(group=ANY_GROUP),
    "leaders": _fixed(),
    "latency": _az_to_rest(
        ms=lambda r: r.choice([50, 100, 200, 400]), jitter_ms=lambda r: 10, both_ways=lambda r: True
    ),
    "bandwidth": _az_to_rest(kbps=lambda r: r.choice([64, 256, 1024])),
    "slicer": _az_to_rest(),
    "slow_close": _az_to_rest(ms=lambda r: r.choice([100, 500, 1000])),
    "reset_peer": _az_to_rest(),
    "disable_links": _az_to_rest(),
    "bit_rot": _bit_rot,
}


def _between(rng: random.Random, lo: float, hi: float) -> float:
    """A draw from [lo, hi] to 0.1 s, so timelines read well and round-trip through JSON."""
    return min(max(round(rng.uniform(lo, hi), 1), lo), hi)


def _random_timeline(
    scenario: Scenario, spec: RandomMethod, topology: Topology
) -> list[TimedFault]:
    rng = random.Random(spec.seed)
    pools = _pools(topology, spec.targets)
    kinds = sorted(spec.faults)
    weights = [spec.faults[k] for k in kinds]
    radius = scenario.blast_radius.to_radius()
    last_end = scenario.duration - spec.min_gap  # a quiet tail after the last fault
    out: list[TimedFault] = []
    plans: list[FaultPlan] = []
    anchor = 0.0
    while len(out) < MAX_FAULTS:
        start = round(anchor + _between(rng, spec.min_gap, spec.max_gap), 6)
        ends = sorted(tf.end_s for tf in out if tf.end_s > start)
        if len(ends) >= spec.max_concurrent:
            start = ends[len(ends) - spec.max_concurrent]
        if start + spec.min_duration > last_end:
            break
        duration = min(_between(rng, spec.min_duration, spec.max_duration), last_end - start)
        duration = round(duration, 6)
        active = [
            p for tf, p in zip(out, plans, strict=True) if tf.overlaps(start, start + duration)
        ]
        drawn = _draw(scenario, spec, topology, pools, rng, kinds, weights, active, radius)
        if drawn is not None:
            fault, seed, new = drawn
            out.append(TimedFault(start, fault, duration, f"f{len(out) + 1}", seed))
            plans.append(new)
        anchor = start if spec.max_concurrent > 1 and drawn is not None else start + duration
    return out


def _draw(
    scenario: Scenario,
    spec: RandomMethod,
    topology: Topology,
    pools: _Pools,
    rng: random.Random,
    kinds: list[str],
    weights: list[float],
    active: list[FaultPlan],
    radius: Any,
) -> tuple[Fault, int, FaultPlan] | None:
    """A fault for one slot, its plan seed and plan; None when MAX_DRAWS attempts all fail."""
    for _ in range(MAX_DRAWS):
        kind = rng.choices(kinds, weights)[0]
        params = DRAWERS[kind](pools, rng)
        seed = rng.getrandbits(32)
        if params is None:
            continue  # nothing of that kind among the targets
        try:
            fault = make_fault(kind, {**params, **spec.parameters.get(kind, {})})
        except (ValueError, TypeError) as e:
            raise ScheduleError(("method", "random", "parameters", kind), str(e)) from None
        try:
            new = plan(fault, assumed_view(scenario, topology, seed))
            check_blast_radius(active, new, radius, topology)
        except PlanError as e:
            fixed = spec.parameters.get(kind, {})
            if isinstance(e, UnknownTarget) and e.param in fixed:  # a typo, not a bad draw
                raise ScheduleError(
                    ("method", "random", "parameters", kind, e.param), str(e)
                ) from None
            continue
        except BlastRadiusExceeded:
            continue
        return fault, seed, new
    return None
