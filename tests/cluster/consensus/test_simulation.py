"""Seeded schedules through the deterministic simulator (safety, then liveness after healing).

CI runs SCHEDULES seeds (>= 1,000) split into batches so a failure names its seed. Replay one:
``SIM_SEED=1234 pytest tests/cluster/consensus/test_simulation.py -k replay``.
"""

from __future__ import annotations

import os

import pytest

from .simulator import SimConfig, Simulation, SimulationFailure

SCHEDULES = int(os.environ.get("SIM_SCHEDULES", "1000"))
BATCH = 50
BASE_SEED = int(os.environ.get("SIM_BASE_SEED", "0"))


@pytest.mark.slow
@pytest.mark.parametrize("batch", range((SCHEDULES + BATCH - 1) // BATCH))
def test_seeded_schedules(batch: int) -> None:
    first = BASE_SEED + batch * BATCH
    for seed in range(first, min(first + BATCH, BASE_SEED + SCHEDULES)):
        Simulation(seed).run()


def test_a_few_schedules_quickly() -> None:
    for seed in range(5):
        Simulation(seed).run()


def test_heavy_faults_still_safe_and_live() -> None:
    config = SimConfig(loss=0.3, duplicate=0.2, crash_rate=0.05, partition_rate=0.1)
    for seed in range(10):
        Simulation(seed, config).run()


@pytest.mark.skipif("SIM_SEED" not in os.environ, reason="set SIM_SEED=<seed> to replay one")
def test_replay() -> None:
    Simulation(int(os.environ["SIM_SEED"])).run()


def test_same_seed_same_schedule() -> None:
    a = Simulation(7).run()
    b = Simulation(7).run()
    assert a.trace == b.trace
    assert a.committed == b.committed
    assert a.acked and a.acked == b.acked


def test_a_full_member_and_a_log_replica_elect_while_the_other_stays_cut_off() -> None:
    """n3 a log replica in every group, and after the chaos one full member stays cut off: the
    two left must elect and commit, also when the log replica holds entries the full member
    lacks (it stands in, then hands over). Before the stand-in, 9 of these 20 seeds left groups
    leaderless (60 of the first 200). In these seeds the two left hold every group's
    committed log, so every group must make progress (none is stranded, below)."""
    for seed in range(20):
        assert Simulation(seed, SimConfig(log_replica=True)).run().stranded == set()


# Every seed that 8765e18 found stranded (0-5999 of both log-replica schedules): the log
# replica dropped, on a stateless InstallSnapshot, committed entries it held that the full
# member left lacked. It now keeps them (raft.py _handle_snapshot), so these must progress.
STRANDED_BEFORE = [
    *((seed, False) for seed in (99, 627, 777, 1619, 1958, 3665, 4962)),
    *((seed, True) for seed in (425, 1302, 2433, 2963, 3680)),
]


@pytest.mark.parametrize(("seed", "spread"), STRANDED_BEFORE)
def test_the_two_left_hold_the_committed_log_where_a_log_replica_got_a_stateless_snapshot(
    seed: int, spread: bool
) -> None:
    """The two left (full member + log replica) hold every group's committed log, so every
    group makes progress: none is stranded (``Simulation.stranded`` stays for what no
    protocol could do; the liveness phase demands progress everywhere else)."""
    sim = Simulation(seed, SimConfig(spread_first_leaders=spread, log_replica=True)).run()
    assert sim.stranded == set()
    full = next(n for n in ("n1", "n2") if n != sim.isolated)
    for group in sim.groups:  # a live write applied everywhere by the full member left
        assert any(d.startswith(b"live") for _, d in sim.replicas[(full, group)].applied)


def test_first_leaders_taking_turns_stays_safe_and_live() -> None:
    """RaftConfig.spread_first_leaders (storage nodes run with it) changes only when new
    groups' replicas first campaign: the same safety and liveness checks hold."""
    for seed in range(30):
        Simulation(seed, SimConfig(spread_first_leaders=True)).run()
    for seed in range(10):
        Simulation(seed, SimConfig(spread_first_leaders=True, log_replica=True)).run()


def test_log_replicas_compact_and_every_committed_entry_stays_on_a_majority_of_disks() -> None:
    """Log replicas compact their own logs (as storage does: a tail, and never past what
    every full voter holds, ``Raft.full_voters_hold``); the durability check runs at every
    step (``check_durable_copies``). The seeds do reach log replica snapshots."""
    snapshots = 0
    for seed in range(20):
        for spread in (False, True):
            config = SimConfig(spread_first_leaders=spread, log_replica=True)
            sim = Simulation(seed, config).run()
            snapshots += sum(sim.disks[("n3", g)].snapshot is not None for g in sim.groups)
    assert snapshots >= 60  # of 120 log replica groups (about 95 compact here)


@pytest.mark.parametrize("seed", [26, 31])
def test_a_log_replica_that_kept_only_its_tail_left_committed_entries_on_one_disk(
    seed: int,
) -> None:
    """What AppendEntries.held prevents: a log replica compacting ``every / 2`` below its
    applied index, whatever the full members hold (compaction.py before it), leaves
    committed entries on the leader alone while a full member lags: these seeds catch it."""
    config = SimConfig(log_replica=True, log_replica_tail_only=True)
    with pytest.raises(SimulationFailure, match=r"committed index \d+ is on 1 disk"):
        Simulation(seed, config).run()
    Simulation(seed, SimConfig(log_replica=True)).run()  # with the rule: safe, live
