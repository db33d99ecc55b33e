"""Admission control: table-wide token pools (GAC), router-local buckets, partition buckets.

Implements the DynamoDB paper's admission control (USENIX ATC 2022, section 4): request
routers admit from local token buckets that a global admission control service refills every
few seconds, and each partition's leader enforces its own bucket as a second line of defence.
Everything but :func:`make_gac_app` and :class:`GacClient` is sans-IO (``now`` passed in).

    gac = GlobalAdmission()
    gac.set_table("orders", read_rate=100, write_rate=50, mode="PROVISIONED", now=0.0)
    router = RouterAdmission("r1", now=0.0)
    router.try_admit("orders", "write", write_units(3000), now=0.0)   # False: nothing granted
    asks = router.pending_requests(now=0.0)       # [{"table": "orders", "kind": "write", ...}]
    grants = [{**ask, "tokens": g.tokens, "valid_for": g.valid_for_seconds}
              for ask in asks
              for g in [gac.request_tokens("r1", ask["table"], ask["kind"], ask["want"], 0.0)]]
    router.apply_grants(grants, now=0.0)
    router.try_admit("orders", "write", write_units(3000), now=0.1)   # True

Modules: :mod:`.bucket` (token bucket, burst credit), :mod:`.gac` (service logic and aiohttp
app), :mod:`.router_side` (router buckets, capacity units, GAC client), :mod:`.partition`
(per-partition buckets on storage node leaders).
"""

from .bucket import DEFAULT_BURST_CREDIT, BurstCredit, TokenBucket
from .gac import (
    CapacityMode,
    GacSettings,
    GlobalAdmission,
    Grant,
    Kind,
    TableLimits,
    UnknownTableError,
    make_gac_app,
)
from .partition import DEFAULT_HEADROOM, PartitionAdmission, partition_share
from .router_side import GacClient, RouterAdmission, RouterSettings, read_units, write_units

__all__ = [
    "DEFAULT_BURST_CREDIT",
    "DEFAULT_HEADROOM",
    "BurstCredit",
    "CapacityMode",
    "GacClient",
    "GacSettings",
    "GlobalAdmission",
    "Grant",
    "Kind",
    "PartitionAdmission",
    "RouterAdmission",
    "RouterSettings",
    "TableLimits",
    "TokenBucket",
    "UnknownTableError",
    "make_gac_app",
    "partition_share",
    "read_units",
    "write_units",
]
