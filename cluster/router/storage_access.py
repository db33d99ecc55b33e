"""How a router talks to storage nodes: leaders for writes and strong reads, any replica else.

It turns node replies into results or DynamoDB errors, and never retries a write whose fate is
unknown (it could apply twice); reads are retried freely within the request's deadline.

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
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.config import ClusterConfig
from cluster.metadata.partitionmap import Partition
from cluster.storage.client import GroupClient, NodeUnavailable
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
        )
        if "result" in reply:
            return ApplyResult.from_wire(reply["result"])
        raise _storage_error(reply, write=True)

    async def read(
        self, partition: Partition, op: str, consistent: bool, deadline: float, **fields: Any
    ) -> dict[str, Any]:
        """A read op on the leader (consistent) or on any replica (eventual)."""
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
        """An eventually consistent read: any replica, chosen at random for each request.

        Spread evenly, so that every replica (like every leader for consistent reads) carries
        its share: sending them to the router's own AZ first put all of one router's eventual
        reads on a third of the nodes, which on a busy machine made them several times slower
        than consistent reads. Replicas that failed us recently go last; each attempt waits up
        to one read attempt (at most half the budget left), so a slow replica is given time
        before its read is sent to another (a retry storm would make every replica slower).
        """
        replicas = list(partition.replicas)
        random.shuffle(replicas)
        group = partition.id
        replicas.sort(key=lambda n: self.nodes.suspect(n, group))  # stable: healthy first
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
        # Every replica failed: the leader path has the best chance (and retries).
        return await self.nodes.call_leader(
            group,
            op,
            max(0.0, end - time.monotonic()),
            candidates=partition.replicas,
            attempt_timeout=self.timeouts.attempt,
            **fields,
        )

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
