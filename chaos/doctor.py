"""``gameday doctor``: is this machine ready for game days, and what fixes what is missing.

Each check is a small function returning a Finding; the table lists them with what was found and
the exact command that fixes a problem. Required findings decide the exit code (1 when any is
missing); optional ones (the Docker and Kubernetes backends) only inform.

    findings = run_checks()
    print_findings(findings, console)
    exit_code(findings)                  # 0 when everything required is there
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

MIN_PYTHON = (3, 11)
MIN_FREE_SUBNETS = 1
MIN_RUN_DISK = 1 << 30  # a game day's run directory and cluster data stay well under 1 GiB
K8S_DISK = 6 << 30  # k8s/toolchain.sh: Go module and build caches


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: ``ok``, what was ``found``, and the ``fix`` when not ok."""

    name: str
    ok: bool
    found: str
    fix: str = ""
    required: bool = True


def check_python() -> Finding:
    ok = sys.version_info[:2] >= MIN_PYTHON
    want = ".".join(map(str, MIN_PYTHON))
    found = f"{sys.version.split()[0]} ({sys.executable})"
    return Finding("Python", ok, found, "" if ok else f"install Python {want}+ and reinstall")


def check_assets() -> Finding:
    from chaos.assets import AssetMissing, asset, shipped_scenarios

    try:
        scenarios = shipped_scenarios()
        asset("docker")
    except AssetMissing as exc:
        return Finding("data files", False, str(exc), "pip install --force-reinstall gameday")
    folder = next(iter(scenarios.values())).parent if scenarios else "?"
    return Finding("data files", bool(scenarios), f"{len(scenarios)} scenarios in {folder}")


def check_toxiproxy() -> Finding:
    from chaos.backends.local import toxiproxy_binary

    try:
        binary = toxiproxy_binary()
    except FileNotFoundError:
        return Finding(
            "toxiproxy-server",
            False,
            "not beside this Python nor on PATH (network faults need it)",
            "gameday setup toxiproxy",
        )
    return Finding("toxiproxy-server", True, f"{_version_of([str(binary), '-version'])} ({binary})")


def check_go(toxiproxy_ok: bool) -> Finding:
    from chaos.setup_cli import find_go

    go = find_go()
    fix = "install Go 1.22+: https://go.dev/dl/ (tar -C /usr/local -xzf go1.*.linux-amd64.tar.gz)"
    if go is None:
        what = "missing; builds toxiproxy-server" if not toxiproxy_ok else "missing; builds k8s"
        return Finding("Go", False, what, fix, required=not toxiproxy_ok)
    version = _version_of([str(go), "version"]).removeprefix("go version ")
    return Finding("Go", True, f"{version} ({go})", required=False)


def check_docker() -> Finding:
    from chaos.images import EngineUnavailable, engine

    name = "Docker engine"
    try:
        client = engine(timeout=5)
        version = client.version().get("Version", "?")
    except EngineUnavailable as exc:
        return Finding(name, False, _first_clause(str(exc)), "gameday setup docker", False)
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        return Finding(
            name, False, f"{version}, but no debootstrap (builds the base image)",
            "gameday setup docker", False,
        )  # fmt: skip
    return Finding(name, True, f"{version} with debootstrap", required=False)


def check_fuse() -> Finding:
    """libfuse3 and /dev/fuse, for the power-loss layer (power_loss faults, local and docker)."""
    import ctypes.util

    name = "FUSE (power_loss faults)"
    if not Path("/dev/fuse").exists():
        return Finding(name, False, "no /dev/fuse", "modprobe fuse (root)", False)
    if ctypes.util.find_library("fuse3") is None:
        fix = "make fuse (apt-get install libfuse3-3)"
        return Finding(name, False, "libfuse3 missing", fix, False)
    return Finding(name, True, "libfuse3 and /dev/fuse", required=False)


def check_k8s() -> Finding:
    """Asks k8s/toolchain.sh itself (``--print``: detects, builds nothing) where its cache is."""
    from chaos.assets import asset

    name = "k8s toolchain"
    script = asset("k8s") / "toolchain.sh"
    probe = subprocess.run(
        ["bash", str(script), "--print"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        found = probe.stderr.strip() or f"{script} --print exited with {probe.returncode}"
        return Finding(name, False, found, "gameday setup k8s (12-15 min from scratch)", False)
    return Finding(name, True, probe.stdout.strip(), required=False)


def check_subnets() -> Finding:
    """Free 127.X.0.0/16 subnets for local clusters, and that such an address can be bound."""
    from chaos.backends.subnets import FIRST, LAST, claims, listening_octets

    try:
        live = {x for x, claim in claims().items() if not claim["stale"]}
    except OSError as exc:
        return Finding("loopback subnets", False, f"subnet registry unusable: {exc}", "")
    taken = live | listening_octets()
    free = [x for x in range(FIRST, LAST + 1) if x not in taken]
    if len(free) < MIN_FREE_SUBNETS:
        return Finding("loopback subnets", False, "none free", "gameday clean")
    probe = f"127.{free[0]}.0.1"
    try:
        with socket.socket() as s:
            s.bind((probe, 0))
    except OSError as exc:
        fix = "a Linux loopback (127.0.0.0/8 on lo); on other systems add the addresses"
        return Finding("loopback subnets", False, f"cannot bind {probe}: {exc.strerror}", fix)
    return Finding(
        "loopback subnets", True, f"{len(free)} of {LAST - FIRST + 1} free (127.X.0.0/16)"
    )


def check_ports() -> Finding:
    """The mesh's proxy ports must stay out of the kernel's ephemeral range; 8089 (Locust UI)."""
    from chaos.backends.base import FIRST_PROXY_PORT

    notes = []
    ok = True
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    last_proxy = FIRST_PROXY_PORT + 999
    if low <= last_proxy and high >= FIRST_PROXY_PORT:
        ok = False
        notes.append(f"ephemeral ports {low}-{high} overlap the mesh's {FIRST_PROXY_PORT}+")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8089))
        except OSError:
            notes.append("127.0.0.1:8089 (Locust web UI) is busy: use gameday load --web-port")
    found = "; ".join(notes) or f"mesh {FIRST_PROXY_PORT}+ clear of ephemeral {low}-{high}"
    fix = "" if ok else "sysctl -w net.ipv4.ip_local_port_range='32768 60999'"
    return Finding("ports", ok, found, fix)


def check_disk() -> Finding:
    here = Path.cwd()
    free = shutil.disk_usage(here).free
    ok = free >= MIN_RUN_DISK
    found = f"{free / (1 << 30):.1f} GiB free in {here} (runs/)"
    if free < K8S_DISK:
        found += f"; the k8s toolchain build needs {K8S_DISK >> 30} GiB"
    return Finding("disk", ok, found, "" if ok else "free space, or run from another directory")


def run_checks() -> list[Finding]:
    findings = [check_python(), check_assets(), check_toxiproxy()]
    findings.append(check_go(findings[-1].ok))
    checks: list[Callable[[], Finding]] = [
        check_subnets,
        check_ports,
        check_disk,
        check_fuse,
        check_docker,
        check_k8s,
    ]
    for check in checks:
        try:
            findings.append(check())
        except Exception as exc:  # a broken check is a finding, not a crash
            findings.append(Finding(check.__name__.removeprefix("check_"), False, repr(exc)))
    return findings


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.required and not f.ok for f in findings) else 0


def print_findings(findings: list[Finding], console: Console) -> None:
    table = Table(title="gameday doctor", caption="optional: only the docker / k8s backends")
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("found", overflow="fold", ratio=3)
    table.add_column("fix", overflow="fold", ratio=2)
    for f in findings:
        if f.ok:
            mark = "[green]ok[/green]"
        else:
            mark = "[red]MISSING[/red]" if f.required else "[yellow]optional[/yellow]"
        table.add_row(mark, f.name, f.found, f"[cyan]{f.fix}[/cyan]" if f.fix and not f.ok else "")
    console.print(table)
    missing = [f for f in findings if f.required and not f.ok]
    if missing:
        console.print(f"[red]{len(missing)} required missing:[/red] run the fix column's commands")
    else:
        console.print("[green]ready for game days[/green] (try: gameday demo)")


def _version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"version unknown ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "version unknown"


def _first_clause(text: str) -> str:
    return text.split(";")[0]
