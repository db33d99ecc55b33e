"""Convergence: after heal, every replica of each partition group holds the same state.

Reads `digests.json`, `{group: {node: {"applied": int, "digest": str}}}`:

    >>> check_digests({"g1": {"n1": {"applied": 9, "digest": "ab"},
    ...                       "n2": {"applied": 9, "digest": "ab"}}}).valid
    True

A group converged when all its replicas report the same digest at the same applied index. A
replica at another applied index is lagging, one with another digest at the same index has
diverged: both are invalid, naming the group and the odd nodes out (those outside the largest
agreeing set). Replicas without a digest (log replicas hold no B-tree) are listed and left out; a
group with fewer than two comparable replicas, or a missing file, is unknown.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from checks.result import UNKNOWN, CheckResult, Validity, compose_validity
from checks.rundir import RunDir

NAME = "convergence"


def _parse(entry: Any) -> tuple[int | None, str | None]:
    if isinstance(entry, dict):
        applied = entry.get("applied")
        digest = entry.get("digest")
        return (
            int(applied) if isinstance(applied, int | float) else None,
            None if digest is None else str(digest),
        )
    if isinstance(entry, str):
        return None, entry
    return None, None


def check_group(group: str, nodes: dict[str, Any]) -> tuple[Validity, dict[str, Any]]:
    """(validity, evidence) for one partition group's replicas."""
    states: dict[tuple[int | None, str], list[str]] = defaultdict(list)
    no_digest = []
    for node, entry in sorted(nodes.items()):
        applied, digest = _parse(entry)
        if digest is None:
            no_digest.append(node)
        else:
            states[(applied, digest)].append(node)
    evidence: dict[str, Any] = {
        "group": group,
        "replicas": {
            node: {"applied": a, "digest": d} for (a, d), ns in states.items() for node in ns
        },
    }
    if no_digest:
        evidence["without_digest"] = no_digest
    compared = sum(len(ns) for ns in states.values())
    if len(states) == 1:
        if compared >= 2:
            return True, evidence
        evidence["problem"] = "fewer than two replicas with a digest to compare"
        return UNKNOWN, evidence
    (ref_applied, ref_digest), majority = max(
        states.items(), key=lambda kv: (len(kv[1]), kv[0][0] or -1, kv[0][1])
    )
    lagging: list[str] = []
    diverged: list[str] = []
    for (applied, digest), ns in states.items():
        if (applied, digest) == (ref_applied, ref_digest):
            continue
        (diverged if applied == ref_applied else lagging).extend(ns)
    evidence.update(
        reference={"applied": ref_applied, "digest": ref_digest, "nodes": majority},
        diverged=sorted(diverged),
        lagging=sorted(lagging),
    )
    problems = []
    if diverged:
        problems.append(f"{', '.join(sorted(diverged))} diverged at applied index {ref_applied}")
    if lagging:
        problems.append(f"{', '.join(sorted(lagging))} at another applied index than {ref_applied}")
    evidence["problem"] = "; ".join(problems)
    return False, evidence


def check_digests(digests: dict[str, Any]) -> CheckResult:
    """Compare the replicas of every group in a digests.json document."""
    results: list[tuple[Validity, dict[str, Any]]] = []
    for group, nodes in sorted(digests.items()):
        if not isinstance(nodes, dict):
            results.append((UNKNOWN, {"group": group, "problem": "expected node -> digest"}))
        else:
            results.append(check_group(group, nodes))
    bad = [ev for valid, ev in results if valid is False]
    unsure = [ev for valid, ev in results if valid == UNKNOWN]
    details: dict[str, Any] = {
        "groups": len(results),
        "converged": sum(1 for valid, _ in results if valid is True),
        "divergent_groups": bad,
        "unknown_groups": unsure,
    }
    validity = compose_validity([v for v, _ in results] + ([] if results else [UNKNOWN]))
    if bad:
        summary = f"{len(bad)} of {len(results)} groups not converged: " + "; ".join(
            f"{ev['group']}: {ev['problem']}" for ev in bad[:3]
        )
    elif unsure:
        summary = f"{len(unsure)} of {len(results)} groups could not be compared: " + "; ".join(
            f"{ev['group']}: {ev['problem']}" for ev in unsure[:3]
        )
    elif not results:
        summary = "digests.json lists no groups"
    else:
        summary = f"all {len(results)} groups converged"
    return CheckResult(NAME, validity, summary, details)


def check(run: RunDir) -> CheckResult:
    """The convergence check of a run directory's digests.json."""
    digests = run.digests
    if digests is None:
        return CheckResult(NAME, UNKNOWN, "no digests.json in the run directory")
    return check_digests(digests)
