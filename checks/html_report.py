"""The self-contained HTML report: inline SVG plots and tables, no scripts or network resources.

    >>> Path("report.html").write_text(render_html(verdict))   # doctest: +SKIP

Plots (fault windows shaded and labelled on each): throughput, latency percentiles and
availability per second from the client history, and canary availability per AZ. Tables: each
check's verdict with its details, availability per fault window, alarms, canaries per AZ and
router, and the fault timeline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from checks.result import RunVerdict, compact, drift_text, json_safe

WIDTH, HEIGHT = 960, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 30, 28
PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]
FAULT_FILL = "#f59e0b"

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #111; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; }
td { vertical-align: top; }
th { background: #f9fafb; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 4px; color: #fff; }
.badge { font-weight: 600; }
.pass { background: #16a34a; } .fail { background: #dc2626; } .unknown { background: #ca8a04; }
.na { background: #6b7280; }
.aborted { background: #9333ea; }
pre { background: #f9fafb; padding: 8px; overflow-x: auto; font-size: 12px; max-height: 480px; }
svg { display: block; margin: 8px 0 16px; } .muted { color: #6b7280; }
svg text { font: 11px system-ui, sans-serif; fill: #374151; }
"""


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    points: Sequence[tuple[float, float | None]]
    color: str
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Raw:
    """Markup to put in a table cell as is (everything else is escaped)."""

    html: str


@dataclass(frozen=True, slots=True)
class Span:
    label: str
    start: float
    end: float


def nice_step(extent: float, ticks: int = 8) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving at most `ticks` ticks."""
    if extent <= 0:
        return 1.0
    raw = extent / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def svg_chart(
    title: str,
    lines: Sequence[Line],
    spans: Sequence[Span],
    x_range: tuple[float, float],
    *,
    y_max: float | None = None,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    threshold: tuple[str, float] | None = None,
) -> str:
    """A line chart as an inline <svg>: gaps where a point is None, fault spans shaded."""
    x0, x1 = x_range
    x1 = max(x1, x0 + 1.0)
    values = [y for line in lines for _, y in line.points if y is not None]
    top = y_max if y_max is not None else max([*values, threshold[1] if threshold else 0.0, 1e-9])
    top = top * (1.0 if y_max is not None else 1.08)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (min(max(x, x0), x1) - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - min(max(y, 0.0), top) / top * plot_h

    out = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img"'
        f' aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="16" style="font-weight:600;font-size:13px">{escape(title)}</text>',
    ]
    for i, span in enumerate(spans):
        a, b = sx(span.start), sx(span.end)
        out.append(
            f'<rect x="{a:.1f}" y="{TOP}" width="{max(b - a, 1.5):.1f}" height="{plot_h}"'
            f' fill="{FAULT_FILL}" fill-opacity="0.18"><title>{escape(span.label)}'
            f" [{span.start:.1f}s - {span.end:.1f}s]</title></rect>"
        )
        out.append(
            f'<text x="{a + 3:.1f}" y="{TOP + 12 + 12 * (i % 3)}" style="fill:#92400e">'
            f"{escape(span.label)}</text>"
        )
    step = nice_step(top, 4)
    tick = 0.0
    while tick <= top + 1e-9:
        y = sy(tick)
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{y_format(tick)}</text>'
        )
        tick += step
    step = nice_step(x1 - x0, 10)
    tick = math.ceil(x0 / step) * step
    while tick <= x1 + 1e-9:
        x = sx(tick)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}"'
            ' stroke="#9ca3af"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{tick:g}s</text>')
        tick += step
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none"'
        ' stroke="#9ca3af"/>'
    )
    if threshold:
        y = sy(threshold[1])
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
            ' stroke="#dc2626" stroke-dasharray="6 4"/>'
        )
        out.append(
            f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end"'
            f' style="fill:#dc2626">{escape(threshold[0])}</text>'
        )
    for line in lines:
        path = _path(line.points, sx, sy)
        if path:
            dash = ' stroke-dasharray="4 3"' if line.dashed else ""
            out.append(
                f'<path d="{path}" fill="none" stroke="{line.color}" stroke-width="1.6"{dash}>'
                f"<title>{escape(line.name)}</title></path>"
            )
    legend_x = WIDTH - RIGHT
    for line in reversed(lines):
        legend_x -= 14 + 7 * len(line.name) + 12
        out.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{line.color}"/>')
        out.append(f'<text x="{legend_x + 14}" y="17">{escape(line.name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _path(
    points: Sequence[tuple[float, float | None]],
    sx: Callable[[float], float],
    sy: Callable[[float], float],
) -> str:
    parts: list[str] = []
    pen_down = False
    for x, y in points:
        if y is None or not math.isfinite(y):
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{sx(x):.1f},{sy(y):.1f}")
        pen_down = True
    return " ".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_cell(v)}</td>' if i in numeric else f"<td>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, Raw):
        return value.html
    return escape(str(value))


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value:.2%}"


def _badge(status: str) -> str:
    css = "na" if status == "n/a" else status  # "n/a": a check with nothing to judge
    return f'<span class="badge {escape(css)}">{escape(status.upper())}</span>'


def fault_spans(verdict: RunVerdict) -> list[Span]:
    """Fault windows from the availability details, else straight from the events."""
    avail = verdict.result("availability")
    windows = avail.details.get("windows") if avail else None
    if windows:
        return [
            Span(str(w["label"]), float(w["start"]), float(w["end"]))
            for w in windows
            if w.get("start") is not None
        ]
    starts: dict[str, tuple[str, float]] = {}
    spans = []
    for e in verdict.events:
        fid = str(e.get("fault_id"))
        if e.get("event") == "fault_start":
            label = f"{e.get('fault', '')} {','.join(map(str, e.get('targets') or []))}"
            starts[fid] = (label.strip(), float(e.get("time", 0.0)))
        elif e.get("event") == "fault_end" and fid in starts:
            label, start = starts.pop(fid)
            spans.append(Span(label, start, float(e.get("time", start))))
    return spans


def _charts(verdict: RunVerdict, spans: list[Span]) -> str:
    avail = verdict.result("availability")
    series = (avail.details.get("series") if avail else None) or []
    if not series:
        return '<p class="muted">No per-second series (availability check has no data).</p>'
    span = (avail.details.get("span") if avail else None) or [series[0]["t"], series[-1]["t"] + 1]
    x_range = (float(span[0]), float(max(span[1], series[-1]["t"] + 1)))
    mid = [s["t"] + 0.5 for s in series]
    slos = (avail.details.get("slos") if avail else None) or {}
    slo = float(slos.get("fault_availability", slos.get("availability", 0.99)))
    p99_slo = (avail.details.get("slos") or {}).get("p99_ms") if avail else None
    charts = [
        svg_chart(
            "Throughput: ops intended vs served per second",
            [
                Line(
                    "intended",
                    list(zip(mid, [s.get("intended", s["requests"]) for s in series], strict=True)),
                    PALETTE[6],
                    dashed=True,
                ),
                Line(
                    "sent",
                    list(zip(mid, [s["requests"] for s in series], strict=True)),
                    PALETTE[0],
                ),
                Line(
                    "served",
                    list(zip(mid, [s.get("delivered", s["success"]) for s in series], strict=True)),
                    PALETTE[1],
                ),
                Line(
                    "unavailable",
                    list(
                        zip(
                            mid,
                            [s.get("intended", s["requests"]) - s["success"] for s in series],
                            strict=True,
                        )
                    ),
                    PALETTE[2],
                ),
            ],
            spans,
            x_range,
        ),
        svg_chart(
            "Latency of served ops from their intended start (ms)",
            [
                Line(name, list(zip(mid, [s[f"{name}_ms"] for s in series], strict=True)), color)
                for name, color in (("p50", PALETTE[0]), ("p95", PALETTE[4]), ("p99", PALETTE[2]))
            ],
            spans,
            x_range,
            threshold=(f"p99 SLO {p99_slo:g} ms", float(p99_slo)) if p99_slo else None,
        ),
        svg_chart(
            "Availability per second (available / intended)",
            [
                Line(
                    "availability",
                    list(zip(mid, [s["ratio"] for s in series], strict=True)),
                    PALETTE[1],
                )
            ],
            spans,
            x_range,
            y_max=1.0,
            y_format=lambda v: f"{v:.0%}",
            threshold=(f"fault SLO {slo:.2%}", slo),
        ),
    ]
    azs = (avail.details.get("canaries") if avail else None) or {}
    if azs:
        charts.append(
            svg_chart(
                "Canary availability per AZ",
                [
                    Line(
                        az,
                        [(t + 0.5, r) for t, r in data.get("series", [])],
                        PALETTE[i % len(PALETTE)],
                    )
                    for i, (az, data) in enumerate(sorted(azs.items()))
                ],
                spans,
                x_range,
                y_max=1.0,
                y_format=lambda v: f"{v:.0%}",
            )
        )
    return "\n".join(charts)


def _checks_section(verdict: RunVerdict) -> str:
    rows = [[r.name, Raw(_badge(r.status)), r.summary, r.seconds] for r in verdict.results]
    parts = [_table(["check", "verdict", "summary", "seconds"], rows, {3})]
    for r in verdict.results:
        text = json.dumps(json_safe(compact(r.details)), indent=2)
        opened = " open" if r.status not in ("pass", "n/a") else ""
        parts.append(
            f"<details{opened}><summary>{escape(r.name)}:"
            f" {escape(r.status)}</summary><pre>{escape(text)}</pre></details>"
        )
    return "\n".join(parts)


def _availability_tables(verdict: RunVerdict) -> str:
    avail = verdict.result("availability")
    if not avail or not avail.details.get("windows"):
        return '<p class="muted">No availability data.</p>'
    windows = avail.details["windows"]
    rows = [
        [
            w["label"],
            w.get("start"),
            w.get("end"),
            w.get("intended", w["requests"]),
            w["requests"],
            w.get("served"),
            _pct(w["ratio"]),
            _pct(w.get("served_ratio")),
            _pct(w.get("throughput_ratio")),
            _pct(w.get("client_time")),
            w["p50_ms"],
            w["p99_ms"],
            w.get("recovery_after_start"),
            w.get("recovery_after_end"),
            w.get("alarm_delay"),
            w.get("meets_slo"),
        ]
        for w in windows
    ]
    note = avail.details.get("note")
    html = [f'<p class="muted">{escape(str(note))}.</p>'] if note else []
    html.append(
        _table(
            [
                "window",
                "start s",
                "end s",
                "intended",
                "sent",
                "served",
                "available",
                "served / intended",
                "throughput vs steady",
                "client-time available",
                "p50 ms",
                "p99 ms",
                "recovery after start s",
                "recovery after end s",
                "alarm after s",
                "meets SLO",
            ],
            rows,
            set(range(1, 15)),
        )
    )
    alarms = avail.details.get("alarms") or []
    html.append("<h3>Alarms</h3>")
    if alarms:
        html.append(
            _table(
                ["start s", "end s", "peak error rate", "faults"],
                [
                    [a["start"], a["end"], _pct(a["peak_error_rate"]), ", ".join(a["faults"])]
                    for a in alarms
                ],
                {0, 1, 2},
            )
        )
    else:
        html.append('<p class="muted">No alarm fired.</p>')
    azs = avail.details.get("canaries") or {}
    html.append("<h3>Canaries per AZ</h3>")
    if azs:
        routers = sorted({r for data in azs.values() for r in data.get("routers", {})})
        fault_ids = [w["id"] for w in windows if w["id"] != "steady"]
        rows = [
            [az, data["requests"], _pct(data["ratio"])]
            + [_pct(data.get("windows", {}).get(f)) for f in fault_ids]
            + [_pct(data.get("routers", {}).get(r)) for r in routers]
            for az, data in sorted(azs.items())
        ]
        headers = ["AZ", "probes", "available"] + [f"during {f}" for f in fault_ids]
        html.append(
            _table(
                headers + [f"to {r}" for r in routers],
                rows,
                set(range(1, len(headers) + len(routers))),
            )
        )
    else:
        html.append('<p class="muted">No canary.jsonl in the run.</p>')
    return "\n".join(html)


def _timeline(verdict: RunVerdict) -> str:
    if not verdict.events:
        return '<p class="muted">No events.jsonl in the run.</p>'
    rows = [
        [
            e.get("time"),
            e.get("planned"),
            drift_text(e) or None,
            e.get("event"),
            e.get("fault_id"),
            e.get("fault"),
            ", ".join(map(str, e.get("targets") or [])),
            json.dumps(e["detail"]) if e.get("detail") else None,
        ]
        for e in verdict.events
    ]
    headers = ["time s", "planned s", "drift s", "event", "fault id", "fault", "targets", "detail"]
    return _table(headers, rows, {0, 1, 2})


def render_html(verdict: RunVerdict) -> str:
    """The whole report page."""
    spans = fault_spans(verdict)
    title = f"gameday report: {verdict.scenario}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)} ({escape(verdict.status)})</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{escape(title)} {_badge(verdict.status)}</h1>",
            f'<p class="muted">Run directory: {escape(str(verdict.run_dir))}</p>',
            (
                f'<p class="abort"><b>Aborted:</b> {escape(verdict.aborted)}. The plan did not'
                " fully execute, so this run cannot pass.</p>"
                if verdict.aborted
                else ""
            ),
            "<h2>Checks</h2>",
            _checks_section(verdict),
            "<h2>Over time</h2>",
            _charts(verdict, spans),
            "<h2>Availability per fault window</h2>",
            _availability_tables(verdict),
            "<h2>Fault timeline</h2>",
            _timeline(verdict),
            "</body></html>",
        ]
    )
