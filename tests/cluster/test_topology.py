"""Topology naming, parsing, lookups and serialization."""

from __future__ import annotations

import json
import random

import pytest

from cluster.topology import (
    DEFAULT_TOPOLOGY,
    ProcessSpec,
    Role,
    StorageNodeSpec,
    Topology,
    az_name,
    parse_topology,
)


def ids(specs: tuple[StorageNodeSpec, ...] | tuple[ProcessSpec, ...]) -> list[str]:
    return [s.id for s in specs]


def test_default_is_3x2x1() -> None:
    assert DEFAULT_TOPOLOGY == "3x2x1"
    assert parse_topology() == Topology(("az-a", "az-b", "az-c"), 2, 1)
    assert parse_topology().shape == "3x2x1"


def test_naming_3x2x1() -> None:
    t = parse_topology("3x2x1")
    assert t.storage_nodes() == (
        StorageNodeSpec("sn-a1", "az-a", "az-a/r1"),
        StorageNodeSpec("sn-a2", "az-a", "az-a/r2"),
        StorageNodeSpec("sn-b1", "az-b", "az-b/r1"),
        StorageNodeSpec("sn-b2", "az-b", "az-b/r2"),
        StorageNodeSpec("sn-c1", "az-c", "az-c/r1"),
        StorageNodeSpec("sn-c2", "az-c", "az-c/r2"),
    )
    assert t.racks() == ("az-a/r1", "az-a/r2", "az-b/r1", "az-b/r2", "az-c/r1", "az-c/r2")
    assert t.routers() == (
        ProcessSpec("rt-a", Role.ROUTER, "az-a"),
        ProcessSpec("rt-b", Role.ROUTER, "az-b"),
        ProcessSpec("rt-c", Role.ROUTER, "az-c"),
    )
    assert t.memds() == (
        ProcessSpec("md-a", Role.MEMDS, "az-a"),
        ProcessSpec("md-b", Role.MEMDS, "az-b"),
        ProcessSpec("md-c", Role.MEMDS, "az-c"),
    )


def test_naming_3x2x2() -> None:
    t = parse_topology("3x2x2")
    by_rack = {rack: ids(nodes) for rack, nodes in t.by_rack().items()}
    assert by_rack == {
        "az-a/r1": ["sn-a1", "sn-a2"],
        "az-a/r2": ["sn-a3", "sn-a4"],
        "az-b/r1": ["sn-b1", "sn-b2"],
        "az-b/r2": ["sn-b3", "sn-b4"],
        "az-c/r1": ["sn-c1", "sn-c2"],
        "az-c/r2": ["sn-c3", "sn-c4"],
    }
    assert {az: ids(nodes) for az, nodes in t.by_az().items()} == {
        "az-a": ["sn-a1", "sn-a2", "sn-a3", "sn-a4"],
        "az-b": ["sn-b1", "sn-b2", "sn-b3", "sn-b4"],
        "az-c": ["sn-c1", "sn-c2", "sn-c3", "sn-c4"],
    }


def test_naming_4x1x1() -> None:
    t = parse_topology("4x1x1")
    assert t.azs == ("az-a", "az-b", "az-c", "az-d")
    assert ids(t.storage_nodes()) == ["sn-a1", "sn-b1", "sn-c1", "sn-d1"]
    assert t.rack_of("sn-d1") == "az-d/r1"
    assert ids(t.routers()) == ["rt-a", "rt-b", "rt-c", "rt-d"]
    assert ids(t.memds()) == ["md-a", "md-b", "md-c", "md-d"]


def test_several_routers_and_memds_per_az_are_numbered() -> None:
    t = Topology.from_counts(3, 1, 1, routers_per_az=2, memds_per_az=3)
    assert ids(t.routers()) == ["rt-a1", "rt-a2", "rt-b1", "rt-b2", "rt-c1", "rt-c2"]
    assert ids(t.memds())[:3] == ["md-a1", "md-a2", "md-a3"]
    assert t.az_of("md-c3") == "az-c"


def test_lookups() -> None:
    t = parse_topology("3x2x2")
    assert t.node("sn-b3") == StorageNodeSpec("sn-b3", "az-b", "az-b/r2")
    assert t.rack_of("sn-c2") == "az-c/r1"
    assert t.az_of("sn-c2") == "az-c"
    assert t.az_of("rt-b") == "az-b"
    assert t.az_of("md-a") == "az-a"
    for missing in ("sn-a5", "sn-d1", "rt-a"):
        with pytest.raises(KeyError, match=missing):
            t.node(missing)
    with pytest.raises(KeyError, match="rt-a"):
        t.rack_of("rt-a")  # routers sit in an AZ, on no rack
    with pytest.raises(KeyError, match="rt-d"):
        t.az_of("rt-d")


def test_processes_lists_every_process_once() -> None:
    t = parse_topology("4x2x3")
    procs = t.processes()
    assert len(procs) == 4 + 4 + 4 * 2 * 3
    assert len({p.id for p in procs}) == len(procs)
    assert [p.id for p in procs if p.role is Role.STORAGE] == ids(t.storage_nodes())
    assert all(p.az == t.az_of(p.id) for p in procs)


def test_subset_of_azs_keeps_letters() -> None:
    t = Topology(("az-a", "az-c", "az-d"), 1, 1)
    assert ids(t.storage_nodes()) == ["sn-a1", "sn-c1", "sn-d1"]
    assert ids(t.routers()) == ["rt-a", "rt-c", "rt-d"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3x2", "topology must look like AZSxRACKSxNODES, e.g. 3x2x1; got '3x2'"),
        ("", "topology must look like AZSxRACKSxNODES"),
        ("three", "topology must look like AZSxRACKSxNODES"),
        ("3x2x1x1", "topology must look like AZSxRACKSxNODES"),
        ("-3x2x1", "topology must look like AZSxRACKSxNODES"),
        ("3x2.5x1", "topology must look like AZSxRACKSxNODES"),
        ("2x2x1", "at least 3 AZs are needed because every partition has 3 replicas"),
        ("0x1x1", "the number of AZs must be a positive integer, got 0"),
        ("27x1x1", "at most 26 AZs"),
        ("3x0x1", "racks per AZ must be a positive integer, got 0"),
        ("3x1x0", "nodes per rack must be a positive integer, got 0"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_topology(text)
    assert message in str(err.value)


def test_parse_is_lenient_about_case_and_spaces() -> None:
    assert parse_topology(" 3X2x1\n") == parse_topology("3x2x1")
    assert parse_topology("26x1x1").azs[-1] == "az-z"


@pytest.mark.parametrize(
    "azs",
    [
        ("az-a", "az-b"),
        ("az-a", "az-b", "az-b"),
        ("az-a", "az-b", "zone-c"),
        ("az-a", "az-b", "az-C"),
    ],
)
def test_bad_az_names_are_rejected(azs: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        Topology(azs, 1, 1)


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_counts_must_be_positive_ints(value: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        Topology(("az-a", "az-b", "az-c"), value, 1)  # type: ignore[arg-type]


def test_az_name_bounds() -> None:
    assert az_name(0) == "az-a"
    assert az_name(25) == "az-z"
    with pytest.raises(ValueError):
        az_name(26)


def test_hashable_and_round_trips() -> None:
    rng = random.Random(7)
    for _ in range(50):
        t = Topology.from_counts(
            rng.randint(3, 26),
            rng.randint(1, 4),
            rng.randint(1, 4),
            routers_per_az=rng.randint(1, 3),
            memds_per_az=rng.randint(1, 3),
        )
        again = Topology.from_dict(json.loads(json.dumps(t.to_dict())))
        assert again == t
        assert hash(again) == hash(t)
        assert len({t, again}) == 1
        assert parse_topology(t.shape).storage_nodes() == t.storage_nodes()


def test_from_dict_defaults_routers_and_memds() -> None:
    t = Topology.from_dict(
        {"azs": ["az-a", "az-b", "az-c"], "racks_per_az": 2, "nodes_per_rack": 1}
    )
    assert t == parse_topology("3x2x1")


def test_node_ids_are_unique_and_counted() -> None:
    for shape in ("3x1x1", "3x2x1", "3x2x2", "5x3x4", "26x2x2"):
        t = parse_topology(shape)
        azs, racks, nodes = (int(x) for x in shape.split("x"))
        all_ids = ids(t.storage_nodes())
        assert len(all_ids) == len(set(all_ids)) == azs * racks * nodes
        assert all(len(ns) == racks * nodes for ns in t.by_az().values())
        assert all(len(ns) == nodes for ns in t.by_rack().values())
