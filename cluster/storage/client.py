"""An asyncio client for a storage node's client port (used by routers, tests and benches).

Requests are pipelined on one connection and matched to responses by id.

    async with NodeClient("127.0.1.1:7100") as node:
        reply = await node.call("propose", group="p0", cmd=encode_command(cmd), timeout=5.0)
        # {"result": {...}} or {"error": "NotLeader", "leader": "n2", ...}

``ask`` makes one request on a connection of its own: nothing is left behind when the node is
dead or the call times out, which suits probes made every half second to every peer.

    reply = await ask("127.20.1.1:7100", {"op": "status"}, timeout=1.0)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from cluster.tasks import cancel_and_wait

from .coalesce import Coalescer
from .handshake import send_hello
from .transport import split_address
from .wire import FrameError, encode_frame, read_frame

SUSPECT_SECONDS = 2.0  # how long a node that failed a call is tried after the others


class NodeUnavailable(ConnectionError):
    """The node could not be reached, or the connection broke before a reply.

    ``sent`` tells whether the request may have reached the node: when False it certainly did
    not (connect failed), so even a write may be retried elsewhere.
    """

    def __init__(self, message: str, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class NodeClient:
    def __init__(self, address: str, connect_timeout: float = 1.0) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self._writer: asyncio.StreamWriter | None = None
        self._out: Coalescer | None = None  # requests of one loop pass leave in one send
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._connecting = asyncio.Lock()

    async def __aenter__(self) -> NodeClient:
        await self.connect()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        async with self._connecting:
            if self._writer is not None:
                return
            host, port = split_address(self.address)
            writer = None
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation that
                # arrives as the connect ends (a stopping loop then never ends).
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(host, port)
                await send_hello(reader, writer, "client")  # the node's challenge, answered
            except (OSError, TimeoutError, FrameError, asyncio.IncompleteReadError) as exc:
                if writer is not None:
                    writer.close()
                reason = str(exc) or "connect timed out"
                raise NodeUnavailable(f"{self.address}: {reason}", sent=False) from exc
            self._writer = writer
            self._out = Coalescer(writer)
            self._reader_task = asyncio.create_task(self._read_replies(reader))

    async def close(self) -> None:
        await cancel_and_wait(self._reader_task)
        self._disconnect(NodeUnavailable(f"{self.address}: client closed"))

    async def call(self, op: str, *, deadline: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send one request and wait up to ``deadline`` seconds, all told, for its reply.

        Raises NodeUnavailable (``sent`` False when the request surely did not leave: the
        connect failed or did not finish in time) or TimeoutError (sent, no reply in time).
        """
        out = self._out
        if out is not None and out.can_write_now():
            return await self._call_connected(out, op, deadline, fields)
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        sent = False
        try:
            async with asyncio.timeout(max(0.0, deadline)):
                await self.connect()
                out = self._out
                assert out is not None
                self._waiting[request_id] = future
                out.write(encode_frame({"id": request_id, "op": op, **fields}))
                sent = True  # may have been: from here a write's outcome is unknown
                # Bounded too: a node that stopped reading (paused) fills the socket buffer.
                await out.drain()
                return await future
        except NodeUnavailable:
            raise
        except TimeoutError:
            if not sent:
                raise NodeUnavailable(f"{self.address}: connect timed out", sent=False) from None
            raise
        except (OSError, ConnectionError) as exc:
            self._disconnect(NodeUnavailable(f"{self.address}: {exc}"))
            raise NodeUnavailable(f"{self.address}: {exc}", sent=sent) from exc
        finally:
            self._waiting.pop(request_id, None)

    async def _call_connected(
        self, out: Coalescer, op: str, deadline: float, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """``call`` on a connection that is up and not held back (most calls): the request
        is handed over without waiting, so only the reply is waited for, bounded by a timer
        rather than an ``asyncio.timeout`` scope, a connect check and a drain per call (those
        were ~3% of a router's py-spy samples under PutItem load). Same outcomes: the reply,
        NodeUnavailable (sent) if the connection breaks first, TimeoutError (sent) at the
        deadline."""
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiting[request_id] = future
        timer = loop.call_later(max(0.0, deadline), _time_out, future)
        try:
            out.write(encode_frame({"id": request_id, "op": op, **fields}))
            return await future
        finally:
            timer.cancel()
            self._waiting.pop(request_id, None)

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await read_frame(reader)
                future = self._waiting.get(int(reply.get("id") or 0))
                if future is not None and not future.done():
                    future.set_result(reply)
        except (asyncio.IncompleteReadError, OSError, ValueError) as exc:
            self._disconnect(NodeUnavailable(f"{self.address}: connection lost ({exc!r})"))

    def _disconnect(self, exc: Exception) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._out = None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)
        self._waiting.clear()


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class GroupClient:
    """Calls a group's leader among several nodes, following NotLeader hints.

    Remembers the last node that answered for each group, so steady traffic goes straight to
    the leader; on NotLeader it follows the hint, on a dead or silent node it asks the next
    one (whose NotLeader reply names the leader it knows), until the deadline. Only replies
    that are not NotLeader/Rejected are returned before it.

    A node that refused or broke a connection is suspect for every group; one that let a call
    time out only for that call's group (a paused node times out for each group separately,
    while a node slow on one group keeps serving the others).
    """

    def __init__(self, addresses: dict[str, str], connect_timeout: float = 0.5) -> None:
        self.addresses = addresses  # node id -> client address
        self.connect_timeout = connect_timeout
        self.clients: dict[str, NodeClient] = {}
        self.leaders: dict[str, str] = {}  # last node that answered for each group
        self.failed_at: dict[str, float] = {}  # node -> when a connection to it last failed
        self.timed_out_at: dict[tuple[str, str], float] = {}  # (group, node) -> last timeout

    def client(self, node: str) -> NodeClient:
        if node not in self.clients:
            self.clients[node] = NodeClient(self.addresses[node], self.connect_timeout)
        return self.clients[node]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.clients.clear()

    def _suspect(self, node: str, group: str) -> bool:
        since = time.monotonic() - SUSPECT_SECONDS
        return (
            self.failed_at.get(node, 0.0) > since
            or self.timed_out_at.get((group, node), 0.0) > since
        )

    def _knows(self, node: str, group: str) -> bool:
        """Whether ``node`` is a storage node we can call and it has not failed us lately."""
        return node in self.addresses and not self._suspect(node, group)

    def _vouched(self, node: str, group: str, attempt_timeout: float | None) -> bool:
        """A follower names ``node``, which only timed out on ``group`` (its connection did not
        fail), two attempts ago or more: the follower has heard from it since (a follower drops
        a leader silent for an election timeout, about one attempt), so it is slow, not gone.
        Its suspicion is lifted: a live leader's one slow reply (a CPU-starved node, 0.5 s) made
        it suspect for SUSPECT_SECONDS, and every call on the group failed meanwhile (503s for
        2 s per router after each hiccup). Liveness only: the node still has to lead to answer.
        Reads only: a write it swallows again has an unknown outcome (500), worse than a 503.
        """
        wait = SUSPECT_SECONDS if attempt_timeout is None else 2 * attempt_timeout
        if self.failed_at.get(node, 0.0) > time.monotonic() - SUSPECT_SECONDS:
            return False
        if self.timed_out_at.get((group, node), 0.0) > time.monotonic() - wait:
            return False
        self.timed_out_at.pop((group, node), None)
        return True

    def suspect(self, node: str, group: str) -> bool:
        """Whether ``node`` failed us recently: a broken connection, or silence on ``group``."""
        return self._suspect(node, group)

    async def note_failure(self, node: str, group: str, exc: Exception) -> None:
        """Remember that ``node`` failed a call on ``group`` (for callers that pick replicas
        themselves, as eventually consistent reads do): a broken connection makes it suspect
        for every group, silence for this group only."""
        if isinstance(exc, NodeUnavailable):
            dropped = self.clients.pop(node, None)
            if dropped is not None:
                await dropped.close()
            self.failed_at[node] = time.monotonic()
        else:
            self.timed_out_at[(group, node)] = time.monotonic()
        if self.leaders.get(group) == node:
            del self.leaders[group]

    async def call_leader(
        self,
        group: str,
        op: str,
        deadline: float = 10.0,
        *,
        candidates: Sequence[str] | None = None,
        retry_unknown: bool = True,
        attempt_timeout: float | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Try ``candidates`` (default: every node) until one answers as the group's leader.

        NotLeader/Rejected replies and failed connects are retried (the request was certainly
        not applied). A request that may have reached a node but got no reply is retried only
        with ``retry_unknown`` (reads); for writes it returns ``{"error": "OutcomeUnknown"}``,
        because a retry could apply the write twice. Each attempt waits at most
        ``attempt_timeout`` (None: the whole deadline). On deadline, the last reply is returned.
        """
        end = time.monotonic() + deadline
        hint = self.leaders.get(group)
        reply: dict[str, Any] = {"error": "Unavailable", "message": f"no leader for {group}"}
        order: list[str] | None = None
        i = 0
        while (remaining := end - time.monotonic()) > 0:
            # A named leader is tried even if the caller did not list it: the map the
            # candidates come from lags behind healing (and cannot follow at all while the
            # metadata group is out of reach); the node itself says if it does not lead.
            if hint is not None and self._knows(hint, group):
                node = hint  # (steady traffic: the pool below would pick it too)
            else:
                if order is None:
                    order = [n for n in (candidates or self.addresses) if n in self.addresses]
                # Nodes that just failed us are left out while any other candidate remains:
                # through a proxy a dead node accepts the connection and then resets it, which
                # for a write means "outcome unknown" — walking into it again would fail the
                # write for nothing.
                pool = [n for n in order if not self._suspect(n, group)] or order
                node = hint if hint is not None and hint in pool else pool[i % len(pool)]
            i += 1
            wait = remaining if attempt_timeout is None else min(remaining, attempt_timeout)
            try:
                reply = await self.client(node).call(op, group=group, deadline=wait, **fields)
            except (NodeUnavailable, TimeoutError) as exc:
                # A reset connection makes the node suspect for all groups, silence for this
                # one; a leader we cannot reach is forgotten, or every later call would go
                # there first (through a proxy, a dead node looks like a reset connection).
                await self.note_failure(node, group, exc)
                if getattr(exc, "sent", True) and not retry_unknown:
                    # A TimeoutError says nothing itself (str() is empty): name what happened.
                    why = str(exc) or f"no reply within {wait:.2f} s"
                    return {"error": "OutcomeUnknown", "message": f"{node}: {why}"}
                hint = None
                await asyncio.sleep(min(0.02, max(0.0, end - time.monotonic())))
                continue
            if reply.get("error") == "NoSuchGroup":
                # The group moved off this node (healing); the caller's map is a little stale.
                hint = None
                await asyncio.sleep(min(0.02, max(0.0, end - time.monotonic())))
                continue
            if reply.get("error") in ("NotLeader", "Rejected"):
                hint = reply.get("leader")
                if (
                    hint is not None
                    and self._suspect(hint, group)
                    and not (retry_unknown and self._vouched(hint, group, attempt_timeout))
                ):
                    hint = None  # a follower still names the leader that just failed us
                if hint is None:
                    await asyncio.sleep(0.02)
                continue
            self.leaders[group] = node
            return reply
        return reply


ASK_FAILURES = (
    OSError,
    asyncio.IncompleteReadError,
    TimeoutError,
    FrameError,
    KeyError,
    TypeError,
)


async def ask(address: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request on a connection of its own (probes: nothing is left behind on failure)."""
    host, port = split_address(address)

    async def exchange() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await send_hello(reader, writer, "client")
            writer.write(encode_frame({"id": 1, **request}))
            await writer.drain()
            return await read_frame(reader)
        finally:
            writer.close()

    # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation that arrives as the
    # exchange ends, and a stopping scrubber would then go on (as NodeClient.connect above).
    async with asyncio.timeout(timeout):
        return await exchange()
