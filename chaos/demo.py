"""The interim demo: a replication game day on three local storage nodes.

Until the full game day (routers, workload, scenario, checkers) lands, `gameday demo` runs this:
start three storage-node processes on loopback, write through the group leaders, SIGKILL the
leader of p0 under load, measure how long writes stalled, bring the node back, and then verify
that every acknowledged write is readable and that all replicas converged (equal digests).

    verdict = asyncio.run(run_demo(Path(".gameday/demo"), console))   # True when all checks pass
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chaos.backends.local import LocalNodes
from cluster.storage.client import GroupClient
from cluster.storage.statemachine import PutCommand, encode_command

GROUPS: dict[str, tuple[str, ...]] = {"p0": ("n1", "n2", "n3"), "p1": ("n1", "n2", "n3")}


async def _write(client: GroupClient, group: str, key: str, value: int) -> bool:
    cmd = encode_command(PutCommand("demo", key.encode(), b"", {"v": {"N": str(value)}}))
    reply = await client.call_leader(group, "propose", deadline=5.0, cmd=cmd, timeout=2.0)
    return "result" in reply and bool(reply["result"]["ok"])


async def _read(client: GroupClient, group: str, key: str) -> int | None:
    reply = await client.call_leader(
        group, "get", tbl="demo", pk=key.encode(), sk=b"", consistent=True
    )
    item = reply.get("item")
    return None if item is None else int(item["v"]["N"])


async def run_demo(data_dir: Path, console: Console) -> bool:
    shutil.rmtree(data_dir, ignore_errors=True)
    acked: dict[tuple[str, str], int] = {}
    with LocalNodes(data_dir, GROUPS) as nodes:
        console.print(f"[bold]3 storage nodes up[/bold] ({', '.join(nodes.addresses().values())})")
        client = GroupClient(nodes.addresses())
        victim = await asyncio.to_thread(nodes.wait_leader, "p0")
        stalled_from: float | None = None
        stall = 0.0
        with console.status("writing 300 items; the leader of p0 dies at item 100 ...") as status:
            for i in range(300):  # bounded load
                group = GROUPS_ORDER[i % 2]
                ok = await _write(client, group, f"item{i}", i)
                if ok:
                    acked[(group, f"item{i}")] = i
                    if stalled_from is not None and group == "p0" and not stall:
                        stall = time.monotonic() - stalled_from
                if i == 100:
                    nodes.kill(victim)
                    stalled_from = time.monotonic()
                    status.update(f"SIGKILLed {victim} (leader of p0); still writing ...")
        console.print(
            f"SIGKILL of leader {victim}: writes to p0 resumed after {stall * 1000:.0f} ms"
        )
        nodes.start(victim)
        await asyncio.to_thread(nodes.wait_healthy)
        console.print(f"{victim} restarted on its data")
        missing = [k for k, v in acked.items() if await _read(client, *k) != v]
        converged = await asyncio.to_thread(_wait_converged, nodes)
        await client.close()
        _print_status(nodes, console)
    table = Table(title="Verdict")
    table.add_column("check")
    table.add_column("result")
    table.add_row("acknowledged writes readable", _mark(not missing, f"{len(acked)} checked"))
    table.add_row("replicas converged (digests)", _mark(converged, "p0, p1"))
    console.print(table)
    return not missing and converged


GROUPS_ORDER = sorted(GROUPS)


def _wait_converged(nodes: LocalNodes, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        digests: dict[str, set[tuple[int, str]]] = {g: set() for g in GROUPS}
        for node in nodes.nodes.values():
            for d in node.get_json("/digest")["digests"]:
                digests[d["group"]].add((d["applied"], d["digest"]))
        if all(len(v) == 1 for v in digests.values()):
            return True
        time.sleep(0.1)
    return False


def _print_status(nodes: LocalNodes, console: Console) -> None:
    table = Table(title="Replicas")
    for col in ("node", "group", "role", "term", "commit", "applied"):
        table.add_column(col)
    for node_id in nodes.nodes:
        for r in nodes.status(node_id)["replicas"]:
            table.add_row(
                node_id, r["group"], r["role"], str(r["term"]), str(r["commit"]), str(r["applied"])
            )
    console.print(table)


def _mark(ok: bool, detail: str) -> str:
    return f"[green]PASS[/green] {detail}" if ok else f"[red]FAIL[/red] {detail}"
