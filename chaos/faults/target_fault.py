"""One shape for the faults aimed at one named thing: a process, a rack or an AZ.

Powering off a node, a rack or an AZ, pausing a process and isolating a node or an AZ all take
one ``target``, resolve it on the view (errors name the field and list what the cluster has)
and do one thing to what it resolved to. ``TargetFault`` does that once; a kind says only its
name, what its target names (``scope``) and what happens to it (``effect``), and is registered:

    class PowerOffRack(TargetFault, kind="power_off_rack", scope="rack", effect="kill"):
        '''Power off a rack: SIGKILL every storage node on it.'''

    plan(PowerOffRack("az-a/r1"), view).kills      # -> frozenset({'sn-a1'})

A family with an effect of its own (the power_loss faults, say) overrides ``breaks``, which
returns the ``FaultPlan`` fields to set for the resolved processes, as ``LinkFault.breaks``
does for links.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from pydantic.dataclasses import dataclass

from .catalog import FAULT_CONFIG, Fault, param, register
from .plans import FaultPlan, make_plan
from .targets import between, resolve_az, resolve_process, resolve_rack
from .view import ClusterView

Scope = Literal["process", "rack", "az"]
Effect = Literal["kill", "pause", "isolate", "custom"]

TARGET_HELP: dict[Scope, str] = {
    "process": "the process, e.g. sn-a1 (rt-a, md-a and gac work too)",
    "rack": "the rack, e.g. az-a/r1 (its storage nodes)",
    "az": "the AZ, e.g. az-b (its storage nodes, router, MemDS, and gac if there)",
}


@dataclass(frozen=True, slots=True, config=FAULT_CONFIG)
class TargetFault(Fault):
    """Base of the faults on one process, rack or AZ (not itself in the catalog)."""

    scope: ClassVar[Scope] = "process"
    effect: ClassVar[Effect] = "custom"
    target: str = param("what the fault hits")

    def __init_subclass__(
        cls, *, kind: str = "", scope: Scope = "process", effect: Effect = "custom"
    ) -> None:
        # No super() call: slots make the decorated TargetFault a new class, which zero-argument
        # super() does not know, and no base of it has an __init_subclass__ of its own.
        cls.scope, cls.effect = scope, effect
        # Each kind's own help for ``target`` (`gameday faults`, scenario errors); the
        # validator is TargetFault's, unchanged.
        fields = dict(cls.__pydantic_fields__)  # type: ignore[attr-defined]
        target = copy.copy(fields["target"])
        target.description = TARGET_HELP[scope]
        fields["target"] = target
        cls.__pydantic_fields__ = fields  # type: ignore[attr-defined]
        if kind:
            cls.kind = kind
            register(cls)

    def targets(self, view: ClusterView) -> frozenset[str]:
        """The processes ``target`` names on ``view`` (UnknownTarget names the field)."""
        where = f"{self.kind} target"
        if self.scope == "rack":
            return resolve_rack(view, self.target, where, "target")
        if self.scope == "az":
            return resolve_az(view, self.target, where, "target")
        return frozenset({resolve_process(view, self.target, where, "target")})

    def breaks(self, view: ClusterView, targets: frozenset[str]) -> dict[str, Any]:
        """What happens to ``targets``: the ``FaultPlan`` fields to set."""
        if self.effect == "kill":
            return {"kills": targets}
        if self.effect == "pause":
            return {"pauses": targets}
        if self.effect == "isolate":  # every link between them and everyone else, both ways
            return {"cuts": between(view, [targets, frozenset(view.processes()) - targets])}
        raise NotImplementedError(f"{type(self).__name__} must say what it breaks")

    def plan(self, view: ClusterView) -> FaultPlan:
        return make_plan(view, self.describe(), **self.breaks(view, self.targets(view)))
