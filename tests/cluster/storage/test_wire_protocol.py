"""The peer wire protocol can evolve under a rolling upgrade, in both directions (wire.py
"Evolving it"):

- new -> old: a node of protocol 1 (session 10 and before) rejects a message with any field
  more, and drops the whole frame and the connection. It announces no protocol when it opens
  a connection, and a link to it sends exactly the protocol 1 layout (``v1_decode`` below is
  that node's decoder, verbatim: what it accepts is the contract).
- old -> new: a message without the fields added since decodes, with their defaults
  (protocol 2 added AppendEntries.held: a log replica's compaction limit, 0 = not known).
- newer -> new: fields after those known are ignored.
Malformed messages (a field missing or of the wrong type, an unknown kind) are still rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from cluster import auth
from cluster.consensus import messages
from cluster.consensus import messages as m
from cluster.consensus.messages import (
    AnyMessage,
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    InstallSnapshot,
    Membership,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    VoteResponse,
)
from cluster.storage import handshake, wire
from cluster.storage.handshake import receive_hello, send_hello
from cluster.storage.node import NodeConfig, StorageNode
from cluster.storage.transport import PeerLinks
from cluster.storage.wire import FrameError, decode_message, encode_frame, encode_message

META = SnapshotMeta(5, 2, Membership(frozenset({"n1", "n2", "n3"}), frozenset({"n3"})))
ALL_KINDS: list[AnyMessage] = [
    RequestVote("g", "n1", "n2", 3, 7, 2, pre=True, transfer=False),
    VoteResponse("g", "n2", "n1", 3, True, pre=True),
    AppendEntries("g", "n1", "n3", 2, 6, 2, (Entry(7, 2, EntryKind.NORMAL, b"cmd"),), 6, 9, 4),
    AppendResponse("g", "n2", "n1", 2, False, 4, seq=3),
    InstallSnapshot("g", "n1", "n3", 2, Snapshot(META, b""), seq=1),
    TimeoutNow("g", "n1", "n2", 2),
]


def v1_decode(body: Any) -> AnyMessage:
    """wire.decode_message as of session 10 (eaaf0b2), the last of protocol 1."""
    try:
        kind, group, src, dst, term, *rest = body
        common = (str(group), str(src), str(dst), int(term))
        if kind == "append":
            prev_index, prev_term, commit, seq, raw = rest
            entries = tuple(messages.Entry(i, t, messages.EntryKind(k), d) for i, t, k, d in raw)
            return messages.AppendEntries(*common, prev_index, prev_term, entries, commit, seq)
        if kind == "append_resp":
            ok, match_index, seq = rest
            return messages.AppendResponse(*common, bool(ok), match_index, seq)
        if kind == "vote":
            last_index, last_term, pre, transfer = rest
            return messages.RequestVote(*common, last_index, last_term, bool(pre), bool(transfer))
        if kind == "vote_resp":
            granted, pre = rest
            return messages.VoteResponse(*common, bool(granted), bool(pre))
        if kind == "snapshot":
            (index, term, membership, data), seq = rest
            meta = messages.SnapshotMeta(index, term, messages.Membership.decode(membership))
            return messages.InstallSnapshot(*common, messages.Snapshot(meta, data), seq)
        if kind == "timeout_now" and not rest:
            return messages.TimeoutNow(*common)
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"malformed raft message: {exc}") from exc
    raise FrameError(f"unknown raft message kind {kind!r}")


def as_v1(msg: AnyMessage) -> AnyMessage:
    """``msg`` without what protocol 1 cannot carry (it gets the defaults)."""
    msg = replace(msg, incarnation=0)
    return replace(msg, held=0) if isinstance(msg, AppendEntries) else msg


def over_the_wire(body: list[Any]) -> Any:
    """What the receiver's msgpack hands its decoder."""
    return msgpack.unpackb(msgpack.packb(body, use_bin_type=True), raw=False)


@pytest.mark.parametrize("msg", ALL_KINDS, ids=lambda m: type(m).__name__)
def test_a_protocol_1_node_decodes_what_it_is_sent_and_this_node_decodes_protocol_1(
    msg: AnyMessage,
) -> None:
    assert v1_decode(over_the_wire(encode_message(msg, 1))) == as_v1(msg)  # new -> old
    assert decode_message(over_the_wire(encode_message(msg, 1))) == as_v1(msg)  # old -> new
    assert decode_message(over_the_wire(encode_message(msg))) == msg


@pytest.mark.parametrize("msg", ALL_KINDS, ids=lambda m: type(m).__name__)
def test_fields_after_the_known_ones_are_ignored(msg: AnyMessage) -> None:
    """A newer peer's message, with fields this node does not know yet, still decodes (and
    does not take the rest of its frame down)."""
    body = [*encode_message(msg), 12, b"future", ["x", {"y": 1}], None]
    assert decode_message(over_the_wire(body)) == msg
    frame = {"rafts": [body, encode_message(ALL_KINDS[0])], "more": "ignored"}
    assert wire.decode_frame_messages(frame) == [msg, ALL_KINDS[0]]
    with pytest.raises(FrameError):
        v1_decode(over_the_wire(body))  # what protocol 1 would have done: hence the gate


def _append(**change: Any) -> list[Any]:
    body = encode_message(ALL_KINDS[2])
    fields = ["kind", "group", "src", "dst", "term", "prev_index", "prev_term", "commit", "seq"]
    for name, value in change.items():
        body[fields.index(name) if name in fields else {"entries": 9, "held": 10}[name]] = value
    return body


def _incarnation(value: Any) -> list[Any]:
    body = encode_message(ALL_KINDS[0])
    body[-1] = value
    return body


MALFORMED: dict[str, Any] = {
    "not a list": {"append": 1},
    "too short for any kind": ["append", "g", "n1"],
    "unknown kind": ["gossip", "g", "n1", "n2", 2],
    "append missing its entries": encode_message(ALL_KINDS[2])[:9],
    "append_resp missing seq": encode_message(ALL_KINDS[3])[:7],
    "vote missing transfer": encode_message(ALL_KINDS[0])[:8],
    "vote_resp missing pre": encode_message(ALL_KINDS[1])[:6],
    "snapshot missing seq": encode_message(ALL_KINDS[4])[:6],
    "term a string": _append(term="2"),
    "term a boolean": _append(term=True),
    "group not a string": _append(group=7),
    "prev_index a string": _append(prev_index="6"),
    "commit a float": _append(commit=6.0),
    "seq missing (None)": _append(seq=None),
    "entries not a list": _append(entries=b"entries"),
    "held a string": _append(held="4"),
    "held None": _append(held=None),
    "entry with a field more": _append(entries=[[7, 2, 0, b"cmd", 1]]),
    "entry data a string": _append(entries=[[7, 2, 0, "cmd"]]),
    "entry of an unknown kind": _append(entries=[[7, 2, 9, b"cmd"]]),
    "success an integer": ["append_resp", "g", "n2", "n1", 2, 1, 4, 3],
    "pre a string": ["vote", "g", "n1", "n2", 3, 7, 2, "yes", False],
    "snapshot meta short": ["snapshot", "g", "n1", "n3", 2, [5, 2, b"n1;"], 1],
    "snapshot data a string": ["snapshot", "g", "n1", "n3", 2, [5, 2, b"n1;", "data"], 1],
    "snapshot membership not text": ["snapshot", "g", "n1", "n3", 2, [5, 2, b"\xff", b""], 1],
    "incarnation a string": _incarnation("1"),
    "incarnation a boolean": _incarnation(True),
    "incarnation None": _incarnation(None),
    "incarnation negative": _incarnation(-1),
    "incarnation a float": _incarnation(1.0),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_messages_are_still_rejected(body: Any) -> None:
    with pytest.raises(FrameError):
        decode_message(over_the_wire(body) if isinstance(body, list) else body)
    with pytest.raises(FrameError):  # and with them their frame (the node drops the connection)
        wire.decode_frame_messages({"rafts": [encode_message(ALL_KINDS[0]), body]})


INCARNATION = 1_765_000_000_000  # a map version (ms): what TableSpec.incarnation holds


@pytest.mark.parametrize("msg", ALL_KINDS, ids=lambda m: type(m).__name__)
def test_every_message_carries_its_senders_incarnation(msg: AnyMessage) -> None:
    """The sender replica's incarnation travels at the end of every kind (wire.py): a node
    before it (session 12's protocol 2) sends none, which decodes as 0 ("not known", matching
    only replicas of 0), and a protocol 1 node is sent none (it would reject the field)."""
    msg = replace(msg, incarnation=INCARNATION)
    body = encode_message(msg)
    assert decode_message(over_the_wire(body)) == msg
    assert decode_message(over_the_wire(body[:-1])).incarnation == 0  # a node before it
    assert decode_message(over_the_wire([*body, "later"])) == msg  # a node after it
    assert v1_decode(over_the_wire(encode_message(msg, 1))) == as_v1(msg)
    assert wire.decode_frame_messages({"rafts": [body]}) == [msg]


class ScriptedNode:
    """Accepts connections as a storage node does: a challenge (announcing ``protocol``, or
    nothing, as a protocol 1 node), a hello, then records the Raft frames."""

    def __init__(self, protocol: Any = None) -> None:
        self.protocol = protocol
        self.frames: list[dict[str, Any]] = []
        self.connections: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def restart(self, protocol: Any) -> None:
        """Close every connection, as a node restarted on another version would."""
        self.protocol = protocol
        for writer in self.connections:
            writer.close()
        self.connections.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        opening: dict[str, Any] = {"challenge": "c"}
        if self.protocol is not None:
            opening["protocol"] = self.protocol
        writer.write(encode_frame(opening))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await wire.read_frame(reader)  # the hello (no cluster key installed in tests)
            while True:
                self.frames.append(await wire.read_frame(reader))
        writer.close()


async def _until(condition: Any, seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):  # bounds a broken link only: no timing assert
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize(("announced", "protocol"), [(None, 1), (wire.PROTOCOL, wire.PROTOCOL)])
def test_a_link_sends_each_peer_the_layout_of_the_protocol_it_announced(
    announced: int | None, protocol: int
) -> None:
    """A peer that announced nothing is of protocol 1: every message it gets is exactly what
    its own decoder accepts (``v1_decode``: no AppendEntries.held); a link's stats say which
    protocol its peer has."""
    batch = [replace(m, src="n1", dst="n2") for m in ALL_KINDS]  # one link carries them all

    async def scenario() -> None:
        node = ScriptedNode(announced)
        await node.start()
        links = PeerLinks("n1", {"n2": node.address})
        links.start()
        try:
            await _until(lambda: links.stats()["n2"]["connected"])
            assert links.stats()["n2"]["protocol"] == protocol
            for msg in batch:
                links.send(msg)
            await _until(lambda: links.stats()["n2"]["sent"] == len(batch))
            await _until(lambda: sum(len(f["rafts"]) for f in node.frames) == len(batch))
            bodies = [body for frame in node.frames for body in frame["rafts"]]
            assert bodies == [over_the_wire(encode_message(m, protocol)) for m in batch]
            if protocol == 1:  # exactly what its decoder accepts, nothing more
                assert [v1_decode(b) for b in bodies] == [as_v1(m) for m in batch]
                assert [len(b) for b in bodies] == [9, 7, 10, 8, 7, 5]
            else:
                assert [decode_message(b) for b in bodies] == batch
                assert bodies[2][10] == 4  # AppendEntries.held
        finally:
            await links.stop()
            assert node.server is not None
            node.server.close()

    asyncio.run(scenario())


def test_a_peer_restarted_on_another_version_is_sent_that_versions_layout() -> None:
    """Upgraded, then rolled back: the protocol is learned per connection, and a restart
    always ends the connection."""

    async def scenario() -> None:
        node = ScriptedNode(None)
        await node.start()
        links = PeerLinks("n1", {"n2": node.address})
        links.start()
        try:
            for protocol, announced in [(1, None), (2, 2), (1, None), (3, 3)]:
                node.restart(announced)
                await _until(lambda p=protocol: links.stats()["n2"]["protocol"] == p)
                links.send(RequestVote("g", "n1", "n2", protocol, 0, 0))  # term = protocol
                await _until(lambda p=protocol: node.frames and node.frames[-1]["rafts"][0][4] == p)
        finally:
            await links.stop()
            assert node.server is not None
            node.server.close()

    asyncio.run(scenario())


def test_the_node_announces_its_protocol_and_a_dialer_learns_it() -> None:
    async def scenario() -> None:
        learned: list[int] = []

        async def node_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            hello, _ = await receive_hello(reader, writer)
            assert hello["node"] == "n1"
            writer.close()

        server = await asyncio.start_server(node_side, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            learned.append(await send_hello(reader, writer, "peer", node="n1"))
            writer.close()
        finally:
            server.close()
        assert learned == [wire.PROTOCOL]

    asyncio.run(scenario())


@pytest.mark.parametrize("announced", ["2", 0, True, [2]])
def test_a_garbled_announcement_is_refused(announced: Any) -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(encode_frame({"challenge": "c", "protocol": announced}))
        with pytest.raises(FrameError):
            await send_hello(reader, None, "peer", node="n1")  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_a_node_steps_a_newer_peers_frame_with_fields_it_does_not_know(tmp_path: Path) -> None:
    """End to end on the receiving node: every message of such a frame reaches its group."""
    stepped: list[AnyMessage] = []

    class Stepped:
        incarnation = 0

        def step(self, msg: AnyMessage) -> None:
            stepped.append(msg)

        def tick(self, instant: float, catch_up: bool = False) -> None:
            pass

    node = StorageNode(
        NodeConfig(node_id="n2", listen="127.0.0.1:0", admin="127.0.0.1:0", data_dir=tmp_path)
    )
    node.replicas = {"g": Stepped()}  # type: ignore[dict-item]
    frame = {"rafts": [[*encode_message(m), "a later field"] for m in ALL_KINDS]}

    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(encode_frame(frame))
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):  # the peer hung up after the frame
            await node._serve_peer("n1", reader)

    try:
        asyncio.run(scenario())
    finally:
        node.ready_io.close()
    assert stepped == ALL_KINDS


# From the session 11 safety review (review2, branch review2 tests/review_s11/test_review2_wire.py).
# A mutation fuzz: whatever a (buggy) peer sends is refused or decodes with exact types; and a
# stripped announcement (a man in the middle: the challenge is not authenticated) is a downgrade
# to protocol 1, whose only effect is AppendEntries without held, decoded as 0 (compact nothing).

MEM = Membership(frozenset({"n1", "n2", "n3"}), frozenset({"n3"}))
E = (Entry(4, 2, EntryKind.NORMAL, b"a"), Entry(5, 2, EntryKind.CONFIG, MEM.encode()))
SAMPLES: list[m.AnyMessage] = [
    m.AppendEntries("g", "n1", "n2", 2, 3, 1, E, 4, 7, 3),
    m.AppendResponse("g", "n2", "n1", 2, True, 5, 7),
    m.RequestVote("g", "n1", "n2", 3, 5, 2, True, False),
    m.VoteResponse("g", "n2", "n1", 3, True, True),
    m.InstallSnapshot("g", "n1", "n3", 2, m.Snapshot(m.SnapshotMeta(9, 2, MEM), b"st"), 4),
    m.TimeoutNow("g", "n1", "n2", 2),
]
POOL: list[Any] = [
    0, 1, -1, 2**40, True, False, None, "x", "", b"", b"\xff", 1.5, [], [1, 2, 3, 4],
    [0, 0, 0, b""], {"a": 1}, [[1, 1, 0, b"x"]], [[1, 1, 0, "x"]], [[1, 1, 99, b"x"]],
    [1, 1, b"\xff;", b""], [1, 1, b"n1,n2;n3", b""],
]  # fmt: skip


def _mutate(body: list[Any], rng: random.Random) -> Any:
    body = copy.deepcopy(body)
    op = rng.randrange(6)
    if op == 0 and body:  # replace a top-level field
        body[rng.randrange(len(body))] = rng.choice(POOL)
    elif op == 1 and body:  # drop a field
        del body[rng.randrange(len(body))]
    elif op == 2:  # extra trailing fields (protocol 3+)
        body += [rng.choice(POOL) for _ in range(rng.randrange(1, 4))]
    elif op == 3:  # mutate inside a nested list (entries, snapshot)
        nested = [x for x in body if isinstance(x, list)]
        if nested:
            target = rng.choice(nested)
            inner = [x for x in target if isinstance(x, list)] or [target]
            t = rng.choice(inner)
            if t:
                t[rng.randrange(len(t))] = rng.choice(POOL)
    elif op == 4:
        return rng.choice(POOL)  # not a list at all
    else:  # truncate
        del body[rng.randrange(len(body) + 1) :]
    return body


def _exact_types(msg: m.AnyMessage) -> None:
    for f in fields(msg):
        value = getattr(msg, f.name)
        want = {"int": int, "str": str, "bool": bool}.get(str(f.type))
        if want is not None:
            assert type(value) is want, (f.name, value)
    if isinstance(msg, AppendEntries):
        for e in msg.entries:
            assert type(e.index) is int and type(e.term) is int and type(e.data) is bytes
            assert isinstance(e.kind, EntryKind)
    if isinstance(msg, m.InstallSnapshot):
        meta = msg.snapshot.meta
        assert type(meta.index) is int and type(meta.term) is int
        assert type(msg.snapshot.data) is bytes


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_mutated_message_is_refused_or_well_typed(protocol: int) -> None:
    rng = random.Random(protocol)
    accepted = refused = 0
    for _ in range(6000):
        body = _mutate(encode_message(rng.choice(SAMPLES), protocol), rng)
        try:
            msg = decode_message(body)
        except FrameError:
            refused += 1
            continue
        _exact_types(msg)
        accepted += 1
    assert accepted > 500 and refused > 2000


def test_a_stripped_announcement_is_a_downgrade_to_safe_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A man in the middle that removes "protocol" from the challenge: the dialer learns 1,
    proves the key exactly as before, and sends AppendEntries without held (decoded as 0)."""
    monkeypatch.setattr(auth, "_keys", [])
    auth.install("s3cret-key-for-review")

    async def run() -> tuple[int, bool]:
        challenge = auth.challenge()
        reader = asyncio.StreamReader()
        reader.feed_data(encode_frame({"challenge": challenge}))  # no "protocol"
        sent: list[bytes] = []

        class W:
            def write(self, data: bytes) -> None:
                sent.append(data)

        protocol = await handshake.send_hello(reader, W(), "peer", node="n1")  # type: ignore[arg-type]
        r2 = asyncio.StreamReader()
        r2.feed_data(sent[0])

        hello = await wire.read_frame(r2)
        return protocol, auth.check_hello(hello, challenge)

    protocol, proven = asyncio.run(run())
    assert protocol == 1 and proven
    msg = decode_message(encode_message(SAMPLES[0], protocol))
    assert isinstance(msg, AppendEntries) and msg.held == 0


def test_entries_that_do_not_follow_prev_index_are_refused_at_the_wire() -> None:
    """(review2, was xfail strict: pre-existing.) A gap made the core raise while building the
    Ready (the replica's loop ended: the group stopped on that node); an entry at index 0 after
    prev 0 was acknowledged as index 1, which nobody held."""
    ok = (Entry(1, 1, EntryKind.NORMAL, b"a"), Entry(2, 1, EntryKind.NORMAL, b"b"))
    assert decode_message(encode_message(AppendEntries("g", "n1", "n2", 1, 0, 0, ok, 0)))
    gap = (Entry(1, 1, EntryKind.NORMAL, b"a"), Entry(5, 1, EntryKind.NORMAL, b"b"))
    zero = (Entry(0, 1, EntryKind.NORMAL, b"a"),)
    late = (Entry(4, 1, EntryKind.NORMAL, b"a"),)  # prev 2: index 3 skipped
    for prev, entries in ((0, gap), (0, zero), (2, late)):
        body = encode_message(AppendEntries("g", "n1", "n2", 1, prev, 1, entries, 0))
        with pytest.raises(FrameError, match="does not follow"):
            decode_message(body)
