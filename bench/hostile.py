"""Hostile-client probes against a live router: what each gets back, and how fast.

Starts a local cluster (or uses a running one with --data-dir), then sends the probes of issue
#14 over raw sockets, signed with botocore where a signature matters: lone surrogates, invalid
UTF-8, mistyped members, a Content-Length that lies, oversized and unauthenticated bodies that
are never sent, slowloris headers, an idle connection, malformed HTTP; then every internal
endpoint without the cluster's internal key (storage-node RPC and Raft peer hellos, admin
GETs and POSTs, MemDS, GAC). Prints one row per probe: the status
and error type (or "closed") and the seconds until the answer came or the connection closed.

    .venv/bin/python bench/hostile.py [--data-dir .gameday/cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from chaos.backends.local import LocalCluster
from cluster.storage.wire import encode_frame, read_frame
from tests.cluster.router.rawhttp import (
    RawRouter,
    amz_date,
    an_hour_ago,
    closed_by_peer,
    read_reply,
)

MB = 1024 * 1024
Probe = Callable[[RawRouter], tuple[str, float]]


def _answer(raw: RawRouter, operation: str, body: bytes, **head: object) -> tuple[str, float]:
    """Send the head (and ``body`` unless the head promises otherwise); the reply."""
    with raw.connect(timeout=60) as sock:
        started = time.monotonic()
        sock.sendall(raw.head(operation, body, **head) + body)  # type: ignore[arg-type]
        reply = read_reply(sock, started)
        kind = reply.type if reply.body.startswith(b"{") else reply.body[:30].decode()
        return f"{reply.status} {kind}", reply.seconds


def _until_closed(raw: RawRouter, first: bytes, trickle: bytes) -> tuple[str, float]:
    with raw.connect(timeout=0.2) as sock:
        started = time.monotonic()
        sock.sendall(first)
        while time.monotonic() - started < 120:
            try:
                if trickle:
                    sock.sendall(trickle)
                if closed_by_peer(sock):
                    return "closed", time.monotonic() - started
            except (BrokenPipeError, ConnectionResetError):
                return "closed", time.monotonic() - started
        return "still open", time.monotonic() - started


def _raw_bytes(raw: RawRouter, data: bytes) -> tuple[str, float]:
    with raw.connect(timeout=60) as sock:
        started = time.monotonic()
        sock.sendall(data)
        reply = read_reply(sock, started)
        return f"{reply.status} {reply.body[:40].decode(errors='replace')!r}", reply.seconds


def probes(table: str) -> list[tuple[str, Probe]]:
    put = {"TableName": table, "Item": {"pk": {"S": "a"}, "v": {"S": "\ud800"}}}
    mapkey = {"TableName": table, "Item": {"pk": {"S": "a"}, "m": {"M": {"\ud800": {"N": "1"}}}}}
    batch = {"RequestItems": {table: [{"PutRequest": put}]}}
    rcc = {"TableName": table, "Key": {"pk": {"S": "a"}}, "ReturnConsumedCapacity": 5}
    lie = b'{"Limit": 5}'
    return [
        ("surrogate in a value", lambda r: _answer(r, "PutItem", json.dumps(put).encode())),
        ("surrogate in a map key", lambda r: _answer(r, "PutItem", json.dumps(mapkey).encode())),
        (
            "surrogate in a batch",
            lambda r: _answer(r, "BatchWriteItem", json.dumps(batch).encode()),
        ),
        (
            "invalid UTF-8",
            lambda r: _answer(r, "ListTables", b'{"ExclusiveStartTableName":"\xff"}'),
        ),
        ("ReturnConsumedCapacity: 5", lambda r: _answer(r, "GetItem", json.dumps(rcc).encode())),
        (
            "Content-Length +100 (lie)",
            lambda r: _answer(r, "ListTables", lie, length=len(lie) + 100),
        ),
        ("17 MB declared, unsent", lambda r: _answer(r, "ListTables", b"", length=17 * MB)),
        (
            "unknown key, 1 MB unsent",
            lambda r: _answer(r, "ListTables", b"", length=MB, key="AKIDSTRANGER"),
        ),
        (
            "stale date, 1 MB unsent",
            lambda r: _answer(
                r, "ListTables", b"", length=MB, override={"X-Amz-Date": amz_date(an_hour_ago())}
            ),
        ),
        (
            "wrong scope, 1 MB unsent",
            lambda r: _answer(r, "ListTables", b"", length=MB, service="s3"),
        ),
        ("malformed request line", lambda r: _raw_bytes(r, b"GARBAGE\r\n\r\n")),
        (
            "slowloris (1 header byte / 0.2 s)",
            lambda r: _until_closed(r, b"POST / HTTP/1.1\r\nHost: r\r\nX-Slow: ", b"a"),
        ),
        ("idle connection", lambda r: _until_closed(r, b"", b"")),
    ]


def _bare_frames(address: str, hello: dict[str, object], op: str | None) -> tuple[str, float]:
    """A storage node's port, dialed without the key: ``hello`` (what anyone can send), then
    ``op``. The node opens with a challenge and closes a connection whose hello proves
    nothing about it."""

    async def exchange() -> str:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            await asyncio.wait_for(read_frame(reader), 10)  # the node's challenge
            request = b"" if op is None else encode_frame({"id": 1, "op": op})
            writer.write(encode_frame(hello) + request)
            try:
                reply = await asyncio.wait_for(read_frame(reader), 10)
            except asyncio.IncompleteReadError:
                return "refused (connection closed)"
            return str(reply.get("error") or "served")
        finally:
            writer.close()

    started = time.monotonic()
    return asyncio.run(exchange()), time.monotonic() - started


def _bare_http(url: str, method: str) -> tuple[str, float]:
    data = None if method == "GET" else b"{}"
    request = urllib.request.Request(url, data=data, method=method)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return str(resp.status), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {json.loads(exc.read()).get('error')}", time.monotonic() - started


def internal_probes(cluster: LocalCluster) -> list[tuple[str, Callable[[], tuple[str, float]]]]:
    """Every internal endpoint, without the cluster's key: each must refuse within 5 s."""
    node = cluster.config.process("sn-a1")
    gac = cluster.config.process("gac").listen
    md = cluster.config.process("md-a").listen
    client = {"hello": "client"}
    peer = {"hello": "peer", "node": "sn-b1"}
    probes: list[tuple[str, Callable[[], tuple[str, float]]]] = [
        ("node RPC drop_group, no key", lambda: _bare_frames(node.listen, client, "drop_group")),
        (
            "node RPC snapshot_dump, no key",
            lambda: _bare_frames(node.listen, client, "snapshot_dump"),
        ),
        ("node RPC status, no key", lambda: _bare_frames(node.listen, client, "status")),
        ("Raft peer hello, no key", lambda: _bare_frames(node.listen, peer, None)),
    ]
    http = [
        ("POST", f"http://{node.admin}/admin/scrub"),
        ("GET", f"http://{node.admin}/replicas"),
        ("GET", f"http://{node.admin}/digest"),
        ("GET", f"http://{node.admin}/admin/state"),
        ("GET", f"http://{md}/map"),
        ("POST", f"http://{md}/lookup"),
        ("POST", f"http://{gac}/tokens"),
        ("PUT", f"http://{gac}/tables/x-intruder"),
        ("DELETE", f"http://{gac}/tables/x-intruder"),
    ]
    for method, url in http:
        name = f"{method} {url.split('/', 3)[3]} ({url.split('/')[2]}), no key"
        probes.append((name, lambda m=method, u=url: _bare_http(u, m)))  # type: ignore[misc]
    return probes


def _verdict(answer: str, seconds: float) -> str:
    """The issue's bar: a 4xx (or a refused / closed connection) within 5 seconds."""
    refused = answer[:1] == "4" or "refused" in answer or "closed" in answer
    return "[green]yes[/green]" if refused and seconds <= 5.0 else "[red]NO[/red]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a running cluster's data directory")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="gameday-hostile-") as tmp:
        cluster = LocalCluster.open(args.data_dir) if args.data_dir else None
        own = cluster is None
        if cluster is None:
            cluster = LocalCluster.create(Path(tmp) / "cluster", "3x2x1", partitions=2)
            cluster.die_with_this_process()  # killed by any signal, it leaves no cluster
            console.print("starting a 3x2x1 cluster ...")
            cluster.up(timeout=90)
        try:
            raw = RawRouter.of(cluster)
            table = "hostile-bench"
            body = {
                "TableName": table,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            }
            raw.call("CreateTable", json.dumps(body).encode(), timeout=60)
            result = Table(title=f"hostile probes against {raw.host}:{raw.port}")
            for column in ("probe", "answer", "seconds", "4xx/refused in 5 s"):
                result.add_column(column)
            for name, probe in probes(table):
                try:
                    answer, seconds = probe(raw)
                except OSError as exc:
                    answer, seconds = f"error: {exc!r}", float("nan")
                result.add_row(name, answer, f"{seconds:.2f}", _verdict(answer, seconds))
            for name, internal in internal_probes(cluster):
                answer, seconds = internal()
                result.add_row(name, answer, f"{seconds:.2f}", _verdict(answer, seconds))
            raw.call("DeleteTable", json.dumps({"TableName": table}).encode(), timeout=60)
            console.print(result)
        finally:
            if own:
                cluster.down()


if __name__ == "__main__":
    main()
