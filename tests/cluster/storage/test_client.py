"""GroupClient against scripted nodes on loopback sockets: silent nodes, leader hints, suspicion.

Each scripted node speaks the real wire protocol (a challenge, a ``client`` hello, then
request/response frames) and answers per group as told: as the leader, with NotLeader and a
hint, or never (a paused or cut-off node: the connection stays open, nothing comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from cluster.storage.client import GroupClient, NodeClient, NodeUnavailable, ask
from cluster.storage.wire import encode_frame, read_frame

SILENT = "silent"


class ScriptedNode:
    def __init__(self, answers: dict[str, Any]) -> None:
        """``answers``: group -> "silent", or a leader hint (str | None) for NotLeader, or
        True to answer as the leader."""
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        self.server: asyncio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            writer.write(encode_frame({"challenge": "c"}))  # as a node opens (handshake.py)
            await read_frame(reader)  # hello
            while True:
                request = await read_frame(reader)
                self.requests.append(request)
                answer = self.answers.get(str(request.get("group")), SILENT)
                if answer == SILENT:
                    continue
                if answer is True:
                    reply: dict[str, Any] = {"result": {"ok": True}}
                else:
                    reply = {"error": "NotLeader", "message": "not me", "leader": answer}
                writer.write(encode_frame({"id": request["id"], **reply}))
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def nodes(**scripts: dict[str, Any]) -> AsyncIterator[tuple[GroupClient, dict[str, Any]]]:
    started = {name: ScriptedNode(answers) for name, answers in scripts.items()}
    for node in started.values():
        await node.start()
    client = GroupClient({name: n.address for name, n in started.items()}, connect_timeout=0.5)
    try:
        yield client, started
    finally:
        await client.close()
        for node in started.values():
            await node.stop()


def test_a_silent_leader_is_left_for_the_leader_a_follower_names() -> None:
    async def scenario() -> None:
        async with nodes(old={"g": SILENT}, f={"g": "new"}, new={"g": True}) as (client, _):
            client.leaders["g"] = "old"  # the leader it knew froze
            reply = await client.call_leader(
                "g", "get", 5.0, candidates=["old", "f", "new"], attempt_timeout=0.2
            )
            assert reply == {"result": {"ok": True}, "id": reply["id"]}
            assert client.leaders["g"] == "new"

    asyncio.run(scenario())


def test_a_leader_a_follower_names_is_tried_even_when_the_map_does_not_list_it() -> None:
    """Healing moved the group while the metadata group was out of reach (an AZ split with its
    full replicas on the other side): the router's map still lists the old members. The
    follower's hint is followed to the new leader; before, only listed nodes were tried, and
    writes failed for the whole split (the faults test: 180 s of 'not the leader')."""

    async def scenario() -> None:
        async with nodes(f={"g": "new"}, new={"g": True}) as (client, started):
            reply = await client.call_leader("g", "propose", 2.0, candidates=["f"])
            assert reply == {"result": {"ok": True}, "id": reply["id"]}
            assert client.leaders["g"] == "new" and len(started["new"].requests) == 1

    asyncio.run(scenario())


def test_without_an_attempt_timeout_a_silent_leader_takes_the_whole_deadline() -> None:
    """The counterpart: waiting on the silent node for the whole deadline finds nobody."""

    async def scenario() -> None:
        async with nodes(old={"g": SILENT}, new={"g": True}) as (client, _):
            client.leaders["g"] = "old"
            reply = await client.call_leader("g", "get", 0.3, candidates=["old", "new"])
            assert "result" not in reply

    asyncio.run(scenario())


def test_a_write_that_got_no_reply_is_unknown_and_not_sent_elsewhere() -> None:
    async def scenario() -> None:
        async with nodes(old={"g": SILENT}, new={"g": True}) as (client, started):
            client.leaders["g"] = "old"
            reply = await client.call_leader(
                "g",
                "propose",
                5.0,
                candidates=["old", "new"],
                retry_unknown=False,
                attempt_timeout=0.2,
            )
            assert reply["error"] == "OutcomeUnknown"
            assert reply["message"] == "old: no reply within 0.20 s"  # the router logs it
            assert started["new"].requests == []  # a retry could have applied it twice

    asyncio.run(scenario())


def test_a_node_silent_on_one_group_still_serves_the_others() -> None:
    """A timeout makes the node suspect for that group only: a follower's hint naming it for
    another group is followed, and the call on the shared connection succeeds."""

    async def scenario() -> None:
        async with nodes(n1={"g": SILENT, "h": True}, n2={"g": None, "h": "n1"}) as (client, _):
            client.leaders["g"] = "n1"
            await client.call_leader("g", "get", 0.5, candidates=["n1", "n2"], attempt_timeout=0.1)
            reply = await client.call_leader(
                "h", "get", 2.0, candidates=["n2", "n1"], attempt_timeout=0.5
            )
            assert "result" in reply and client.leaders["h"] == "n1"

    asyncio.run(scenario())


def test_a_leader_that_was_slow_once_is_tried_again_once_its_followers_vouch_for_it() -> None:
    """A live leader's one slow reply (a CPU-starved node) made it suspect for 2 s, and as its
    followers named it, every call on the group failed until then (the suspected amplifier of
    the bank game day's 503 burst at load 12). Two attempts after it timed out,
    a follower that still names it has heard from it since: it is asked again."""

    async def scenario() -> None:
        async with nodes(lead={"g": SILENT}, f1={"g": "lead"}, f2={"g": "lead"}) as (client, n):
            client.leaders["g"] = "lead"
            kw: dict[str, Any] = {"candidates": ["lead", "f1", "f2"], "attempt_timeout": 0.3}
            first = await client.call_leader("g", "get", 0.5, **kw)
            assert first.get("error") == "NotLeader"  # it timed out; the followers name it
            n["lead"].answers["g"] = True  # the stall is over
            # Ends before the 2 s suspicion would (the old client failed it with NotLeader).
            reply = await client.call_leader("g", "get", 1.5, **kw)
            assert reply.get("result") == {"ok": True}
            assert client.leaders["g"] == "lead"
            # Writes do not take the follower's word: one more silence would leave a write's
            # outcome unknown (a 500), where waiting out the suspicion answers a clean 503.
            n["lead"].answers["g"] = SILENT
            await client.call_leader("g", "get", 0.5, **kw)
            n["lead"].answers["g"] = True
            write = await client.call_leader("g", "propose", 0.5, retry_unknown=False, **kw)
            assert write.get("error") == "NotLeader"

    asyncio.run(scenario())


def test_a_leader_whose_connection_failed_is_not_vouched_for() -> None:
    """A refused connection (a dead node) stays suspect for its 2 s whatever followers say."""

    async def scenario() -> None:
        async with nodes(f1={"g": "dead"}, f2={"g": "dead"}) as (client, _):
            client.addresses["dead"] = "127.0.0.1:9"  # nothing listens there
            kw: dict[str, Any] = {"candidates": ["dead", "f1", "f2"], "attempt_timeout": 0.2}
            client.leaders["g"] = "dead"
            reply = await client.call_leader("g", "get", 1.0, **kw)
            assert reply.get("error") == "NotLeader"
            assert client.suspect("dead", "g")

    asyncio.run(scenario())


def test_calls_on_an_open_connection_keep_their_deadline_and_outcomes() -> None:
    """NodeClient.call on a connection that is up (its fast path: no timeout scope, no drain):
    a reply comes back to its own call; a silent node times out at the call's deadline, not
    later, and the request counts as sent; a connection that breaks under a waiting call fails
    it with NodeUnavailable (sent), and the next call connects again."""

    async def scenario() -> None:
        async with nodes(n={"a": True, "quiet": SILENT}) as (client, started):
            node = client.client("n")
            assert (await node.call("get", group="a", deadline=1.0)) == {
                "id": 1,
                "result": {"ok": True},
            }
            assert node._out is not None and node._out.can_write_now()  # the fast path's case
            began = asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(node.call("get", group="quiet", deadline=0.2), 2.0)
                raise AssertionError("a silent node answered")
            except TimeoutError:
                pass
            assert 0.15 <= asyncio.get_running_loop().time() - began < 1.0
            assert node._waiting == {}  # nothing left behind
            replies = await asyncio.gather(*(node.call("get", group="a") for _ in range(20)))
            assert {r["id"] for r in replies} == set(range(3, 23))
            waiting = asyncio.ensure_future(node.call("get", group="quiet", deadline=5.0))
            await asyncio.sleep(0.05)
            await started["n"].stop()
            assert node._writer is not None
            node._writer.transport.abort()  # the connection breaks under the waiting call
            try:
                await asyncio.wait_for(waiting, 1.0)
                raise AssertionError("a broken connection answered")
            except NodeUnavailable as exc:
                assert exc.sent
            assert node._waiting == {}

    asyncio.run(scenario())


async def cancelled_as_its_connect_is_refused(
    monkeypatch: pytest.MonkeyPatch, call: Callable[[], Awaitable[Any]]
) -> asyncio.Task[Any]:
    """The task running ``call``, cancelled in the loop turn where its dial is refused: the
    window in which Python 3.11's ``asyncio.wait_for`` dropped a cancel."""
    loop = asyncio.get_running_loop()
    caller: list[asyncio.Task[Any]] = []

    async def refused(host: str, port: int) -> Any:
        fut: asyncio.Future[Any] = loop.create_future()

        def refuse_and_stop() -> None:
            fut.set_exception(ConnectionRefusedError(111, "refused"))
            caller[0].cancel()

        loop.call_soon(refuse_and_stop)
        return await fut

    monkeypatch.setattr(asyncio, "open_connection", refused)
    task = asyncio.create_task(call())
    caller.append(task)
    with contextlib.suppress(asyncio.CancelledError, OSError):  # NodeUnavailable is one
        await task
    return task


def test_a_cancel_arriving_as_a_connect_is_refused_cancels_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A router's stop cancels its background loops (TableDrains, StaleBuilds...): one inside
    a dial whose refusal lands in the same loop turn must end cancelled. Python 3.11's
    ``asyncio.wait_for`` dropped such a cancel (NodeUnavailable raised instead): the loop took
    it for a failed round, went on, and the stop waited for ever."""

    async def scenario() -> None:
        client = NodeClient("127.0.0.1:9", connect_timeout=0.5)
        task = await cancelled_as_its_connect_is_refused(
            monkeypatch, lambda: client.call("ping", deadline=0.5)
        )
        await client.close()
        assert task.cancelled(), f"the cancel was dropped: {task.exception()!r}"

    asyncio.run(scenario())


def test_a_cancel_arriving_as_a_probes_connect_is_refused_cancels_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for ``ask`` (the scrubber's and rebuild's one-off probes): a node's stop must
    not see its cancel turned into a failed probe (3.11's ``wait_for`` dropped it)."""

    async def scenario() -> None:
        task = await cancelled_as_its_connect_is_refused(
            monkeypatch, lambda: ask("127.0.0.1:9", {"op": "status"}, 0.5)
        )
        assert task.cancelled(), f"the cancel was dropped: {task.exception()!r}"

    asyncio.run(scenario())
