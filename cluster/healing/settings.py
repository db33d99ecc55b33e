"""The knobs of healing and scrub, as one immutable value a storage node is configured with.

HealingSettings(grace_seconds=3.0, scrub_seconds=60.0)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealingSettings:
    # A member silent (to its leader) and unreachable (to probes) this long is replaced.
    grace_seconds: float = 3.0
    probe_seconds: float = 0.5  # how often each node probes its peers and plans
    probe_timeout: float = 1.0
    map_seconds: float = 3.0  # how often the partition map is compared with the groups
    # Seconds between scrub rounds of each group a node leads; 0 turns periodic scrub off.
    scrub_seconds: float = 60.0
    archive_seconds: float = 1.0  # how often leaders archive newly committed entries
    # A log replica is turned into a full one once it is this old (the paper builds full
    # replicas in the background; the lost node may be back before that).
    full_after_seconds: float = 5.0
    rebuild_timeout: float = 600.0  # building a full replica may copy a lot of data
    change_timeout: float = 5.0  # waiting for a membership change to commit

    def __post_init__(self) -> None:
        if self.grace_seconds <= 0 or self.probe_seconds <= 0 or self.probe_timeout <= 0:
            raise ValueError("grace, probe interval and probe timeout must be positive")
        if self.scrub_seconds < 0:
            raise ValueError("scrub_seconds must be >= 0 (0: no periodic scrub)")
