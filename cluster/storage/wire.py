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


def _entry(e: messages.Entry) -> list[Any]:
    return [e.index, e.term, e.kind.value, e.data]


def _snapshot(s: messages.Snapshot) -> list[Any]:
    m = s.meta
    return [m.index, m.term, m.membership.encode(), s.data]


def encode_message(msg: messages.AnyMessage) -> list[Any]:
    head: list[Any] = [msg.group, msg.src, msg.dst, msg.term]
    match msg:
        case messages.AppendEntries():
            entries = [_entry(e) for e in msg.entries]
            return ["append", *head, msg.prev_index, msg.prev_term, msg.commit, msg.seq, entries]
        case messages.AppendResponse():
            return ["append_resp", *head, msg.success, msg.match_index, msg.seq]
        case messages.RequestVote():
            return ["vote", *head, msg.last_index, msg.last_term, msg.pre, msg.transfer]
        case messages.VoteResponse():
            return ["vote_resp", *head, msg.granted, msg.pre]
        case messages.InstallSnapshot():
            return ["snapshot", *head, _snapshot(msg.snapshot), msg.seq]
        case messages.TimeoutNow():
            return ["timeout_now", *head]
    raise TypeError(f"not a raft message: {msg!r}")


def encode_batch(batch: list[messages.AnyMessage]) -> list[bytes]:
    """Frames carrying ``batch`` in order: one, unless it would exceed MAX_FRAME (then it is
    split; a single message too large for a frame raises FrameError)."""
    try:
        return [encode_frame({"rafts": [encode_message(m) for m in batch]})]
    except FrameError:
        if len(batch) == 1:
            raise
        half = len(batch) // 2
        return encode_batch(batch[:half]) + encode_batch(batch[half:])


def decode_frame_messages(frame: dict[str, Any]) -> list[messages.AnyMessage]:
    """The Raft messages a peer frame carries ({"rafts": [...]} or {"raft": ...}), in order."""
    bodies = frame.get("rafts")
    if bodies is None:
        bodies = [frame.get("raft")]
    if not isinstance(bodies, list):
        raise FrameError("malformed raft batch")
    return [decode_message(body) for body in bodies]


def decode_message(body: Any) -> messages.AnyMessage:
    """Inverse of encode_message; raises FrameError on anything malformed."""
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
