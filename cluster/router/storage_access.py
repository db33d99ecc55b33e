"""How a router talks to storage nodes: leaders for writes and strong reads, any replica else.

It turns node replies into results or DynamoDB errors, and never retries a write whose fate is
unknown (it could apply twice); reads are retried freely within the request's deadline.

Every request names the table's incarnation (``Partition.incarnation``): a node's replica of
another table of the same name (a deleted one's, kept while the node was down) answers
NotLeader, and the request goes to another replica.

It fails fast: every wait on a node is bounded by the cluster's failure detector
(``ClusterConfig.timeouts()``: about one election timeout per attempt, under a second for all
of one request on one partition), a silent node is left for the other replicas (whose NotLeader
replies name the leader they know), and a partition without a reachable leader is answered with
a retryable error (503 ServiceUnavailable, or 500 when a write's outcome is unknown) instead of
a hang. Requests on other partitions never wait on it.

    storage = StorageAccess(config, "rt-a")
    result = await storage.write(partition, PutCommand(...), deadline=5.0)   # ApplyResult
    item = await storage.get(partition, "orders", pk, sk, consistent=True, deadline=5.0)
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.config import ClusterConfig
from cluster.metadata.partitionmap import Partition
from cluster.storage.client import SUSPECT_SECONDS, GroupClient, NodeUnavailable
from cluster.storage.commands import ApplyResult, Command, encode_command

from .errors import DynamoError

log = logging.getLogger(__name__)


class StorageAccess:
    def __init__(self, config: ClusterConfig, router_id: str) -> None:
        self.config = config
        self.router_id = router_id
        self.az = config.process(router_id).az
        self.timeouts = config.timeouts()
        self.nodes = GroupClient(config.dial_map(router_id, "storage"), self.timeouts.connect)
        # (group, replicas) -> the order this router reads them in when eventually consistent
        self._preferences: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._refused: dict[tuple[str, str], float] = {}  # (group, node) -> when it said no
        # How a strongly consistent read is served, chosen once (no per-request branch).
        self._read_consistent: Callable[..., Awaitable[dict[str, Any]]] = self._read_leader
        if "stale-reads" in config.unsafe:
            log.warning("router %s: TEST-ONLY broken mode stale-reads", router_id)
            # A "consistent" read from whichever replica answers: it may be stale.
            self._read_consistent = self._read_any

    async def close(self) -> None:
        await self.nodes.close()

    async def write(self, partition: Partition, cmd: Command, deadline: float) -> ApplyResult:
        """Apply ``cmd`` at the partition's leader within ``deadline`` (item operations pass
        the per-request budget, ``timeouts.request``; table creation waits longer)."""
        attempt = self.timeouts.write_attempt
        reply = await self.nodes.call_leader(
            partition.id,
            "propose",
            deadline,
            candidates=partition.replicas,
            retry_unknown=False,
            attempt_timeout=attempt,
            cmd=encode_command(cmd),
            # The leader answers OutcomeUnknown itself just before we would stop waiting.
            timeout=max(0.05, attempt - 0.05),
            incarnation=partition.incarnation,
        )
        if "result" in reply:
            return ApplyResult.from_wire(reply["result"])
        raise _storage_error(reply, write=True)

    async def read(
        self, partition: Partition, op: str, consistent: bool, deadline: float, **fields: Any
    ) -> dict[str, Any]:
        """A read op on the leader (consistent) or on any replica (eventual)."""
        fields["incarnation"] = partition.incarnation  # only a replica of the table answers
        if consistent:
            reply = await self._read_consistent(partition, op, deadline, **fields)
        else:
            reply = await self._read_any(partition, op, deadline, **fields)
        if "error" in reply:
            raise _storage_error(reply, write=False)
        return reply

    async def _read_leader(
        self, partition: Partition, op: str, deadline: float, **fields: Any
    ) -> dict[str, Any]:
        attempt = self.timeouts.attempt
        return await self.nodes.call_leader(
            partition.id,
            op,
            deadline,
            candidates=partition.replicas,
            attempt_timeout=attempt,
            consistent=True,
            timeout=max(0.05, attempt - 0.05),
            **fields,
        )

    async def _read_any(
        self, partition: Partition, op: str, deadline: float, **fields: Any
    ) -> dict[str, Any]:
        """An eventually consistent read: this router's own replica of the partition first.

        Each router ranks a partition's replicas by a hash of (router, partition, node)
        (rendezvous hashing, ``_preference``) and reads from the first healthy one, so the
        routers together spread a partition's reads over its replicas (as leaders spread the
        consistent ones), while one router's reads of one partition stay on one connection.
        Chosen at random for each request, one router's reads reached all 6 nodes of a 3x2x1
        cluster, each with a sixth of them: fewer requests per wake-up and per send, and
        0.28-0.33 ms of storage CPU per read against 0.16-0.19 ms so (bench/api.py phases,
        same cluster, quiet); eventual / consistent through one router, beside 2 CPU burners
        (--busy 2), 0.97-1.03 before and 1.13-2.24 after. Successive eventual reads through
        one router also no longer go back in time between replicas while its replica holds.
        Sending them to the router's own AZ first was worse on a busy machine: 4 partitions'
        reads on 2 of the 6 nodes. Replicas that failed or refused us recently go last; each
        attempt waits up to one read attempt (at most half the budget left), so a slow replica
        is given time before its read is sent to another (a retry storm would make every
        replica slower).
        """
        group = partition.id
        since = time.monotonic() - SUSPECT_SECONDS
        replicas = sorted(  # stable: healthy first, then those that did not refuse lately
            self._preference(group, partition.replicas),
            key=lambda n: (
                self.nodes.suspect(n, group),
                self._refused.get((group, n), 0.0) > since,
            ),
        )
        reply: dict[str, Any] = {"error": "Unavailable", "message": "no replica answered"}
        end = time.monotonic() + deadline
        for node in replicas:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:
                client = self.nodes.client(node)
                wait = min(self.timeouts.attempt, remaining / 2)
                reply = await client.call(op, group=group, deadline=wait, **fields)
            except (NodeUnavailable, TimeoutError) as exc:
                await self.nodes.note_failure(node, group, exc)
                continue
            if "error" not in reply:
                return reply
            # It answered with an error (e.g. it cannot serve the group: a log replica,
            # quarantined, moved away): not first for a while, or every read would ask it
            # again before another replica. Only the order of the replicas tried changes.
            self._refused[(group, node)] = time.monotonic()
        # Every replica failed: the leader path has the best chance (and retries), read
        # consistently: a replica its node restarted with serves no read as it is until the
        # map confirms it (StorageNode._readable), which a MemDS out of reach delays; a
        # consistent read needs only the lease, which the group's leader holds.
        return await self._read_leader(partition, op, max(0.0, end - time.monotonic()), **fields)

    def _preference(self, group: str, replicas: tuple[str, ...]) -> tuple[str, ...]:
        """``replicas`` in this router's order of preference for ``group`` (cached)."""
        key = (group, replicas)
        order = self._preferences.get(key)
        if order is None:
            if len(self._preferences) >= 10_000:  # groups come and go: bounded caches
                self._preferences.clear()
                self._refused.clear()
            rank = {n: zlib.crc32(f"{self.router_id}/{group}/{n}".encode()) for n in replicas}
            order = self._preferences[key] = tuple(sorted(replicas, key=rank.__getitem__))
        return order

    async def node_call(self, node: str, op: str, deadline: float, **fields: Any) -> dict[str, Any]:
        """A control-plane call to one node (create or drop a group)."""
        try:
            reply = await self.nodes.client(node).call(op, deadline=deadline, **fields)
        except (NodeUnavailable, TimeoutError) as exc:
            raise DynamoError.unavailable(f"storage node {node} unavailable: {exc}") from None
        if "error" in reply:
            raise _storage_error(reply, write=True)
        return reply


def _storage_error(reply: dict[str, Any], write: bool) -> DynamoError:
    code = reply.get("error")
    message = str(reply.get("message") or code)
    if code == "Throttled":
        return DynamoError.throttled(bool(reply.get("provisioned")))
    if code == "ValidationException":
        return DynamoError.validation(message)
    if code == "OutcomeUnknown" and write:
        # The write may or may not have been applied: a 500, as DynamoDB does for timeouts.
        return DynamoError.internal(f"The request's outcome is unknown: {message}")
    return DynamoError.unavailable(f"No replica could serve the request: {message}")
