"""A storage node's read operations (get, query, scan) and the error its requests answer.

Each takes the group's replica and the client's request (a msgpack map, see node.py) and
answers the response body; a consistent read runs under the leader's lease, an eventual one on
this replica as it is.

    body = await get(replica, {"tbl": "t", "pk": b"k", "sk": b"", "consistent": True})
"""

from __future__ import annotations

import time
from typing import Any

from .intents import lock_table
from .itemstore import ItemStore
from .replica import Replica


class RequestError(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


async def get(replica: Replica, request: dict[str, Any]) -> dict[str, Any]:
    """An item (and a transaction's intent on it, when one rides along)."""
    tbl, pk, sk = str(request["tbl"]), bytes(request["pk"]), bytes(request["sk"])

    def read(store: ItemStore) -> Any:
        # A transaction's intent on the item rides along: a consistent GetItem resolves
        # it through the transaction record (cluster/router/txncoord.py).
        return store.get(tbl, pk, sk), store.get(lock_table(tbl), pk, sk)

    if request.get("consistent"):
        got = await replica.read_consistent(read, float(request.get("timeout", 2.0)))
    else:
        got = await replica.read_local(read)
    item, lock = got
    return {"item": item} if lock is None else {"item": item, "lock": lock}


def _keys(request: dict[str, Any]) -> list[tuple[str, bytes, bytes]]:
    keys = request["keys"]
    if not isinstance(keys, list):
        raise RequestError("ValidationException", "keys is not a list of [tbl, pk, sk]")
    out = []
    for key in keys:
        if not (isinstance(key, list | tuple) and len(key) == 3):
            raise RequestError("ValidationException", "keys is not a list of [tbl, pk, sk]")
        out.append((str(key[0]), bytes(key[1]), bytes(key[2])))
    return out


async def txn_read(replica: Replica, request: dict[str, Any]) -> dict[str, Any]:
    """TransactGetItems' first read, at the leader: every key's item and the transaction
    intent on it (None: none), and a read mark on each for ``reader`` (readmarks.py), all at
    one applied index. ``{"items": [...], "locks": [...], "node": this node}``: the check must
    reach the same node, whose marks these are."""
    reader, keys = str(request["reader"]), _keys(request)

    def read(store: ItemStore) -> Any:
        items = [store.get(*key) for key in keys]
        locks = [store.get(lock_table(key[0]), key[1], key[2]) for key in keys]
        replica.marks.mark(reader, keys, time.monotonic())
        return items, locks

    items, locks = await replica.read_consistent(read, float(request.get("timeout", 2.0)))
    return {"items": items, "locks": locks, "node": replica.node_id}


async def txn_check(replica: Replica, request: dict[str, Any]) -> dict[str, Any]:
    """TransactGetItems' second read, at the leader: whether each key still holds
    ``reader``'s mark (no write applied to it since ``txn_read``); the marks are dropped.
    ``{"held": [bool, ...], "node": this node}``"""
    reader, keys = str(request["reader"]), _keys(request)

    def check(store: ItemStore) -> list[bool]:
        return replica.marks.check(reader, keys)

    held = await replica.read_consistent(check, float(request.get("timeout", 2.0)))
    return {"held": held, "node": replica.node_id}


async def query(replica: Replica, request: dict[str, Any]) -> dict[str, Any]:
    """One page of partition ``pk`` in sort-key order: ``{"items": [[sk, item]], "more"}``.

    ``lo`` / ``hi`` are None or ``[sk, inclusive]``; ``forward`` False walks down;
    ``start_after`` (an sk, exclusive) continues a page; ``limit`` None reads to the end.
    ``more`` is True when an item follows the page (one more than ``limit`` is read).
    """
    tbl, pk, forward = request["tbl"], request["pk"], request.get("forward", True)
    start_after, limit = request.get("start_after"), request.get("limit")
    bounds: list[tuple[bytes, bool] | None] = []
    for name in ("lo", "hi"):
        bound = request.get(name)
        if bound is not None:
            if not (isinstance(bound, list | tuple) and len(bound) == 2):
                raise RequestError("ValidationException", f"query: {name} is not [sk, bool]")
            if not (isinstance(bound[0], bytes) and isinstance(bound[1], bool)):
                raise RequestError("ValidationException", f"query: {name} is not [sk, bool]")
            bound = (bound[0], bound[1])
        bounds.append(bound)
    if not (isinstance(tbl, str) and isinstance(pk, bytes) and isinstance(forward, bool)):
        raise RequestError("ValidationException", "query: tbl, pk or forward of a bad type")
    if not (start_after is None or isinstance(start_after, bytes)):
        raise RequestError("ValidationException", "query: start_after is not an sk")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise RequestError("ValidationException", f"query: bad limit {limit!r}")
    lo, hi = bounds
    fetch = None if limit is None else limit + 1

    def read(store: ItemStore) -> list[tuple[bytes, Any]]:
        return store.query(
            tbl, pk, lo=lo, hi=hi, forward=forward, limit=fetch, start_after=start_after
        )

    if request.get("consistent"):
        rows = await replica.read_consistent(read, float(request.get("timeout", 2.0)))
    else:
        rows = await replica.read_local(read)
    more = limit is not None and len(rows) > limit
    return {"items": [[sk, item] for sk, item in rows[:limit]], "more": more}


async def scan(replica: Replica, request: dict[str, Any]) -> dict[str, Any]:
    """One page of a table in (pk, sk) order: ``{"items": [[pk, sk, item]], "more"}``.

    ``start_after`` is None or ``[pk, sk]`` (exclusive); ``limit`` and ``more`` as in query.
    """
    tbl, after, limit = request["tbl"], request.get("start_after"), request.get("limit")
    if not isinstance(tbl, str):
        raise RequestError("ValidationException", "scan: tbl is not a string")
    start_after: tuple[bytes, bytes] | None = None
    if after is not None:
        if not (isinstance(after, list | tuple) and len(after) == 2):
            raise RequestError("ValidationException", "scan: start_after is not [pk, sk]")
        if not (isinstance(after[0], bytes) and isinstance(after[1], bytes)):
            raise RequestError("ValidationException", "scan: start_after is not [pk, sk]")
        start_after = (after[0], after[1])
    if limit is not None and (type(limit) is not int or limit < 1):
        raise RequestError("ValidationException", f"scan: bad limit {limit!r}")
    fetch = None if limit is None else limit + 1

    def read(store: ItemStore) -> list[tuple[bytes, bytes, Any]]:
        return store.scan(tbl, start_after=start_after, limit=fetch)

    if request.get("consistent"):
        rows = await replica.read_consistent(read, float(request.get("timeout", 2.0)))
    else:
        rows = await replica.read_local(read)
    more = limit is not None and len(rows) > limit
    return {"items": [[pk, sk, item] for pk, sk, item in rows[:limit]], "more": more}
