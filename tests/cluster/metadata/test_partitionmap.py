"""Hash ranges, placement, group ids and (de)serialization of the partition map."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections import Counter

import pytest

from cluster.metadata.partitionmap import (
    HASH_SPACE,
    META_GROUP,
    KeySchema,
    Partition,
    PartitionMap,
    TableLayout,
    TableSpec,
    build_layout,
    group_id,
    hash_ranges,
    meta_replicas,
    partition_key_hash,
    place_partitions,
)
from cluster.storage.itemstore import encode_key_value
from cluster.topology import Topology, parse_topology

SAFE_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def random_topology(rng: random.Random) -> Topology:
    azs = rng.choice([3, 3, 3, 4, 5, 6])
    return Topology.from_counts(azs, rng.randint(1, 3), rng.randint(1, 3))


def spread(counts: dict[str, int], topo: Topology) -> int:
    values = [counts.get(n.id, 0) for n in topo.storage_nodes()]
    return max(values) - min(values)


# --- hashing and ranges ----------------------------------------------------------------------


def test_partition_key_hash_is_md5_as_int() -> None:
    pk = encode_key_value({"S": "user#1"})
    assert partition_key_hash(pk) == int(hashlib.md5(pk).hexdigest(), 16)
    assert partition_key_hash(b"") == 0xD41D8CD98F00B204E9800998ECF8427E


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 64, 1000])
def test_hash_ranges_cover_space_exactly(n: int) -> None:
    ranges = hash_ranges(n)
    assert len(ranges) == n
    assert ranges[0][0] == 0
    assert ranges[-1][1] == HASH_SPACE - 1
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert lo == hi + 1  # no gap, no overlap
    sizes = {hi - lo + 1 for lo, hi in ranges}
    assert max(sizes) - min(sizes) <= 1
    assert sum(hi - lo + 1 for lo, hi in ranges) == HASH_SPACE


@pytest.mark.parametrize("n", [0, -1, True])
def test_hash_ranges_need_a_partition(n: int) -> None:
    with pytest.raises(ValueError):
        hash_ranges(n)


def test_partition_for_matches_brute_force() -> None:
    rng = random.Random(1)
    topo = parse_topology("3x2x2")
    for n in (1, 2, 5, 16):
        layout = build_layout(topo, TableSpec("things", KeySchema("pk", "S"), partitions=n))
        for _ in range(1000):
            pk = encode_key_value({"S": f"k{rng.getrandbits(64)}"})
            h = partition_key_hash(pk)
            owners = [p for p in layout.partitions if p.hash_lo <= h <= p.hash_hi]
            assert len(owners) == 1
            assert layout.partition_for(pk) is owners[0]
        for p in layout.partitions:  # the edges of every range
            assert layout.partition_for_hash(p.hash_lo) is p
            assert layout.partition_for_hash(p.hash_hi) is p
    with pytest.raises(ValueError):
        layout.partition_for_hash(HASH_SPACE)


# --- placement -------------------------------------------------------------------------------


def check_placement(topo: Topology, parts: tuple[Partition, ...], table: str, count: int) -> None:
    assert len(parts) == count
    for i, p in enumerate(parts):
        assert (p.table, p.index, p.id) == (table, i, group_id(table, i))
        assert len({topo.az_of(r) for r in p.replicas}) == 3, p
    assert [(p.hash_lo, p.hash_hi) for p in parts] == list(hash_ranges(count))


def test_placement_properties_over_random_topologies() -> None:
    rng = random.Random(2024)
    for _ in range(150):
        topo = random_topology(rng)
        meta = Counter(meta_replicas(topo)) if rng.random() < 0.5 else Counter[str]()
        pmap = PartitionMap(0)
        for t in range(rng.randint(1, 5)):
            name, count = f"table{t}", rng.randint(1, 24)
            load = meta + Counter(pmap.replicas_per_node())
            parts = place_partitions(topo, name, count, load)
            check_placement(topo, parts, name, count)
            assert place_partitions(topo, name, count, dict(reversed(load.items()))) == parts
            layout = TableLayout(TableSpec(name, KeySchema("id", "S"), partitions=count), parts)
            pmap = pmap.with_table(layout)
            counts = pmap.replicas_per_node()
            assert sum(counts.values()) == 3 * sum(len(x.partitions) for x in pmap.tables.values())
            assert spread(dict(meta + Counter(counts)), topo) <= 1, (topo.shape, counts, meta)


def test_placement_balances_racks_within_each_az() -> None:
    rng = random.Random(5)
    for _ in range(50):
        topo = random_topology(rng)
        parts = place_partitions(topo, "tbl", rng.randint(1, 40))
        counts = Counter(r for p in parts for r in p.replicas)
        for nodes in topo.by_az().values():
            racks = Counter({n.rack: 0 for n in nodes})
            for n in nodes:
                racks[n.rack] += counts[n.id]
            assert max(racks.values()) - min(racks.values()) <= 1, (topo.shape, racks)


def test_placement_counts_meta_group_when_given() -> None:
    topo = parse_topology("3x2x1")
    load = Counter(meta_replicas(topo))
    parts = place_partitions(topo, "orders", 1, load)
    assert set(parts[0].replicas) == {"sn-a2", "sn-b2", "sn-c2"}


def test_placement_fills_an_empty_node_first() -> None:
    topo = parse_topology("3x2x1")
    load = {"sn-a1": 4, "sn-a2": 0, "sn-b1": 2, "sn-b2": 2, "sn-c1": 2, "sn-c2": 2}
    parts = place_partitions(topo, "t2", 4, load)
    assert all("sn-a2" in p.replicas for p in parts)


def test_placement_picks_least_loaded_azs_when_more_than_three() -> None:
    topo = parse_topology("4x1x1")
    parts = place_partitions(topo, "tbl", 4)
    per_node = Counter(r for p in parts for r in p.replicas)
    assert per_node == {"sn-a1": 3, "sn-b1": 3, "sn-c1": 3, "sn-d1": 3}
    parts = place_partitions(topo, "tbl", 1, {"sn-a1": 5})
    assert set(parts[0].replicas) == {"sn-b1", "sn-c1", "sn-d1"}


def test_placement_avoids_fixed_triples() -> None:
    topo = parse_topology("3x2x1")
    parts = place_partitions(topo, "orders", 4)
    assert len({frozenset(p.replicas) for p in parts}) == 4
    first_azs = Counter(topo.az_of(p.replicas[0]) for p in place_partitions(topo, "o", 9))
    assert first_azs == {"az-a": 3, "az-b": 3, "az-c": 3}


def test_placement_ignores_unknown_nodes_and_rejects_bad_load() -> None:
    topo = parse_topology("3x1x1")
    assert place_partitions(topo, "tbl", 2, {"sn-z9": 100}) == place_partitions(topo, "tbl", 2)
    with pytest.raises(ValueError, match="load of sn-a1"):
        place_partitions(topo, "tbl", 2, {"sn-a1": -1})
    with pytest.raises(ValueError):
        place_partitions(topo, "tbl", 0)


def test_meta_group() -> None:
    assert META_GROUP == "meta"
    assert meta_replicas(parse_topology("3x2x1")) == ("sn-a1", "sn-b1", "sn-c1")
    assert meta_replicas(parse_topology("5x2x2")) == ("sn-a1", "sn-b1", "sn-c1")


# --- group ids -------------------------------------------------------------------------------


def test_group_id_plain_names() -> None:
    assert group_id("orders", 3) == "orders.p3"
    assert group_id("My_Table-2.v1", 0) == "My_Table-2.v1.p0"


@pytest.mark.parametrize(
    "table",
    [
        "x" * 255,
        "a" * 123,  # "a"*123 + ".p12345" is 130 characters
        "...",
        "..x",
        "-rf",
        "--help",
        "a/b",
        "../../etc",
        "sp ace",
        "ünïcode",
        "nul\x00byte",
        "",
    ],
)
def test_group_id_is_directory_safe(table: str) -> None:
    for index in (0, 7, 12345):
        gid = group_id(table, index)
        assert SAFE_GROUP.fullmatch(gid), gid
        assert not gid.startswith((".", "-"))
        assert gid.endswith(f".p{index}")
        assert gid == group_id(table, index)  # stable


def test_group_ids_stay_distinct_for_long_names_with_a_common_prefix() -> None:
    names = ["t" * 200 + str(i) for i in range(100)] + ["t" * 255]
    gids = {group_id(n, i) for n in names for i in range(3)}
    assert len(gids) == len(names) * 3


def test_long_table_partitions_use_safe_ids() -> None:
    name = "Z" * 255
    layout = build_layout(parse_topology(), TableSpec(name, KeySchema("pk", "N"), partitions=3))
    assert all(SAFE_GROUP.fullmatch(p.id) for p in layout.partitions)
    assert len({p.id for p in layout.partitions}) == 3


# --- specs and validation --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "x" * 256, "a b", "tab/le"])
def test_table_names_follow_dynamodb(name: str) -> None:
    with pytest.raises(ValueError, match="table names"):
        TableSpec(name, KeySchema("pk", "S"))


def test_key_schema_names_and_parts() -> None:
    assert KeySchema("id", "S").names() == ("id",)
    assert KeySchema("id", "S").parts() == (("hash", "id", "S"),)
    ks = KeySchema("pk", "B", "sk", "N")
    assert ks.names() == ("pk", "sk")
    assert ks.parts() == (("hash", "pk", "B"), ("range", "sk", "N"))


def test_spec_validation() -> None:
    ks = KeySchema("pk", "S")
    with pytest.raises(ValueError, match="billing mode"):
        TableSpec("tbl", ks, billing_mode="FREE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read capacity"):
        TableSpec("tbl", ks, billing_mode="PROVISIONED", read_capacity=0, write_capacity=5)
    with pytest.raises(ValueError, match="table status"):
        TableSpec("tbl", ks, status="GONE")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partitions"):
        TableSpec("tbl", ks, partitions=0)
    with pytest.raises(ValueError, match="range key"):
        KeySchema("pk", "S", "sk", None)
    with pytest.raises(ValueError, match="hash key type"):
        KeySchema("pk", "BOOL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="both named"):
        KeySchema("pk", "S", "pk", "N")


def test_layout_rejects_gaps_and_mismatches() -> None:
    topo = parse_topology()
    spec = TableSpec("tbl", KeySchema("pk", "S"), partitions=2)
    p0, p1 = place_partitions(topo, "tbl", 2)
    with pytest.raises(ValueError, match="expected"):
        TableLayout(spec, (p0, Partition(p1.id, "tbl", 1, p1.hash_lo + 1, p1.hash_hi, p1.replicas)))
    with pytest.raises(ValueError, match="end of the hash space"):
        TableLayout(spec, (p0, Partition(p1.id, "tbl", 1, p1.hash_lo, p1.hash_hi - 1, p1.replicas)))
    with pytest.raises(ValueError, match="has 2 partitions"):
        TableLayout(spec, (p0,))
    with pytest.raises(ValueError, match="distinct replicas"):
        Partition("tbl.p0", "tbl", 0, 0, HASH_SPACE - 1, ("sn-a1", "sn-a1", "sn-b1"))
    with pytest.raises(ValueError, match="group ids"):
        Partition("tbl/p0", "tbl", 0, 0, HASH_SPACE - 1, ("sn-a1", "sn-b1", "sn-c1"))


# --- the map ---------------------------------------------------------------------------------


def sample_map(rng: random.Random) -> tuple[Topology, PartitionMap]:
    topo = random_topology(rng)
    pmap = PartitionMap(rng.randint(0, 5))
    for t in range(rng.randint(0, 4)):
        ranged = rng.random() < 0.5
        spec = TableSpec(
            name=f"tbl-{t}." + "x" * rng.choice([0, 5, 245]),
            key_schema=KeySchema(
                "pk", rng.choice(["S", "N", "B"]), "sk" if ranged else None, "S" if ranged else None
            ),
            billing_mode=rng.choice(["PAY_PER_REQUEST", "PROVISIONED"]),
            read_capacity=rng.randint(1, 100),
            write_capacity=rng.randint(1, 100),
            partitions=rng.randint(1, 12),
            created_at=rng.random() * 2e9,
            status=rng.choice(["CREATING", "ACTIVE", "DELETING"]),
        )
        pmap = pmap.with_table(build_layout(topo, spec, pmap.replicas_per_node()))
    return topo, pmap


def test_round_trips_through_json() -> None:
    rng = random.Random(3)
    for _ in range(40):
        _, pmap = sample_map(rng)
        text = json.dumps(pmap.to_dict())
        again = PartitionMap.from_dict(json.loads(text))
        assert again == pmap
        assert hash(again) == hash(pmap)
        assert json.dumps(again.to_dict()) == text
        for layout in pmap.tables.values():
            assert TableLayout.from_dict(layout.to_dict()) == layout
            assert TableSpec.from_dict(layout.spec.to_dict()) == layout.spec
            for p in layout.partitions:
                assert Partition.from_dict(p.to_dict()) == p


def test_hash_bounds_are_hex_in_json() -> None:
    layout = build_layout(parse_topology(), TableSpec("tbl", KeySchema("pk", "S"), partitions=2))
    d = layout.to_dict()["partitions"]
    assert d[0]["hash_lo"] == "0" * 32
    assert d[1]["hash_hi"] == "f" * 32
    d[0]["hash_hi"] = 12345
    with pytest.raises(ValueError, match="32 lowercase hex"):
        Partition.from_dict(d[0])


def test_replicas_per_node_and_groups_on() -> None:
    rng = random.Random(4)
    for _ in range(30):
        topo, pmap = sample_map(rng)
        counts = pmap.replicas_per_node()
        for node in topo.storage_nodes():
            groups = pmap.groups_on(node.id)
            assert len(groups) == counts.get(node.id, 0)
            assert all(node.id in pmap.group(g).replicas for g in groups)
        assert spread(counts, topo) <= 1


def test_map_is_read_only_and_versions_advance() -> None:
    topo = parse_topology()
    layout = build_layout(topo, TableSpec("orders", KeySchema("id", "S"), partitions=2))
    empty = PartitionMap(1)
    source = {"orders": layout}
    pmap = PartitionMap(1, source)
    source.clear()
    assert list(pmap.tables) == ["orders"]  # copied, not shared
    with pytest.raises(TypeError):
        pmap.tables["x"] = layout  # type: ignore[index]
    grown = empty.with_table(layout)
    assert grown.version == 2 and grown.layout("orders") == layout
    shrunk = grown.without_table("orders")
    assert shrunk.version == 3 and not shrunk.tables
    with pytest.raises(KeyError):
        shrunk.layout("orders")
    with pytest.raises(KeyError):
        pmap.group("orders.p9")
    assert pmap.group("orders.p1") is layout.partitions[1]
    with pytest.raises(ValueError, match="holds the layout"):
        PartitionMap(1, {"other": layout})
