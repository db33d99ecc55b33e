"""Run a scrub now on a whole cluster and show the result per partition (``gameday cluster
scrub``). Every storage node's admin endpoint (``POST /admin/scrub``, cluster/healing) scrubs the
groups it leads; one row per group. The terminal presentation lives here, on the chaos side:
the cluster only answers with JSON.

    rows = scrub_cluster({"sn-a1": "127.20.1.1:7180", ...}, partition="orders")
    console.print(render(rows))      # group, leader, index, verdict, replicas, reference
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.table import Table

from cluster import auth

VERDICT_STYLE = {
    "ok": "green",
    "repaired": "yellow",
    "incomplete": "red",  # a replica sent no report: nothing vouches for it
    "alarm": "red",
    "skipped": "dim",
}


def _scrub_node(admin: str, partition: str | None, timeout: float) -> list[dict[str, Any]]:
    query = "" if partition is None else "?" + urllib.parse.urlencode({"group": partition})
    request = urllib.request.Request(
        f"http://{admin}/admin/scrub{query}",
        method="POST",
        headers=auth.http_headers("POST", "/admin/scrub"),
    )
    try:
        with urllib.request.urlopen(request, data=b"", timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return []
    results: list[dict[str, Any]] = body.get("results", [])
    return results


def scrub_cluster(
    admins: Mapping[str, str], partition: str | None = None, timeout: float = 300.0
) -> list[dict[str, Any]]:
    """Scrub every group (or the groups of ``partition``: a group id or a table name) now.

    ``admins`` maps each storage node to its admin address (host:port). Nodes are asked in
    parallel; each scrubs the groups it leads. One outcome per group, sorted by group.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(admins))) as pool:
        answers = list(pool.map(lambda a: _scrub_node(a, partition, timeout), admins.values()))
    rows: dict[str, dict[str, Any]] = {}
    for results in answers:
        for outcome in results:
            if outcome.get("verdict") == "skipped" and outcome["group"] in rows:
                continue  # another node led it by then and scrubbed it
            rows[outcome["group"]] = outcome
    return [rows[g] for g in sorted(rows)]


def _replicas_text(outcome: Mapping[str, Any]) -> str:
    parts = []
    for node, r in sorted((outcome.get("replicas") or {}).items()):
        verdict = r.get("verdict", "?")
        mode = "" if r.get("mode") in (None, "full") else f" [{r['mode']}]"
        why = f": {r['why']}" if r.get("why") else ""
        colour = "green" if verdict == "ok" else "red" if verdict == "bad" else "yellow"
        parts.append(f"[{colour}]{node}{mode} {verdict}{why}[/{colour}]")
    return "\n".join(parts)


def render(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="scrub: replicas compared at one log index, and with the WAL archive")
    for column in ("partition", "leader", "index", "digest", "replicas", "reference", "verdict"):
        table.add_column(column)
    for row in rows:
        ref = row.get("reference") or {}
        matches = ref.get("matches")
        ref_text = ref.get("status", "-") + (
            "" if matches is None else (" [green]matches[/green]" if matches else " [red]differs")
        )
        verdict = str(row.get("verdict"))
        style = VERDICT_STYLE.get(verdict, "white")
        table.add_row(
            str(row["group"]),
            str(row.get("leader")),
            str(row.get("index", "-")),
            str(row.get("agreed") or "-")[:12],
            _replicas_text(row),
            ref_text,
            f"[{style}]{verdict}[/{style}]" + (f"\n{row['error']}" if row.get("error") else ""),
        )
    return table
