"""A replica that closes (rebuilt, removed, node stopping) while a digest or read waits for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.storage.replica import NotLeader, Replica, ReplicaClosed, ReplicaSettings


async def open_single(tmp_path: Path) -> Replica:
    return await Replica.open(
        "n1", "g", frozenset({"n1"}), tmp_path / "g", ReplicaSettings(), lambda _: None
    )


def test_digest_and_read_of_a_closing_replica_say_closed_not_a_database_error(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        replica = await open_single(tmp_path)
        assert (await replica.digest())["group"] == "g"
        # Queued on the io thread behind close's file closing, as a concurrent admin GET is.
        closing = asyncio.ensure_future(replica.close())
        await asyncio.sleep(0)
        digest = asyncio.ensure_future(replica.digest())
        read = asyncio.ensure_future(replica.read_local(lambda store: store.applied()))
        await closing
        with pytest.raises(ReplicaClosed):
            await digest
        with pytest.raises(NotLeader):
            await read
        with pytest.raises(ReplicaClosed):  # and after close, too
            await replica.digest()

    asyncio.run(scenario())
