"""`gameday campaign SCENARIO --runs N`: the same game day N times, one derived seed each.

One game day is an anecdote; a campaign is a distribution. Each run is a whole ``gameday run``
in a process of its own (its own cluster, watchdog and teardown), at most ``parallel`` at once,
with the seed ``derive_seeds(seed, runs)[i]``, so the campaign is reproducible and any one run can
be run again alone. A live progress bar counts passes, failures and aborts; at the end a summary
says how many passed, sums the safety findings (lost acknowledged writes, linearizability
violations, divergent groups, runs left unhealed), gives the distributions of availability per
fault kind and of recovery times, names the slowest and the worst runs, and lists each failing
run with its ``gameday replay`` command. ``index.html`` links every run's report.

    code = asyncio.run(run_campaign(Path("scenarios/power-loss-campaign.yaml"),
                                    CampaignOptions(runs=100, seed=1, parallel=2), console))
    # 0 only when every run passed; 1 a run failed; 3 a run aborted; 2 a run could not start;
    # 130 / 143 interrupted (the runs under way were stopped in order: healed, torn down)

SIGINT or SIGTERM stops the campaign: no new run starts, each run under way gets one SIGTERM
(it heals, reports and tears down), and the summary covers what finished; an interrupted
campaign is never a pass. Each run also gets SIGTERM if the campaign process dies (even by
SIGKILL), through the kernel's parent-death signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import html
import json
import os
import random
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

EXIT_PASS, EXIT_FAIL, EXIT_INFRA, EXIT_ABORTED = 0, 1, 2, 3
STOP_GRACE = 240.0  # how long a run stopped by SIGTERM may take to heal, report and tear down
PR_SET_PDEATHSIG = 1
VERDICTS = {0: "pass", 1: "fail", 2: "infra", 3: "aborted"}


@dataclass(frozen=True)
class CampaignOptions:
    runs: int
    seed: int = 1
    parallel: int = 1
    backend: str = "local"
    out: Path = Path("runs")
    keep_passing: bool = False  # keep passing runs' cluster logs and raw history too


@dataclass
class RunResult:
    """One run of the campaign, as its process and its run directory tell it."""

    index: int
    seed: int
    code: int | None = None  # the exit code of `gameday run`; None: never started
    verdict: str = "not run"  # pass, fail, aborted, infra, interrupted, not run
    seconds: float = 0.0
    run_dir: str | None = None
    reason: str = ""
    checks: dict[str, Any] = field(default_factory=dict)  # check name -> True/False/"unknown"
    lost_writes: int = 0
    linearizability_violations: int = 0
    divergent_groups: int = 0  # replicas that applied the same index to different data
    lagging_groups: int = 0  # replicas still behind (or silent) when the digests were taken
    unhealed: list[str] = field(default_factory=list)  # what the run left behind
    windows: list[dict[str, Any]] = field(default_factory=list)  # label, fault, ratio, recovery

    @property
    def worst_availability(self) -> float | None:
        ratios = [w["ratio"] for w in self.windows if w.get("ratio") is not None]
        return min(ratios) if ratios else None

    def replay_command(self) -> str:
        return f"gameday replay {self.run_dir}" if self.run_dir else ""


def derive_seeds(seed: int, runs: int) -> list[int]:
    """The runs' seeds, all distinct, from the campaign's one seed (the same list every time)."""
    rng = random.Random(f"gameday-campaign/{seed}")
    seeds: list[int] = []
    while len(seeds) < runs:
        s = rng.randrange(1, 2**31)
        if s not in seeds:
            seeds.append(s)
    return seeds


def _die_with_parent() -> None:
    """In the child: SIGTERM when the campaign process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Campaign:
    def __init__(self, scenario: Path, options: CampaignOptions, directory: Path) -> None:
        self.scenario = scenario
        self.options = options
        self.directory = directory
        seeds = derive_seeds(options.seed, options.runs)
        self.results = [RunResult(i + 1, s) for i, s in enumerate(seeds)]
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.stopping: int | None = None  # the signal that stopped the campaign

    def stop(self, sig: int) -> None:
        """No new run starts; each run under way gets one SIGTERM (an orderly stop)."""
        if self.stopping is None:
            self.stopping = sig
            self._signal_children(signal.SIGTERM)
            # A run that cannot stop in order is killed; its watchdog then heals and tears down.
            asyncio.get_running_loop().call_later(STOP_GRACE, self._signal_children, signal.SIGKILL)

    def _signal_children(self, sig: int) -> None:
        for proc in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    async def run_one(self, result: RunResult) -> None:
        out = self.directory / "runs" / f"{result.index:03d}-seed-{result.seed}"
        out.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "chaos.cli_entry", "run", str(self.scenario)]
        argv += ["--seed", str(result.seed), "--out", str(out), "--backend", self.options.backend]
        started = time.monotonic()
        with (out / "gameday.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches the campaign, which decides
                preexec_fn=_die_with_parent,
            )
            self.children[result.index] = proc
            try:
                code = await proc.wait()
            finally:
                self.children.pop(result.index, None)
        result.code, result.seconds = code, round(time.monotonic() - started, 1)
        runs = sorted(p for p in out.iterdir() if p.is_dir())
        result.run_dir = str(runs[-1]) if runs else None
        read_result(result, code)
        result.unhealed = leftovers_of(runs[-1]) if runs else []
        if result.verdict == "pass" and not self.options.keep_passing and runs:
            prune(runs[-1])

    async def run(self, progress: Progress) -> None:
        task = progress.add_task("campaign", total=len(self.results), counts="")
        pending = list(self.results)
        running: set[asyncio.Task[None]] = set()
        while (pending or running) and len(running) < 10_000:
            while pending and self.stopping is None and len(running) < self.options.parallel:
                running.add(asyncio.create_task(self.run_one(pending.pop(0))))
            if not running:
                break
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
            progress.update(task, completed=self._finished(), counts=self._counts_text())
        for result in pending:
            result.verdict = "not run"

    def _finished(self) -> int:
        return sum(1 for r in self.results if r.code is not None)

    def _counts_text(self) -> str:
        counts = verdict_counts(self.results)
        return "  ".join(f"{k} {v}" for k, v in counts.items() if v and k != "not run")


def read_result(result: RunResult, code: int) -> None:
    """Fill ``result`` from its run directory's checks.json (and the exit code)."""
    verdict = VERDICTS.get(code, "interrupted")
    result.verdict = verdict
    if result.run_dir is None:
        result.reason = "no run directory (see gameday.log)"
        return
    try:
        body = json.loads((Path(result.run_dir) / "checks.json").read_text())
    except (OSError, ValueError):
        result.reason = result.reason or "no checks.json (see gameday.log)"
        return
    result.reason = body.get("aborted") or ""
    for check in body.get("checks", []):
        name, details = check["name"], check.get("details") or {}
        result.checks[name] = check.get("valid")
        if name == "durability":
            result.lost_writes = int(details.get("lost_write_count", 0))
            result.lost_writes += int(details.get("phantom_read_count", 0))
        elif name == "linearizability":
            result.linearizability_violations = int(details.get("invalid_key_count", 0))
        elif name == "convergence":
            groups = details.get("divergent_groups", [])
            result.divergent_groups = sum(1 for g in groups if g.get("diverged"))
            result.lagging_groups = len(groups) - result.divergent_groups
        elif name == "availability":
            for w in details.get("windows", []):
                result.windows.append(
                    {
                        "label": w.get("label"),
                        "fault": w.get("fault") or "steady",
                        "ratio": w.get("ratio"),
                        "recovery": w.get("recovery_after_end"),
                        "ended": w.get("ended"),
                    }
                )
        if check.get("valid") is False and not result.reason:
            result.reason = f"{name}: {check.get('summary', '')}"


def leftovers_of(run_dir: Path) -> list[str]:
    """What a finished run left behind (processes of its cluster, power-loss mounts, faults
    still recorded as active); whatever it is, it is cleaned up here and reported."""
    from chaos.backends.local import LocalCluster
    from chaos.backends.powerlayer import leftover_mounts
    from chaos.nemesis import recorded_faults

    found: list[str] = []
    data_dir = run_dir / "cluster"
    active = recorded_faults(data_dir)
    if active:
        found.append(f"faults still active: {', '.join(sorted(active))}")
    if (data_dir / "cluster.json").exists():
        try:
            cluster = LocalCluster.open(data_dir)
            alive = [p for p in [*cluster.process_ids(), "toxiproxy"] if cluster.procs.alive(p)]
        except (OSError, ValueError):
            alive, cluster = [], None
        if alive:
            found.append(f"processes still running: {', '.join(alive)}")
        if cluster is not None and (alive or leftover_mounts(data_dir)):
            cluster.down()
    mounts = leftover_mounts(data_dir)
    if mounts:
        found.append(f"mounts left: {', '.join(map(str, mounts))}")
    return found


def prune(run_dir: Path) -> None:
    """A passing run keeps its verdict, reports, timeline and history; not its cluster's logs
    and the per-user history parts (most of its size)."""
    shutil.rmtree(run_dir / "cluster", ignore_errors=True)
    shutil.rmtree(run_dir / "history", ignore_errors=True)


# --- the summary -------------------------------------------------------------------------------


def verdict_counts(results: Sequence[RunResult]) -> dict[str, int]:
    counts = dict.fromkeys(("pass", "fail", "aborted", "infra", "interrupted", "not run"), 0)
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    return counts


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """min, p10, median, p90, max of ``values`` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "min": ordered[0],
        "p10": q(0.1),
        "median": statistics.median(ordered),
        "p90": q(0.9),
        "max": ordered[-1],
    }


def summarize(results: Sequence[RunResult], wall_seconds: float) -> dict[str, Any]:
    finished = [r for r in results if r.code is not None]
    by_kind: dict[str, list[float]] = {}
    recoveries: list[float] = []
    never = 0
    for r in finished:
        for w in r.windows:
            if w["ratio"] is not None:
                by_kind.setdefault(w["fault"], []).append(w["ratio"])
            if w["fault"] != "steady":
                if w["recovery"] is None:
                    never += 1
                else:
                    recoveries.append(float(w["recovery"]))
    ranked = [r for r in finished if r.worst_availability is not None]
    return {
        "runs": len(results),
        "finished": len(finished),
        "counts": verdict_counts(results),
        "wall_seconds": round(wall_seconds, 1),
        "safety": {
            "lost_acknowledged_writes": sum(r.lost_writes for r in finished),
            "linearizability_violations": sum(r.linearizability_violations for r in finished),
            "divergent_groups": sum(r.divergent_groups for r in finished),
            "lagging_groups": sum(r.lagging_groups for r in finished),
            "runs_left_unhealed": sum(1 for r in finished if r.unhealed),
            "runs_with_unknown_checks": sum(
                1 for r in finished if any(v == "unknown" for v in r.checks.values())
            ),
        },
        "availability": {kind: spread(v) for kind, v in sorted(by_kind.items())},
        "recovery_after_end": {**(spread(recoveries) or {}), "never": never},
        "slowest": [r.index for r in sorted(finished, key=lambda r: -r.seconds)[:3]],
        "worst": [r.index for r in sorted(ranked, key=lambda r: r.worst_availability or 0)[:3]],
        "failing": [r.index for r in results if r.verdict not in ("pass", "not run")],
    }


def exit_code(summary: dict[str, Any], stopped_by: int | None) -> int:
    if stopped_by is not None:
        return 128 + stopped_by
    counts = summary["counts"]
    if counts["fail"]:
        return EXIT_FAIL
    if counts["aborted"] or counts["interrupted"]:
        return EXIT_ABORTED
    if counts["infra"] or counts["not run"]:
        return EXIT_INFRA
    return EXIT_PASS


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def print_summary(
    summary: dict[str, Any], results: Sequence[RunResult], console: Console, directory: Path
) -> None:
    counts, safety = summary["counts"], summary["safety"]
    head = Table(title=f"campaign: {summary['finished']} of {summary['runs']} runs finished")
    for name in ("pass", "fail", "aborted", "infra", "interrupted", "not run", "wall time"):
        head.add_column(name, justify="right")
    head.add_row(*(str(counts[k]) for k in list(counts)), f"{summary['wall_seconds']:.0f}s")
    console.print(head)
    safe = Table(title="safety, summed over the runs")
    names = ["lost acked writes", "linearizability violations", "divergent groups"]
    names += ["lagging groups", "runs left unhealed", "runs with an undecided check"]
    for name in names:
        safe.add_column(name, justify="right")
    safe.add_row(*(str(v) for v in safety.values()))
    console.print(safe)
    avail = Table(title="availability per window (ops served in time / intended), over the runs")
    for name in ("window", "n", "min", "p10", "median", "p90", "max"):
        avail.add_column(name, justify="right" if name != "window" else "left")
    for kind, s in summary["availability"].items():
        if s is not None:
            quantiles = (_pct(s[k]) for k in ("min", "p10", "median", "p90", "max"))
            avail.add_row(kind, str(s["n"]), *quantiles)
    console.print(avail)
    rec = summary["recovery_after_end"]
    if rec.get("n"):
        console.print(
            f"recovery after a fault ended: n={rec['n']} median {rec['median']:.1f}s, "
            f"p90 {rec['p90']:.1f}s, max {rec['max']:.1f}s; never recovered: {rec['never']}"
        )
    by_index = {r.index: r for r in results}
    for title, key in (("slowest runs", "slowest"), ("worst runs (lowest availability)", "worst")):
        line = ", ".join(
            f"#{i} seed {by_index[i].seed} ({by_index[i].seconds:.0f}s, worst window "
            f"{_pct(by_index[i].worst_availability)})"
            for i in summary[key]
        )
        console.print(f"{title}: {line or '-'}")
    for i in summary["failing"]:
        r = by_index[i]
        console.print(f"[red]{r.verdict}[/red] #{i} seed {r.seed}: {r.reason[:160]}")
        if r.run_dir:
            console.print(f"    {r.replay_command()}")
        for left in r.unhealed:
            console.print(f"    [magenta]left behind (now cleaned):[/magenta] {left}")
    console.print(f"index: {directory / 'index.html'}")


def write_index(
    directory: Path, scenario: Path, summary: dict[str, Any], results: Sequence[RunResult]
) -> None:
    """index.html: the summary and one row per run, linking its report."""
    colors = {"pass": "#2e7d32", "fail": "#c62828", "aborted": "#8e24aa"}
    rows = []
    for r in results:
        link = "-"
        if r.run_dir:
            rel = os.path.relpath(Path(r.run_dir) / "report.html", directory)
            link = f'<a href="{html.escape(rel)}">report</a>'
        color = colors.get(r.verdict, "#555")
        replay = html.escape(r.replay_command()) if r.verdict != "pass" else ""
        rows.append(
            f"<tr><td>{r.index}</td><td>{r.seed}</td>"
            f'<td style="color:{color};font-weight:bold">{r.verdict}</td>'
            f"<td>{r.seconds:.0f}</td><td>{r.lost_writes}</td>"
            f"<td>{r.linearizability_violations}</td><td>{r.divergent_groups}</td>"
            f"<td>{'; '.join(map(html.escape, r.unhealed)) or 'no'}</td>"
            f"<td>{_pct(r.worst_availability)}</td><td>{link}</td>"
            f"<td>{html.escape(r.reason[:200])}<br><code>{replay}</code></td></tr>"
        )
    avail = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{s['n']}</td>"
        + "".join(f"<td>{_pct(s[q])}</td>" for q in ("min", "p10", "median", "p90", "max"))
        + "</tr>"
        for k, s in summary["availability"].items()
        if s is not None
    )
    counts = ", ".join(f"{k}: {v}" for k, v in summary["counts"].items())
    safety = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary["safety"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>campaign {html.escape(scenario.stem)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:last-child{{text-align:left}}</style>
</head><body><h1>campaign: {html.escape(scenario.stem)}</h1>
<p>{summary["finished"]} of {summary["runs"]} runs finished in {summary["wall_seconds"]:.0f} s.
{html.escape(counts)}</p><p><b>Safety</b>: {html.escape(safety)}</p>
<h2>Availability per window</h2><table><tr><th>window</th><th>n</th><th>min</th><th>p10</th>
<th>median</th><th>p90</th><th>max</th></tr>{avail}</table>
<h2>Runs</h2><table><tr><th>#</th><th>seed</th><th>verdict</th><th>s</th><th>lost writes</th>
<th>lin. violations</th><th>divergent</th><th>left behind</th><th>worst window</th>
<th>report</th><th>why / replay</th></tr>{"".join(rows)}</table></body></html>
"""
    (directory / "index.html").write_text(page)


async def run_campaign(scenario: Path, options: CampaignOptions, console: Console) -> int:
    """Run the campaign; returns its exit code (0 only when every run passed)."""
    if options.runs < 1 or options.parallel < 1:
        raise ValueError("--runs and --parallel must be at least 1")
    from chaos.schedule import load_game_day

    name = load_game_day(scenario, options.seed).scenario.name  # a bad scenario fails here
    directory = options.out / f"{time.strftime('%Y%m%d-%H%M%S')}-campaign-{name}"
    directory.mkdir(parents=True, exist_ok=False)
    campaign = Campaign(scenario.resolve(), options, directory)
    console.print(
        f"[bold]campaign[/bold] {name}: {options.runs} runs from seed {options.seed}, "
        f"{options.parallel} at a time on {options.backend}; {directory}"
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, campaign.stop, sig)
    started = time.monotonic()
    try:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
        )
        with Progress(*columns, console=console) as progress:
            await campaign.run(progress)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if campaign.stopping is not None:
        console.print(f"[yellow]interrupted by {signal.Signals(campaign.stopping).name}[/yellow]")
    summary = summarize(campaign.results, time.monotonic() - started)
    summary["stopped_by"] = (
        None if campaign.stopping is None else signal.Signals(campaign.stopping).name
    )
    body = {"scenario": str(scenario), "options": {**asdict(options), "out": str(options.out)},
            "summary": summary, "runs": [asdict(r) for r in campaign.results]}  # fmt: skip
    (directory / "campaign.json").write_text(json.dumps(body, indent=1))
    write_index(directory, scenario, summary, campaign.results)
    print_summary(summary, campaign.results, console, directory)
    return exit_code(summary, campaign.stopping)
