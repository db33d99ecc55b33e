"""What goes wrong when a fault is built or planned: every error names what to fix.

try:
    plan(PowerOffAz("az-q"), view)
except UnknownTarget as e:
    e.param        # -> "target": the fault's field at fault
"""

from __future__ import annotations


class PlanError(ValueError):
    """A fault cannot be built or planned on this cluster; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownTarget(PlanError):
    """A fault names an AZ, rack, process or group the cluster does not have."""


class NoLeader(PlanError):
    """A leader-targeted fault found no leader to target."""


class UnknownFaultKind(ValueError):
    """No fault of that kind is in the catalog."""


class BlastRadiusExceeded(Exception):
    """Applying a fault would take down more of the cluster than the scenario allows."""
