"""Workloads against the real local cluster: Locust headless, canaries, `gameday load`."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster
from chaos.load_cli import load_command
from tests.waiting import bytes_under, wait_exit
from workloads.canary import run_canaries
from workloads.history import describe_problems, merge_histories, read_ops
from workloads.runner import WebUI, start_locust, start_web, stop_locust
from workloads.settings import LoadSettings
from workloads.setup import ensure_table

pytestmark = pytest.mark.slow


def secret_of(cluster: LocalCluster) -> str:
    return cluster.config.credentials[DEFAULT_ACCESS_KEY]


def test_register_workload_under_locust_records_a_well_formed_history(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    endpoints = local_cluster.endpoints()
    secret = secret_of(local_cluster)
    ensure_table(endpoints["rt-a"], DEFAULT_ACCESS_KEY, secret, "wl-register", "register")
    settings = LoadSettings(
        endpoints=tuple(endpoints.values()),
        access_key=DEFAULT_ACCESS_KEY,
        secret_key=secret,
        workload="register",
        table="wl-register",
        keys=10,
        history_dir=tmp_path,
        run_start=time.time(),
    )
    with (tmp_path / "locust.log").open("wb") as log:
        proc = start_locust(settings, users=5, spawn_rate=5, run_time="8s", log=log)
        try:  # importing Locust takes seconds, a minute on a busy machine: wait for progress
            code = wait_exit(proc, "Locust's run", progress=lambda: bytes_under(tmp_path))
        finally:
            stop_locust(proc)
    output = (tmp_path / "locust.log").read_text()
    assert code == 0, output

    ops = list(read_ops(merge_histories(tmp_path)))
    assert describe_problems(ops) == []
    kinds = Counter((o["f"], o["type"]) for o in ops)
    assert kinds["write", "ok"] > 10 and kinds["read", "ok"] > 10 and kinds["cas", "ok"] > 0, kinds
    # every invoke has its completion, unless it is the last op of its process
    last_of: dict[str, int] = {}
    for i, op in enumerate(ops):
        last_of[op["process"]] = i
    open_invokes: dict[str, int] = {}
    for i, op in enumerate(ops):
        if op["type"] == "invoke":
            open_invokes[op["process"]] = i
        else:
            del open_invokes[op["process"]]
    assert all(last_of[p] == i for p, i in open_invokes.items())
    # times: from the run start, about the run's length, monotonic per process
    times = [o["time"] for o in ops]
    assert 0 < times[0] < times[-1] < 60
    assert times[-1] - times[0] > 6
    # 5 users: 5 processes, plus a new id after each unknown outcome
    bases = {o["process"].rsplit(".", 1)[0] for o in ops}
    assert len(bases) == 5
    # reads only return values some write produced
    written = {o["value"] for o in ops if o["f"] == "write" and o["type"] == "invoke"}
    written |= {o["value"][1] for o in ops if o["f"] == "cas" and o["type"] == "invoke"}
    read = {o["value"] for o in ops if o["f"] == "read" and o["type"] == "ok"} - {None}
    assert read <= written
    # Locust's own statistics saw the same requests
    assert "GetItem" in output and "PutItem" in output and "UpdateItem" in output


def test_canaries_cover_every_az_and_router(local_cluster: LocalCluster, tmp_path: Path) -> None:
    endpoints = local_cluster.endpoints()
    az_of = {router: local_cluster.config.process(router).az for router in endpoints}
    secret = secret_of(local_cluster)
    ensure_table(endpoints["rt-b"], DEFAULT_ACCESS_KEY, secret, "wl-canary", "register")
    out = tmp_path / "canary.jsonl"
    pairs = {(az, router) for az in set(az_of.values()) for router in endpoints}
    assert len(pairs) == 9

    def ok_per_pair() -> Counter[tuple[str, str]]:
        ops = read_ops(out) if out.exists() else []
        return Counter((o["az"], o["router"]) for o in ops if o["type"] == "ok")

    async def until_covered() -> None:
        """Canaries until every pair has 8 successful ops (4 probes): a busy machine probes
        fewer times a second, so the wait is for that progress; 300 s bound it."""
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(1.0)  # the history is flushed every second
                ok = ok_per_pair()
                if set(ok) == pairs and min(ok.values()) >= 8:
                    stop.set()

        watcher = asyncio.create_task(watch())
        try:
            await run_canaries(
                endpoints,
                az_of,
                DEFAULT_ACCESS_KEY,
                secret,
                "wl-canary",
                4.0,
                300.0,
                out,
                time.time(),
                stop=stop,
            )
        finally:
            stop.set()
            await watcher

    asyncio.run(until_covered())

    ops = list(read_ops(out))
    assert describe_problems(ops) == []
    ok = ok_per_pair()
    assert set(ok) == pairs
    assert all(n >= 8 for n in ok.values()), ok  # put + get of 4 probes per pair


def test_gameday_load_runs_headless_and_writes_history_and_final_reads(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    app = typer.Typer()
    app.command("load")(load_command)
    app.command("noop")(lambda: None)  # keep "load" a subcommand
    run_dir = tmp_path / "run"

    result = CliRunner().invoke(
        app,
        [
            "load",
            "--data-dir",
            str(local_cluster.data_dir),
            "--workload",
            "rmw",
            "--table",
            "wl-rmw",
            "--keys",
            "8",
            "--distribution",
            "zipfian",
            "--users",
            "3",
            "--run-time",
            "4s",
            "--history",
            str(run_dir),
        ],
    )

    assert result.exit_code == 0, result.output
    ops = list(read_ops(run_dir / "history.jsonl"))
    assert describe_problems(ops) == []
    assert {o["f"] for o in ops} == {"get", "update"}
    finals = json.loads((run_dir / "final_reads.json").read_text())
    assert set(finals) == {f"rmw{i}" for i in range(8)}
    updated = {o["key"] for o in ops if o["f"] == "update" and o["type"] == "ok"}
    assert updated and all(finals[k] is not None for k in updated)
    assert (run_dir / "locust_stats.csv").exists()


def test_web_ui_binds_to_loopback_and_stops(tmp_path: Path) -> None:
    """No load is started: the UI only serves its page until stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = LoadSettings(endpoints=("http://127.0.0.1:9",), workload="register")
    with (tmp_path / "web.log").open("wb") as log:
        proc = start_web(settings, WebUI(port=port), log=log)
        try:
            page = ""
            # A bound for a web UI that never comes up, not for a slow import (busy machine).
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not page and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
                        page = resp.read().decode()
                except OSError:
                    time.sleep(0.2)
        finally:
            code = stop_locust(proc)
    assert "locust" in page.lower(), (tmp_path / "web.log").read_text()
    assert code == 0


def test_processes_two_workers_merge_into_one_history_the_checker_accepts(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """--processes 2: Locust's master and two workers; each worker writes its own part file,
    client ids and written values stay unique across them, and the merged history is judged."""
    from checks import linearizability
    from checks.rundir import RunDir

    endpoints = local_cluster.endpoints()
    secret = secret_of(local_cluster)
    ensure_table(endpoints["rt-a"], DEFAULT_ACCESS_KEY, secret, "wl-procs", "register")
    settings = LoadSettings(
        endpoints=tuple(endpoints.values()),
        access_key=DEFAULT_ACCESS_KEY,
        secret_key=secret,
        workload="register",
        table="wl-procs",
        keys=6,
        history_dir=tmp_path,
        run_start=time.time(),
    )
    with (tmp_path / "locust.log").open("wb") as log:
        proc = start_locust(settings, 6, 6, "8s", processes=2, log=log)
        try:  # three Locust processes import at once: slow on a busy machine, not stuck
            code = wait_exit(proc, "Locust's run", progress=lambda: bytes_under(tmp_path))
        finally:
            stop_locust(proc)
    assert code == 0, (tmp_path / "locust.log").read_text()[-3000:]
    parts = sorted(tmp_path.glob("history-*.jsonl"))
    sizes = {p.name: len(p.read_text().splitlines()) for p in parts}
    assert len(parts) >= 2, sizes  # a part file per worker process: both ran users
    ops = list(read_ops(merge_histories(tmp_path)))
    assert describe_problems(ops) == []
    bases = {o["process"].rsplit(".", 1)[0] for o in ops}
    assert len(bases) == 6  # six users over two workers, no client id shared
    writes = [o["value"] for o in ops if o["f"] == "write" and o["type"] == "invoke"]
    assert len(writes) == len(set(writes)) > 10
    result = linearizability.check(RunDir(tmp_path))
    assert result.valid is True, result
