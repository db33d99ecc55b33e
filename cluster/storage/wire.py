"""The storage node's wire format: length-prefixed msgpack frames, and the Raft message codec.

One TCP connection carries either one peer's one-way Raft traffic (after a ``peer`` hello) or a
client's request/response exchange (after a ``client`` hello). A frame is a 4-byte big-endian
length followed by a msgpack map.

    writer.write(encode_frame({"hello": "peer", "node": "n1"}))
    frame = await read_frame(reader)            # -> dict
    msg = decode_message(encode_message(msg))   # Raft messages round-trip
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


def _entry(e: messages.Entry) -> list[Any]:
    return [e.index, e.term, e.kind.value, e.data]


def _snapshot(s: messages.Snapshot) -> list[Any]:
    m = s.meta
    return [m.index, m.term, m.membership.encode(), s.data]


def encode_message(msg: messages.AnyMessage) -> dict[str, Any]:
    head: dict[str, Any] = {"g": msg.group, "s": msg.src, "d": msg.dst, "t": msg.term}
    match msg:
        case messages.RequestVote():
            head |= {"k": "vote", "li": msg.last_index, "lt": msg.last_term, "p": msg.pre}
            head["x"] = msg.transfer
        case messages.VoteResponse():
            head |= {"k": "vote_resp", "ok": msg.granted, "p": msg.pre}
        case messages.AppendEntries():
            head |= {"k": "append", "pi": msg.prev_index, "pt": msg.prev_term, "c": msg.commit}
            head |= {"e": [_entry(e) for e in msg.entries], "q": msg.seq}
        case messages.AppendResponse():
            head |= {"k": "append_resp", "ok": msg.success, "m": msg.match_index, "q": msg.seq}
        case messages.InstallSnapshot():
            head |= {"k": "snapshot", "snap": _snapshot(msg.snapshot), "q": msg.seq}
        case messages.TimeoutNow():
            head |= {"k": "timeout_now"}
    return head


def decode_message(body: dict[str, Any]) -> messages.AnyMessage:
    """Inverse of encode_message; raises FrameError on anything malformed."""
    try:
        common = (str(body["g"]), str(body["s"]), str(body["d"]), int(body["t"]))
        kind = body["k"]
        if kind == "vote":
            return messages.RequestVote(
                *common, body["li"], body["lt"], bool(body["p"]), bool(body["x"])
            )
        if kind == "vote_resp":
            return messages.VoteResponse(*common, bool(body["ok"]), bool(body["p"]))
        if kind == "append":
            entries = tuple(
                messages.Entry(i, t, messages.EntryKind(k), d) for i, t, k, d in body["e"]
            )
            return messages.AppendEntries(
                *common, body["pi"], body["pt"], entries, body["c"], body["q"]
            )
        if kind == "append_resp":
            return messages.AppendResponse(*common, bool(body["ok"]), body["m"], body["q"])
        if kind == "snapshot":
            index, term, membership, data = body["snap"]
            meta = messages.SnapshotMeta(index, term, messages.Membership.decode(membership))
            return messages.InstallSnapshot(*common, messages.Snapshot(meta, data), body["q"])
        if kind == "timeout_now":
            return messages.TimeoutNow(*common)
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"malformed raft message: {exc}") from exc
    raise FrameError(f"unknown raft message kind {kind!r}")
