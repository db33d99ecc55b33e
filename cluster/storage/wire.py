"""The storage node's wire format: length-prefixed msgpack frames, and the Raft message codec.

One TCP connection carries either one peer's one-way Raft traffic (after a ``peer`` hello) or a
client's request/response exchange (after a ``client`` hello). A frame is a 4-byte big-endian
length followed by a msgpack map.

    writer.write(encode_frame({"hello": "peer", "node": "n1"}))
    frame = await read_frame(reader)            # -> dict
    msg = decode_message(encode_message(msg))   # Raft messages round-trip
    frames = encode_batch([msg1, msg2])         # a peer link's waiting messages: one frame
    decode_frame_messages(frame)                # -> [msg1, msg2]
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

from cluster.consensus import messages

MAX_FRAME = 256 * 1024 * 1024  # snapshots travel in one frame
_LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """The peer sent something that is not a frame of ours; drop the connection."""


def encode_frame(body: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one frame; raises asyncio.IncompleteReadError at EOF, FrameError on garbage."""
    header = await reader.readexactly(_LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame length {length} exceeds {MAX_FRAME}")
    payload = await reader.readexactly(length)
    try:
        body = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise FrameError(f"undecodable frame: {exc}") from exc
    if not isinstance(body, dict):
        raise FrameError("a frame must be a map")
    return body


# --- Raft messages ---------------------------------------------------------------------------
#
# A message is a list, [kind, group, src, dst, term, *fields]: positional, so that packing and
# unpacking thousands of small messages a second costs no map keys. A peer link sends every
# message waiting for a peer in ONE frame, {"rafts": [message, ...]} (``encode_batch``); a frame
# {"raft": message} carries one.
#
# Evolving it (a rolling upgrade runs old and new nodes side by side, in either direction: an
# upgrade, or a rollback of one):
# - A message gains fields only at its END, each with a default that is safe when absent: an
#   older sender never sends it. The decoder reads the fields it knows and IGNORES any after
#   them, so a newer peer's message still decodes here, and a field an older peer's message
#   lacks gets its default. Known fields are still checked (types, count): a message missing
#   one is rejected with its frame, as before.
# - Nodes up to protocol 1 (session 10) reject a message with ANY field more, and drop the
#   whole frame (every group's traffic) and the connection with it. So every node announces
#   its PROTOCOL in the frame that opens each connection it accepts (handshake.py; the sender
#   needs the receiver's version, and a link is one-way: the receiver speaks only that once).
#   A link to a node that announced none sends exactly the protocol 1 layout
#   (``encode_message(msg, 1)``: later fields cut off). The version is learned per connection:
#   a node restarted on another version is dialled again and says so.
# - A change an older peer must not ignore (a field whose absence is unsafe, a new message
#   kind, a field whose meaning changes) needs PROTOCOL + 1 and a sender that sends it only
#   to peers that announced at least that. Entries and snapshots inside a message have fixed
#   layouts: changing them is such a change too.

PROTOCOL = 2  # 1: up to session 10 (no announcement, extra fields rejected); 2: tolerant
# The length of each message kind as protocol 1 decodes it (nothing more may be sent there).
_V1_LENGTH = {"append": 10, "append_resp": 8, "vote": 9, "vote_resp": 7, "snapshot": 7,
              "timeout_now": 5}  # fmt: skip
# Session 13: every message ends with the sender's incarnation of the group
# (``Message.incarnation``), at this index (after the fields of session 10's protocol 2).
# Absent (a node before it): 0, "not known", which matches only a replica of incarnation 0:
# a replica of a known incarnation takes nothing from such a node (dropping is safe: during a
# rolling upgrade, the old nodes take no part in groups of known incarnation until they are
# upgraded; groups of tables created before incarnations are 0 everywhere). No new protocol
# number: a protocol 2 receiver ignores the field, as it must (it cannot tell them apart).
_INCARNATION_AT = {"append": 11, "append_resp": 8, "vote": 9, "vote_resp": 7, "snapshot": 7,
                   "timeout_now": 5}  # fmt: skip


def _entry(e: messages.Entry) -> list[Any]:
    return [e.index, e.term, e.kind.value, e.data]


def _snapshot(s: messages.Snapshot) -> list[Any]:
    m = s.meta
    return [m.index, m.term, m.membership.encode(), s.data]


def encode_message(msg: messages.AnyMessage, protocol: int = PROTOCOL) -> list[Any]:
    """``msg`` as a receiver that announced ``protocol`` decodes it."""
    head: list[Any] = [msg.group, msg.src, msg.dst, msg.term]
    match msg:
        case messages.AppendEntries():
            entries = [_entry(e) for e in msg.entries]
            body = ["append", *head, msg.prev_index, msg.prev_term, msg.commit, msg.seq, entries]
            body.append(msg.held)  # protocol 2 (a protocol 1 peer is not sent it, below)
        case messages.AppendResponse():
            body = ["append_resp", *head, msg.success, msg.match_index, msg.seq]
        case messages.RequestVote():
            body = ["vote", *head, msg.last_index, msg.last_term, msg.pre, msg.transfer]
        case messages.VoteResponse():
            body = ["vote_resp", *head, msg.granted, msg.pre]
        case messages.InstallSnapshot():
            body = ["snapshot", *head, _snapshot(msg.snapshot), msg.seq]
        case messages.TimeoutNow():
            body = ["timeout_now", *head]
        case _:
            raise TypeError(f"not a raft message: {msg!r}")
    body.append(msg.incarnation)  # at _INCARNATION_AT[kind]
    if protocol < 2:
        del body[_V1_LENGTH[body[0]] :]  # fields protocol 1 does not know: it would reject them
    return body


def encode_batch(batch: list[messages.AnyMessage], protocol: int = PROTOCOL) -> list[bytes]:
    """Frames carrying ``batch`` in order, for a receiver of ``protocol``: one, unless it
    would exceed MAX_FRAME (then it is split; a single message too large for a frame raises
    FrameError)."""
    try:
        return [encode_frame({"rafts": [encode_message(m, protocol) for m in batch]})]
    except FrameError:
        if len(batch) == 1:
            raise
        half = len(batch) // 2
        return encode_batch(batch[:half], protocol) + encode_batch(batch[half:], protocol)


def decode_frame_messages(frame: dict[str, Any]) -> list[messages.AnyMessage]:
    """The Raft messages a peer frame carries ({"rafts": [...]} or {"raft": ...}), in order."""
    bodies = frame.get("rafts")
    if bodies is None:
        bodies = [frame.get("raft")]
    if not isinstance(bodies, list):
        raise FrameError("malformed raft batch")
    return [decode_message(body) for body in bodies]


def _ints(*values: Any) -> None:
    for value in values:
        if type(value) is not int:  # not bool either
            raise TypeError(f"expected an integer, got {value!r}")


def _bools(*values: Any) -> None:
    for value in values:
        if type(value) is not bool:
            raise TypeError(f"expected a boolean, got {value!r}")


def _entries(raw: Any, prev_index: int) -> tuple[messages.Entry, ...]:
    """An AppendEntries' entries: well typed, and indexes prev_index + 1, + 2, ... as every
    leader sends them (Raft.slice). Anything else would make the core raise while it builds a
    Ready (ending the replica's loop) or acknowledge an index it does not hold."""
    if type(raw) is not list:
        raise TypeError("entries must be a list")
    out: list[messages.Entry] = []
    for i, t, k, d in raw:  # an entry's layout is fixed (see above)
        if type(i) is not int or type(t) is not int or type(k) is not int or type(d) is not bytes:
            raise TypeError(f"malformed entry {[i, t, k, d]!r}")
        if i != prev_index + 1 + len(out):
            raise ValueError(f"entry {i} does not follow {prev_index + len(out)}")
        out.append(messages.Entry(i, t, messages.EntryKind(k), d))
    return tuple(out)


def decode_message(body: Any) -> messages.AnyMessage:
    """Inverse of encode_message; raises FrameError on anything malformed (a field missing or
    of the wrong type, an unknown kind). Fields after those known here are ignored (above)."""
    try:
        if type(body) is not list:
            raise TypeError("a message must be a list")
        kind, group, src, dst, term, *rest = body
        if type(group) is not str or type(src) is not str or type(dst) is not str:
            raise TypeError("group, src and dst must be strings")
        _ints(term)
        common = (group, src, dst, term)
        at = _INCARNATION_AT.get(kind)
        incarnation = body[at] if at is not None and len(body) > at else 0  # absent: 0
        _ints(incarnation)
        if incarnation < 0:
            raise ValueError(f"incarnation {incarnation} < 0")
        if kind == "append":
            prev_index, prev_term, commit, seq, raw = rest[:5]
            held = rest[5] if len(rest) > 5 else 0  # a protocol 1 leader never says: 0
            _ints(prev_index, prev_term, commit, seq, held)
            entries = _entries(raw, prev_index)
            return messages.AppendEntries(
                *common, prev_index, prev_term, entries, commit, seq, held, incarnation=incarnation
            )
        if kind == "append_resp":
            ok, match_index, seq = rest[:3]
            _bools(ok)
            _ints(match_index, seq)
            return messages.AppendResponse(*common, ok, match_index, seq, incarnation=incarnation)
        if kind == "vote":
            last_index, last_term, pre, transfer = rest[:4]
            _ints(last_index, last_term)
            _bools(pre, transfer)
            return messages.RequestVote(
                *common, last_index, last_term, pre, transfer, incarnation=incarnation
            )
        if kind == "vote_resp":
            granted, pre = rest[:2]
            _bools(granted, pre)
            return messages.VoteResponse(*common, granted, pre, incarnation=incarnation)
        if kind == "snapshot":
            (index, term_, membership, data), seq = rest[:2]
            _ints(index, term_, seq)
            if type(membership) is not bytes or type(data) is not bytes:
                raise TypeError("snapshot membership and data must be bytes")
            meta = messages.SnapshotMeta(index, term_, messages.Membership.decode(membership))
            snapshot = messages.Snapshot(meta, data)
            return messages.InstallSnapshot(*common, snapshot, seq, incarnation=incarnation)
        if kind == "timeout_now":
            return messages.TimeoutNow(*common, incarnation=incarnation)
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"malformed raft message: {exc}") from exc
    raise FrameError(f"unknown raft message kind {kind!r}")
