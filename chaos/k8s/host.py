"""What the local Kubernetes changes on the host, and how each change is undone.

Cgroups (v1 hierarchies, one subtree per node), mounts left by containerd and the kubelet,
network links (a bridge per node, a dummy interface for cluster DNS), iptables rules (ours, the
kubelet's and kube-proxy's), and the sysctls the kubelet rewrites. Every helper here is
idempotent so teardown can run again after a crash or a half-finished start.

    cgroup_dirs("gameday-k8s/az-a-r1")          # the node's directory in every hierarchy
    kill_cgroup_tree("gameday-k8s/az-a-r1")     # freeze, SIGKILL every process, thaw
    unmount_under(Path("/run/gameday-k8s"))      # deepest first
    sweep_iptables()                             # KUBE-* chains and GAMEDAY-K8S, v4 and v6
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Sysctls the kubelet (setupKernelTunables) and kube-proxy may change: saved by `up`, put back by
# `down`. ip_forward is set by us (pods on different bridges talk through the host).
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
OUR_CHAIN = "GAMEDAY-K8S"


class HostError(RuntimeError):
    """A host command failed; the message says which and why."""


def run(argv: list[str], check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(
        argv,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise HostError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# --- sysctls ---------------------------------------------------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def write_sysctls(values: dict[str, str]) -> list[str]:
    """Write each value back; returns the names that could not be restored."""
    failed = []
    for name, value in values.items():
        path = _sysctl_path(name)
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError:
            failed.append(name)
    return failed


# --- cgroups (v1 hierarchies; the unified one too on hybrid hosts) -----------------------------


def hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 controllers, named ones, and cgroup2)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] in ("cgroup", "cgroup2"):
            found.append(Path(fields[1]))
    return found


def cgroup_dirs(relative: str) -> list[Path]:
    return [h / relative for h in hierarchies()]


def make_cgroup(relative: str) -> list[Path]:
    """Create ``relative`` (and its parents) in every hierarchy; cpuset values are copied down."""
    made = []
    for hier in hierarchies():
        current = hier
        for part in Path(relative).parts:
            parent, current = current, current / part
            if not current.is_dir():
                current.mkdir()
            if (hier / "cpuset.cpus").exists():
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    mine = current / knob
                    if not mine.read_text().strip():
                        mine.write_text((parent / knob).read_text().strip())
        made.append(current)
    return made


def weigh_cgroup(relative: str, busy_processes: int) -> None:
    """Give ``relative`` the CPU weight of ``busy_processes`` busy processes of the root group
    (cgroup v1 ``cpu.shares``, 1024 each; cgroup2 ``cpu.weight``, 100 each), in every hierarchy
    that has the knob. Create it first (``make_cgroup``)."""
    for top in cgroup_dirs(relative):
        if (top / "cpu.shares").exists():
            (top / "cpu.shares").write_text(str(1024 * busy_processes))
        elif (top / "cpu.weight").exists():
            (top / "cpu.weight").write_text(str(min(10000, 100 * busy_processes)))


LOAD_NICE = -12
"""The load generator's CPU weight beside the local Kubernetes, as a nice value: 15,428 in CFS's
table, a little above the nodes' cgroup (``weigh_cgroup``: 2 x 1,024 per node, 14,336 for 7)."""


def favour_load_generator(pid: int, nice: int = LOAD_NICE) -> bool:
    """Give process ``pid`` (the game day's Locust, the leader of a session of its own) and
    the processes of its session the CPU weight of ``nice``.

    The local Kubernetes' nodes share this machine's cores with the load generator, and their
    cgroup weighs as 14 busy processes. While az-c's nodes boot (4 Python processes importing,
    replaying and catching up) that cgroup wants every core: Locust, at the weight of one
    process, then waited on the run queue 3.5 s of every 5 s, froze for a second, sent its
    requests late, and the steady window failed at 97.9-98.7% (3 of 3 runs, session 13) while
    the cluster answered on time. On machines of their own, a load generator never waits for
    its target's boot. A weight only orders who runs when both want to: it reserves nothing,
    so the cluster still gets every cycle the load does not use.

    The weight that counts is the session's autogroup's (``/proc/<pid>/autogroup``): with
    sched_autogroup_enabled, the scheduler weighs each session of the root cgroup as one, and
    a process's own nice only orders it within its session (a nice of -12 on every thread of
    the run changed nothing). The nice of ``pid`` itself is set too, for kernels without
    autogroups. False when not permitted (not root)."""
    try:
        with contextlib.suppress(FileNotFoundError):  # a kernel without autogroups
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (PermissionError, ProcessLookupError):
        return False
    return True


def cgroup_pids(relative: str) -> set[int]:
    """Every process in ``relative`` or below, in any hierarchy."""
    pids: set[int] = set()
    for top in cgroup_dirs(relative):
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def kill_cgroup_tree(relative: str, timeout: float = 15.0) -> int:
    """SIGKILL every process under ``relative``: frozen first so none can fork away. A power cut.

    Returns how many processes were killed; raises HostError if some survive ``timeout``.
    """
    freezer = CGROUP_ROOT / "freezer" / relative / "freezer.state"
    frozen = False
    if freezer.exists():
        with contextlib.suppress(OSError):
            freezer.write_text("FROZEN")
            frozen = True
    killed = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            pids = cgroup_pids(relative)
            if not pids:
                return killed
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            if frozen:  # a frozen task dies only once thawed
                with contextlib.suppress(OSError):
                    freezer.write_text("THAWED")
                frozen = False
            if time.monotonic() > deadline:
                raise HostError(f"processes in cgroup {relative} survive SIGKILL: {sorted(pids)}")
            time.sleep(0.05)
    finally:
        if frozen:
            with contextlib.suppress(OSError):
                freezer.write_text("THAWED")


def remove_cgroup_tree(relative: str) -> list[Path]:
    """rmdir ``relative`` and everything below it in every hierarchy; returns what remains."""
    left = []
    for top in cgroup_dirs(relative):
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            for _ in range(50):  # a cgroup whose last task just died can be busy for a moment
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        if top.exists():
            left.append(top)
    return left


# --- mounts ----------------------------------------------------------------------------------


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below any of ``roots`` (resolved), deepest first."""
    prefixes = [str(r.resolve()) for r in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_under(*roots: Path) -> list[str]:
    """Lazily unmount everything below ``roots``; returns mount points that remain."""
    for _ in range(5):
        points = mounts_under(*roots)
        if not points:
            return []
        for point in points:
            run(["umount", "-l", point], check=False)
    return mounts_under(*roots)


def _unescape(field: str) -> str:
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")).replace(
        "\\134", "\\"
    )


# --- network links ---------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def ensure_bridge(name: str, address: str) -> None:
    """A bridge ``name`` with ``address`` (CIDR) on it, up."""
    _ensure_link(name, "bridge", address)


def ensure_dummy(name: str, address: str) -> None:
    """A dummy interface ``name`` with ``address`` (CIDR) on it, up."""
    _ensure_link(name, "dummy", address)


def _ensure_link(name: str, kind: str, address: str) -> None:
    if not link_exists(name):
        run(["ip", "link", "add", "name", name, "type", kind])
    if address.split("/")[0] not in run(["ip", "-o", "-4", "addr", "show", "dev", name]):
        run(["ip", "addr", "add", address, "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", name], check=False)


def links_with_prefix(prefix: str) -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))


# --- iptables --------------------------------------------------------------------------------


def allow_forwarding(cidr: str) -> None:
    """Accept forwarded traffic to and from ``cidr`` ahead of anything else in FORWARD.

    Docker sets the FORWARD policy to DROP; pods on different node bridges talk through the host.
    """
    if not succeeds(["iptables", "-w", "-n", "-L", OUR_CHAIN]):
        run(["iptables", "-w", "-N", OUR_CHAIN])
    run(["iptables", "-w", "-F", OUR_CHAIN])
    run(["iptables", "-w", "-A", OUR_CHAIN, "-s", cidr, "-j", "ACCEPT"])
    run(["iptables", "-w", "-A", OUR_CHAIN, "-d", cidr, "-j", "ACCEPT"])
    if not succeeds(["iptables", "-w", "-C", "FORWARD", "-j", OUR_CHAIN]):
        run(["iptables", "-w", "-I", "FORWARD", "1", "-j", OUR_CHAIN])


def succeeds(argv: list[str], timeout: float | None = None) -> bool:
    """``argv`` exits 0 (within ``timeout`` s, if given)."""
    try:
        return (
            subprocess.run(argv, capture_output=True, timeout=timeout, check=False).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _ours(chain: str) -> bool:
    return chain.startswith("KUBE-") or chain == OUR_CHAIN


def sweep_iptables() -> list[str]:
    """Remove every KUBE-* chain (kubelet, kube-proxy) and ours, with the rules that jump to them.

    Returns the chains that could not be removed. Only one local Kubernetes runs per machine
    (see localkube.py), so any KUBE-* chain on this host is one of ours.
    """
    left = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            dump = run([f"{tool}-save", "-t", table], check=False)
            chains = our_chains(dump)
            if not chains:
                continue
            for line in dump.splitlines():
                if not line.startswith("-A "):
                    continue
                args = shlex.split(line)
                chain, jump = args[1], _jump_target(args)
                if not _ours(chain) and jump is not None and _ours(jump):
                    run([tool, "-w", "-t", table, "-D", *args[1:]], check=False)
            for chain in chains:
                run([tool, "-w", "-t", table, "-F", chain], check=False)
            for chain in chains:
                run([tool, "-w", "-t", table, "-X", chain], check=False)
            after = run([f"{tool}-save", "-t", table], check=False)
            left += [f"{tool} {table} {c}" for c in our_chains(after)]
    return left


def our_chains(dump: str) -> list[str]:
    """The chains of an ``iptables-save`` dump (``:NAME POLICY [counters]`` lines) that are
    ours or Kubernetes': KUBE-* and GAMEDAY-K8S."""
    names = [ln[1:].split()[0] for ln in dump.splitlines() if ln.startswith(":")]
    return [name for name in names if _ours(name)]


def _jump_target(args: list[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in args:
            i = args.index(flag)
            if i + 1 < len(args):
                return args[i + 1]
    return None


def nft_tables() -> list[str]:
    """nftables tables kube-proxy or the kubelet may have made (kube-proxy, kubelet-*)."""
    out = run(["nft", "list", "tables"], check=False)
    return [ln for ln in out.splitlines() if "kube" in ln]


def delete_nft_tables() -> None:
    for line in nft_tables():
        parts = line.split()  # "table ip kube-proxy"
        if len(parts) == 3:
            run(["nft", "delete", "table", parts[1], parts[2]], check=False)
