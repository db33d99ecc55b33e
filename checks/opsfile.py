"""A history's operations file: its invokes and completions already paired, for a fast load.

``history.ops.jsonl`` sits beside ``history.jsonl`` and is derived from it (the history stays
the record of the run, and the contract between workloads and checks). It is written once per
run, after the merge (`checks.history.write_operations`), and read by `load_operations` instead
of pairing the history's lines again: one decode of an op per line, no pairing in Python (about
half the load's CPU).

Its first line names the format, its columns and the history it was made from (byte count and
CRC-32); each further line is one operation (`checks.history.Operation`'s fields, in the
columns' order), in invoke order:

    {"format":"gameday-operations","version":1,"columns":["index","process","f","key",...],
     "history_bytes":21656036,"history_crc32":3735928559,"operations":100000}
    [0,"w13","read","k310",null,null,"ok",8e-6,0.002976,0.002967,null,true,null,null,null,null]

It is used only when its first line matches the history beside it, byte for byte (count and
CRC-32 of the whole file): a history edited, replaced or cut after the file was written is
paired again from its lines. Without the file (runs from before it existed, a canary file), or
when it is unreadable, the history's lines are paired as before.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

FORMAT = "gameday-operations"
VERSION = 1
_CHUNK = 1 << 20
_BLOCK = 1 << 16  # bytes of whole lines decoded per call (about 500 lines of a history)


class Header(msgspec.Struct, forbid_unknown_fields=True):
    """The first line of an operations file."""

    format: str
    version: int
    columns: list[str]
    history_bytes: int
    history_crc32: int
    operations: int  # how many lines follow


_decode_header = msgspec.json.Decoder(Header).decode


def ops_path(history: Path) -> Path:
    """The operations file of ``history`` (``history.jsonl`` -> ``history.ops.jsonl``)."""
    return history.with_suffix(".ops.jsonl")


def fingerprint(history: Path) -> tuple[int, int]:
    """(byte count, CRC-32) of the file ``history``, read a chunk at a time."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    size = crc = 0
    with history.open("rb", buffering=0) as file:
        while read := file.readinto(buffer):
            size += read
            crc = zlib.crc32(view[:read], crc)
    return size, crc


def header(made_from: tuple[int, int], columns: list[str], operations: int) -> bytes:
    """The first line of an operations file of ``operations`` lines, made from a history of
    this `fingerprint`."""
    size, crc = made_from
    return msgspec.json.encode(Header(FORMAT, VERSION, columns, size, crc, operations)) + b"\n"


def matches(line: bytes, history: Path, columns: list[str]) -> int | None:
    """The number of operations the file says it holds, when ``line`` is an operations file's
    first line, of this version and these columns, made from ``history`` as it is now; None
    when it is not."""
    try:
        head = _decode_header(line)
    except msgspec.DecodeError:
        return None
    if (head.format, head.version, head.columns) != (FORMAT, VERSION, columns):
        return None
    size = history.stat().st_size
    if size != head.history_bytes or fingerprint(history) != (size, head.history_crc32):
        return None
    return head.operations


def blocks(
    file: io.RawIOBase | io.BufferedIOBase, decode: Callable[[memoryview], list[Any]]
) -> Iterator[list[Any]]:
    """The rest of ``file`` decoded by ``decode``, a block of whole lines at a time."""
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    filled = 0
    while read := file.readinto(view[filled:]):
        filled += read
        end = buffer.rfind(b"\n", 0, filled) + 1
        if end == 0:  # no whole line yet
            if filled == len(buffer):  # a line longer than the buffer: grow it
                view.release()
                buffer.extend(bytes(len(buffer)))
                view = memoryview(buffer)
            continue
        yield decode(view[:end])
        buffer[: filled - end] = view[end:filled]  # the next line's start, to the front
        filled -= end
    if filled:
        yield decode(view[:filled])
