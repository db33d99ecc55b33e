"""The SQLite item store and its order-preserving key encoding."""

from __future__ import annotations

import base64
import json
import random
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import crc32c
import pytest

from cluster.storage.itemstore import (
    AppliedMark,
    DeleteItem,
    DeleteTable,
    ItemStore,
    PutItem,
    canonical_json,
    decode_key_value,
    encode_key_value,
    prefix_upper_bound,
    row_crc,
)


def S(s: str) -> bytes:
    return encode_key_value({"S": s})


def N(n: str | int) -> bytes:
    return encode_key_value({"N": str(n)})


def item(pk: str, sk: int | None = None, **attrs: str) -> dict[str, dict[str, str]]:
    out = {"id": {"S": pk}, **{k: {"S": v} for k, v in attrs.items()}}
    if sk is not None:
        out["n"] = {"N": str(sk)}
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ItemStore]:
    s = ItemStore(tmp_path / "items.sqlite")
    yield s
    s.close()


# --- key encoding ----------------------------------------------------------------------------


def random_number(rng: random.Random) -> str:
    """A random DynamoDB number in a random notation: sign, 1-38 digits, exponent -130..125."""
    if rng.random() < 0.02:
        return rng.choice(["0", "-0", "0.000", "0e5"])
    n = rng.randint(1, 38)
    digits = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(n - 1))
    return notation(rng, rng.choice(["", "-", "+"]), digits, rng.randint(-130, 125))


def notation(rng: random.Random, sign: str, digits: str, lead: int) -> str:
    """``sign digits[0].digits[1:] x 10**lead``, written one of several ways."""
    n = len(digits)
    match rng.randint(0, 2):
        case 0:  # scientific
            return f"{sign}{digits[0]}.{digits[1:]}E{lead}"
        case 1:  # plain, when short enough to be sane
            text = format(Decimal(f"{digits[0]}.{digits[1:]}E{lead}"), "f")
            return sign + text if len(text) < 60 else f"{sign}{digits}e{lead - n + 1}"
        case _:  # integer mantissa with a shifted exponent and padding zeros
            return f"{sign}00{digits}000e{lead - n + 1 - 3}"


def test_numbers_order_like_decimals() -> None:
    rng = random.Random(20240601)
    values = [random_number(rng) for _ in range(4000)]
    # Neighbours that differ in the last of 38 digits, at the edges of the range, and by sign.
    values += ["1E-130", "-1E-130", "9.9999999999999999999999999999999999999E+125"]
    values += ["-9.9999999999999999999999999999999999999E+125", "1", "-1", "0.1", "-0.1"]
    values += ["1.0000000000000000000000000000000000001", "1.0000000000000000000000000000000000002"]
    values += ["-0.12", "-0.123", "0.12", "0.123", "12", "120", "-12", "-120", "5", "5.0", "50e-1"]
    for _ in range(300):  # close neighbours: one more digit, last digit bumped, exponent +-1
        sign, lead = rng.choice(["", "-"]), rng.randint(-129, 124)
        digits = str(rng.randint(1, 9)) + str(rng.randint(10**20, 10**30))
        bumped = digits[:-1] + str((int(digits[-1]) + 1) % 10)
        for d, e in [(digits, lead), (digits + "1", lead), (bumped, lead), (digits, lead + 1)]:
            values.append(notation(rng, sign, d, e))
    by_number = sorted(values, key=Decimal)
    by_bytes = sorted(values, key=N)
    assert [Decimal(v) for v in by_bytes] == [Decimal(v) for v in by_number]
    for a, b in zip(values, random.Random(1).sample(values, len(values)), strict=True):
        assert (N(a) < N(b)) == (Decimal(a) < Decimal(b)), (a, b)
        assert (N(a) == N(b)) == (Decimal(a) == Decimal(b)), (a, b)
    for v in values:
        assert Decimal(decode_key_value(N(v))["N"]) == Decimal(v)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "abc",
        "NaN",
        "Infinity",
        "-inf",
        "1e",
        "1_000",
        " 1",
        "0x10",
        "1E-131",
        "1E+126",
        "10E+125",
        "0.1E-130",
        "1234567890123456789012345678901234567891",
    ],
)
def test_numbers_dynamodb_rejects_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        N(bad)


def test_numbers_at_the_edge_of_precision_are_accepted() -> None:
    N("12345678901234567890123456789012345678")
    N("1234567890123456789012345678901234567800000")  # trailing zeros are not significant
    N("0.0000012345678901234567890123456789012345678")


def test_strings_order_by_utf8_bytes_and_types_never_collide() -> None:
    words = ["", "a", "ab", "b", "Z", "é", "\uffff", "\U0001f600", "a\x00", "\x7f"]
    assert sorted(words, key=S) == sorted(words, key=lambda w: w.encode())
    # UTF-16 order (what a naive str sort may use) would put U+1F600 before U+FFFF.
    assert S("\uffff") < S("\U0001f600")
    raw = [b"", b"\x00", b"\x00\x00", b"\x01", b"\xff", b"\xff\x00"]
    bs = [encode_key_value({"B": base64.b64encode(r).decode()}) for r in raw]
    assert bs == sorted(bs)
    assert len({S("1"), N("1"), encode_key_value({"B": "MQ=="})}) == 3
    for av in [{"S": "héllo"}, {"B": "AAEC/w=="}, {"N": "-12.5"}, {"N": "0"}, {"S": ""}]:
        assert decode_key_value(encode_key_value(av)) == av


@pytest.mark.parametrize("bad", [{}, {"S": "a", "N": "1"}, {"BOOL": "true"}, {"B": "not base64!"}])
def test_bad_key_values_are_rejected(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_key_value(bad)


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound(b"ab") == b"ac"
    assert prefix_upper_bound(b"a\xff\xff") == b"b"
    assert prefix_upper_bound(b"\xff\xff") is None
    assert prefix_upper_bound(b"") is None


# --- the store -------------------------------------------------------------------------------


def test_put_get_delete(store: ItemStore) -> None:
    assert store.applied() == AppliedMark(0, 0, None)
    assert store.get("t", S("a"), b"") is None
    store.apply_batch(1, 1, [PutItem("t", S("a"), b"", item("a", v="1"))])
    assert store.get("t", S("a"), b"") == item("a", v="1")
    store.apply_batch(
        2, 1, [PutItem("t", S("a"), b"", item("a", v="2")), PutItem("u", S("a"), b"", item("x"))]
    )
    assert store.get("t", S("a"), b"") == item("a", v="2")
    assert store.count() == 2 and store.count("t") == 1
    store.apply_batch(3, 2, [DeleteItem("t", S("a"), b""), DeleteItem("t", S("zz"), b"")])
    assert store.get("t", S("a"), b"") is None
    assert store.get("u", S("a"), b"") == item("x")
    store.apply_batch(4, 2, [DeleteTable("u")], membership=b"n1,n2,n3;")
    assert store.count() == 0
    assert store.applied() == AppliedMark(4, 2, b"n1,n2,n3;")


def test_apply_batch_refuses_old_indexes_and_is_atomic(store: ItemStore) -> None:
    store.apply_batch(5, 1, [PutItem("t", S("a"), b"", item("a"))], membership=b"n1;")
    with pytest.raises(ValueError):
        store.apply_batch(5, 1, [PutItem("t", S("b"), b"", item("b"))])
    with pytest.raises(ValueError):
        store.apply_batch(4, 1, [PutItem("t", S("b"), b"", item("b"))])
    bad = {"id": {"S": "c"}, "x": object()}  # not JSON: fails half-way through the batch
    with pytest.raises(TypeError):
        store.apply_batch(
            6, 1, [PutItem("t", S("b"), b"", item("b")), PutItem("t", S("c"), b"", bad)]
        )
    assert store.get("t", S("b"), b"") is None
    assert store.applied() == AppliedMark(5, 1, b"n1;")
    store.apply_batch(6, 1, [])  # an entry without changes still advances the index
    assert store.applied() == AppliedMark(6, 1, b"n1;")


@pytest.fixture
def numbers(store: ItemStore) -> ItemStore:
    """Partition "p" with sort keys -5..14 (numbers), plus neighbours in other partitions."""
    ops = [PutItem("t", S("p"), N(i), item("p", i)) for i in range(-5, 15)]
    ops += [PutItem("t", S("o"), N(3), item("o", 3)), PutItem("t", S("q"), N(3), item("q", 3))]
    ops += [PutItem("other", S("p"), N(3), item("p", 3))]
    random.Random(3).shuffle(ops)
    store.apply_batch(1, 1, ops)
    return store


def sks(rows: list[tuple[bytes, dict[str, dict[str, str]]]]) -> list[int]:
    return [int(item["n"]["N"]) for _, item in rows]


def test_query_bounds_direction_limit_and_paging(numbers: ItemStore) -> None:
    q = numbers.query
    assert sks(q("t", S("p"))) == list(range(-5, 15))
    assert sks(q("t", S("p"), lo=(N(2), True), hi=(N(5), True))) == [2, 3, 4, 5]
    assert sks(q("t", S("p"), lo=(N(2), False), hi=(N(5), False))) == [3, 4]
    assert sks(q("t", S("p"), lo=(N("-2.5"), True))) == list(range(-2, 15))
    assert sks(q("t", S("p"), hi=(N(-3), True), forward=False)) == [-3, -4, -5]
    assert sks(q("t", S("p"), lo=(N(0), True), forward=False, limit=3)) == [14, 13, 12]
    assert sks(q("t", S("p"), limit=2)) == [-5, -4]
    assert q("t", S("p"), limit=0) == []
    assert q("t", S("nope")) == []
    rows = q("t", S("p"), lo=(N(1), True), limit=1)
    assert rows[0][0] == N(1) and decode_key_value(rows[0][0]) == {"N": "1"}
    for forward in (True, False):
        pages, after = [], None
        while True:
            page = q(
                "t",
                S("p"),
                lo=(N(0), True),
                hi=(N(9), False),
                forward=forward,
                limit=4,
                start_after=after,
            )
            if not page:
                break
            pages.append(sks(page))
            after = page[-1][0]
        expected = list(range(0, 9)) if forward else list(range(8, -1, -1))
        assert [n for page in pages for n in page] == expected
        assert len(pages) == 3


def test_query_begins_with_through_prefix_bound(store: ItemStore) -> None:
    names = ["a", "ab", "abc", "abd", "ac", "b", "ab\U0001f600"]
    store.apply_batch(1, 1, [PutItem("t", S("p"), S(n), {"id": {"S": n}}) for n in names])
    lo = S("ab")
    hi = prefix_upper_bound(lo)
    assert hi is not None
    got = [
        decode_key_value(sk)["S"]
        for sk, _ in store.query("t", S("p"), lo=(lo, True), hi=(hi, False))
    ]
    assert got == ["ab", "abc", "abd", "ab\U0001f600"]


def test_scan_pages_in_key_order(store: ItemStore) -> None:
    keys = [(f"k{i % 7}", j) for i in range(7) for j in range(3)]
    random.Random(5).shuffle(keys)
    store.apply_batch(1, 1, [PutItem("t", S(pk), N(sk), item(pk, sk)) for pk, sk in keys])
    store.apply_batch(2, 1, [PutItem("t2", S("k0"), N(0), item("x"))])
    full = store.scan("t")
    assert [(pk, sk) for pk, sk, _ in full] == sorted((S(pk), N(sk)) for pk, sk in keys)
    paged: list[tuple[bytes, bytes, dict[str, dict[str, str]]]] = []
    after = None
    while page := store.scan("t", start_after=after, limit=4):
        paged += page
        after = (page[-1][0], page[-1][1])
    assert paged == full


def rows(seed: int) -> list[PutItem]:
    ops = [
        PutItem(t, S(f"k{i}"), N(j), item(f"k{i}", j, v=str(i * j)))
        for t in ("a", "b")
        for i in range(5)
        for j in range(4)
    ]
    random.Random(seed).shuffle(ops)
    return ops


def test_digest_depends_on_data_only(tmp_path: Path) -> None:
    stores = [ItemStore(tmp_path / f"{n}.sqlite") for n in range(4)]
    one, two, other, empty = stores
    one.apply_batch(1, 1, rows(1))
    for op in rows(2):  # same data, other order, other indexes, other batches
        two.apply_batch(two.applied().index + 3, 2, [op])
    # Same final data via an overwrite and a delete.
    other.apply_batch(1, 1, [*rows(3), PutItem("c", S("x"), b"", item("x"))])
    other.apply_batch(2, 1, [DeleteTable("c")])
    assert one.digest() == two.digest() == other.digest() != empty.digest()
    two.apply_batch(1000, 2, [PutItem("a", S("k0"), N(0), item("k0", 0, v="changed"))])
    assert two.digest() != one.digest()
    # Item attribute order does not matter: items are stored canonically.
    other.apply_batch(
        3,
        1,
        [PutItem("a", S("k0"), N(0), {"v": {"S": "changed"}, "n": {"N": "0"}, "id": {"S": "k0"}})],
    )
    assert other.digest() == two.digest()
    for s in stores:
        s.close()


def test_dump_restore_replaces_everything(tmp_path: Path) -> None:
    source, target = ItemStore(tmp_path / "a.sqlite"), ItemStore(tmp_path / "b.sqlite")
    source.apply_batch(7, 3, rows(1), membership=b"n1,n2;n2")
    target.apply_batch(9, 4, [PutItem("gone", S("x"), b"", item("x"))], membership=b"n9;")
    target.restore(source.dump())
    assert target.digest() == source.digest()
    assert target.applied() == AppliedMark(7, 3, b"n1,n2;n2")
    assert target.get("gone", S("x"), b"") is None
    assert target.count() == source.count() == 40
    blank = ItemStore(tmp_path / "c.sqlite")
    target.restore(blank.dump())
    assert target.count() == 0 and target.applied() == AppliedMark(0, 0, None)
    with pytest.raises(ValueError):
        target.restore(b"\x81\xa1x\x01")  # msgpack, but not a dump
    for s in (source, target, blank):
        s.close()


def test_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite"
    store = ItemStore(path)
    store.apply_batch(1, 1, rows(1), membership=b"n1;")
    store.apply_batch(2, 1, [DeleteItem("a", S("k0"), N(0))])
    digest = store.digest()
    store.close()
    store = ItemStore(path)
    assert store.applied() == AppliedMark(2, 1, b"n1;")
    assert store.digest() == digest
    assert store.get("a", S("k0"), N(0)) is None
    assert store.get("a", S("k1"), N(2)) == item("k1", 2, v="2")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.make_durable()  # an fsync at FULL, then back to NORMAL; the content is unchanged
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert store.applied() == AppliedMark(2, 1, b"n1;")
    with pytest.raises(ValueError):
        store.apply_batch(2, 1, [])
    store.close()


def test_applied_mark_is_what_sqlite_holds_after_every_kind_of_change(tmp_path: Path) -> None:
    """applied() is kept in memory; a reader of the file must always see the same mark,
    also after a batch that failed half-way (rolled back) and after a restore."""
    store = ItemStore(tmp_path / "items.sqlite")

    def on_disk() -> AppliedMark:
        other = ItemStore(tmp_path / "items.sqlite")
        try:
            return other.applied()
        finally:
            other.close()

    store.apply_batch(3, 1, rows(1), membership=b"n1;")
    assert store.applied() == on_disk() == AppliedMark(3, 1, b"n1;")
    with pytest.raises(TypeError):
        store.apply_batch(4, 2, [PutItem("t", S("x"), b"", {"x": object()})])  # type: ignore[dict-item]
    assert store.applied() == on_disk() == AppliedMark(3, 1, b"n1;")
    store.apply_batch(4, 2, [])
    assert store.applied() == on_disk() == AppliedMark(4, 2, b"n1;")
    source = ItemStore(tmp_path / "source.sqlite")
    source.apply_batch(9, 5, rows(2), membership=b"n2;")
    store.restore(source.dump())
    assert store.applied() == on_disk() == AppliedMark(9, 5, b"n2;")
    with pytest.raises(ValueError):
        store.apply_batch(9, 5, [])  # the restored mark refuses a replay
    store.make_durable()
    assert store.applied() == on_disk() == AppliedMark(9, 5, b"n2;")
    source.close()
    store.close()


def test_a_pinned_view_dumps_the_point_in_time_it_was_pinned(tmp_path: Path) -> None:
    """Compaction dumps through a view in another thread while the store goes on applying:
    the dump is exactly the store as it was when pinned, mark included, in dump()'s format."""
    store = ItemStore(tmp_path / "items.sqlite")
    store.apply_batch(7, 3, rows(1), membership=b"n1,n2;n2")
    expected = store.dump()
    view = store.pin_view()
    assert view.applied == AppliedMark(7, 3, b"n1,n2;n2")
    store.apply_batch(8, 3, [PutItem("t", S("later"), b"", item("later"))])
    store.apply_batch(9, 3, [DeleteItem("a", S("k0"), N(0)), DeleteTable("b")])
    store.checkpoint()  # a checkpoint cannot take the view's pages away either
    with ThreadPoolExecutor(1) as pool:
        dumped = pool.submit(view.dump, 0.0001).result()
    assert dumped == expected
    copy = ItemStore(tmp_path / "copy.sqlite")
    copy.restore(dumped)
    assert copy.applied() == AppliedMark(7, 3, b"n1,n2;n2")
    assert copy.count() == 40 and copy.get("t", S("later"), b"") is None
    assert store.pin_view().dump() == store.dump()  # and a fresh view sees everything
    copy.close()
    store.close()


def test_row_checksum_is_the_chained_per_field_crc_rows_on_disk_carry() -> None:
    """Rows written before keep their checksums: one CRC over the length-prefixed fields must
    equal the per-field chain it replaced."""

    def chained(tbl: str, pk: bytes, sk: bytes, text: str) -> int:
        crc = 0
        for part in (tbl.encode(), pk, sk, text.encode()):
            crc = crc32c.crc32c(struct.pack(">I", len(part)) + part, crc)
        return int(crc)

    rng = random.Random(5)
    for _ in range(500):
        tbl = "".join(rng.choice("abé#:") for _ in range(rng.randint(0, 12)))
        pk, sk = rng.randbytes(rng.randint(0, 30)), rng.randbytes(rng.randint(0, 8))
        text = json.dumps(
            {"v": {"S": "".join(rng.choice("xyzé") for _ in range(rng.randint(0, 40)))}}
        )
        assert row_crc(tbl, pk, sk, text) == chained(tbl, pk, sk, text)


@pytest.mark.parametrize("name", ["data?mode=rw", "data#1", "100% data", "dé jà"])
def test_views_and_scrub_snapshots_open_any_directory_name(tmp_path: Path, name: str) -> None:
    """The read-only connections (compaction's dump view, the scrub's snapshot) reach the store
    through a file URI: a ``?``, ``#`` or ``%`` in the data directory's name must not change
    which file they open."""
    directory = tmp_path / name
    directory.mkdir()
    store = ItemStore(directory / "items.sqlite")
    store.apply_batch(7, 3, rows(1))
    assert store.pin_view().dump() == store.dump()
    snapshot = store.open_snapshot()
    verified = snapshot.verify()
    snapshot.close()
    assert verified.problems == () and verified.items == store.count() > 0
    store.close()


def random_value(rng: random.Random, depth: int = 0) -> dict[str, object]:
    """A random DynamoDB typed value (nested maps and lists, escapes, non-ASCII text)."""
    text = "".join(rng.choice('az"\\\n\té€😀/\x00') for _ in range(rng.randint(0, 6)))
    kind = rng.choice(["S", "N", "BOOL", "NULL", "SS", "L", "M"] if depth < 3 else ["S", "N"])
    if kind == "L":
        return {"L": [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]}
    if kind == "M":
        keys = ["".join(rng.choice("bAé_") for _ in range(rng.randint(1, 3))) for _ in range(3)]
        return {"M": {k: random_value(rng, depth + 1) for k in keys}}
    plain: dict[str, object] = {"S": text, "N": "-7.5", "BOOL": False, "NULL": True}
    return {kind: plain.get(kind, [text, "x"])}


def test_canonical_json_is_sorted_compact_json_dumps_from_any_thread() -> None:
    """Stored items keep their one text form (digests compare it across replicas and
    versions): the encoder built once gives what ``json.dumps`` gives, also when threads
    encode at the same time."""
    rng = random.Random(11)
    items = [
        {
            "".join(rng.choice("zaé😀\"'") for _ in range(rng.randint(1, 4))): random_value(rng)
            for _ in range(rng.randint(0, 6))
        }
        for _ in range(400)
    ]
    expected = [json.dumps(i, sort_keys=True, separators=(",", ":")) for i in items]
    assert [canonical_json(i) for i in items] == expected
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            assert list(pool.map(canonical_json, items)) == expected


def test_a_batch_applies_its_operations_in_their_order(store: ItemStore) -> None:
    """Puts are written in runs (one statement each run): a delete or a table's drop between
    puts of the same keys must still land between them."""
    rng = random.Random(4)
    model: dict[tuple[str, bytes], dict[str, dict[str, str]]] = {}
    for index in range(1, 60):
        ops: list[PutItem | DeleteItem | DeleteTable] = []
        for _ in range(rng.randint(0, 12)):
            tbl, key = rng.choice("tu"), S(rng.choice("abc"))
            roll = rng.random()
            if roll < 0.6:
                value = item("k", v=str(rng.randint(0, 9)))
                ops.append(PutItem(tbl, key, b"", value))
                model[tbl, key] = value
            elif roll < 0.9:
                ops.append(DeleteItem(tbl, key, b""))
                model.pop((tbl, key), None)
            else:
                ops.append(DeleteTable(tbl))
                model = {k: v for k, v in model.items() if k[0] != tbl}
        store.apply_batch(index, 1, ops)
        held = {(t, bytes(pk)): i for t in "tu" for pk, _, i in store.scan(t)}
        assert held == model
