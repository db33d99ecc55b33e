"""The fault catalog: every fault a game day can inject, planned as data before anything breaks.

A fault is a frozen value that names what to break (``PowerOffAz("az-b")``). ``plan`` turns it,
together with a ``ClusterView`` of the cluster (topology, processes, replication groups and their
leaders, a seeded rng), into a ``FaultPlan``: which processes to kill or pause, which directed
links to cut, degrade, reset or disable. Planning is pure; a backend applies a plan and heals it
(chaos/nemesis.py).

    view = ClusterView.assumed(parse_topology("3x2x1"))
    sorted(plan(PowerOffAz("az-b"), view).kills)      # -> ['md-b', 'rt-b', 'sn-b1', 'sn-b2']
    split = plan(Split("az-a|az-b,az-c"), view)
    ("sn-a1", "sn-b1") in split.cuts                  # -> True, and ("sn-b1", "sn-a1") too
    check_blast_radius([split], plan(PowerOffNode("sn-c1"), view), BlastRadius(max_azs=1),
                       view.topology)                 # raises BlastRadiusExceeded (2 AZs)

The package, by job:

    view.py         the cluster as planning sees it (links from chaos/links.py, as the mesh's)
    plans.py        FaultPlan, its footprint, and the blast-radius guard
    catalog.py      the Fault base, the registry, make_fault (pydantic validates every fault)
    targets.py      AZs, racks, processes, sides and groups resolved on a view
    target_fault.py TargetFault: one process, rack or AZ, and what happens to it (kill, pause,
                    isolate): power.py's and partitions.py's single-target kinds in two lines each
    power.py        power off / power loss of node / rack / AZ, pause, rolling restart
    partitions.py   isolate, split, one-way, bridge, majorities ring, random halves
    groups.py       a group's leader, minority or majority; every leader
    link_faults.py  latency, bandwidth, slicer, slow close, reset, disable (one LinkFault shape)
    disk.py         bit rot

Randomized shapes (``bridge``, ``random_halves``, ``majorities_ring``, group ``any``) draw only
from ``view.rng``, so the same seed gives the same plan.
"""

from __future__ import annotations

from .catalog import (
    CATALOG,
    CatalogEntry,
    Fault,
    ParamInfo,
    describe_catalog,
    fault_class,
    fault_fields,
    fault_params,
    make_fault,
    plan,
)
from .errors import BlastRadiusExceeded, NoLeader, PlanError, UnknownFaultKind, UnknownTarget
from .plans import (
    BitRot,
    BlastRadius,
    Degradation,
    FaultPlan,
    Footprint,
    check_blast_radius,
    combined_footprint,
    make_plan,
)
from .target_fault import TargetFault
from .targets import ANY_GROUP, EVERYONE_ELSE
from .view import DEFAULT_TABLE, ROLES, ClusterView, ReplicaGroup, groups_from_status

# The families, in catalog order (``gameday faults`` lists kinds as they register).
from .power import (  # isort: skip
    PauseNode,
    PowerLoss,
    PowerLossAz,
    PowerLossNode,
    PowerLossRack,
    PowerOffAz,
    PowerOffNode,
    PowerOffRack,
    RollingRestart,
)
from .partitions import (  # isort: skip
    Bridge,
    IsolateAz,
    IsolateNode,
    MajoritiesRing,
    OneWay,
    RandomHalves,
    Split,
)
from .groups import Leaders, LeaderIsolation, MajorityOf, MinorityOf  # isort: skip
from .link_faults import (  # isort: skip
    Bandwidth,
    DisableLinks,
    Latency,
    LinkFault,
    ResetPeer,
    SlowClose,
    Slicer,
)
from .disk import BitRotFault  # isort: skip

__all__ = [
    "ANY_GROUP",
    "CATALOG",
    "DEFAULT_TABLE",
    "EVERYONE_ELSE",
    "ROLES",
    "Bandwidth",
    "BitRot",
    "BitRotFault",
    "BlastRadius",
    "BlastRadiusExceeded",
    "Bridge",
    "CatalogEntry",
    "ClusterView",
    "Degradation",
    "DisableLinks",
    "Fault",
    "FaultPlan",
    "Footprint",
    "IsolateAz",
    "IsolateNode",
    "Latency",
    "LeaderIsolation",
    "Leaders",
    "LinkFault",
    "MajoritiesRing",
    "MajorityOf",
    "MinorityOf",
    "NoLeader",
    "OneWay",
    "ParamInfo",
    "PauseNode",
    "PlanError",
    "PowerLoss",
    "PowerLossAz",
    "PowerLossNode",
    "PowerLossRack",
    "PowerOffAz",
    "PowerOffNode",
    "PowerOffRack",
    "RandomHalves",
    "ReplicaGroup",
    "ResetPeer",
    "RollingRestart",
    "Slicer",
    "SlowClose",
    "Split",
    "TargetFault",
    "UnknownFaultKind",
    "UnknownTarget",
    "check_blast_radius",
    "combined_footprint",
    "describe_catalog",
    "fault_class",
    "fault_fields",
    "fault_params",
    "groups_from_status",
    "make_fault",
    "make_plan",
    "plan",
]
