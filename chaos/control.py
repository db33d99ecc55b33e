"""The game-day control service behind the Locust web UI's "Game day" tab.

`gameday load --web` runs it beside Locust: a small HTTP service on 127.0.0.1 (an ephemeral
port, every request carrying a per-session token) that shows the cluster (AZ / rack / process,
up / down / paused, the leader of every partition), the per-AZ canaries and the events
timeline, and injects and heals faults. Faults go through the same machinery as a game day: an
``Orchestrator`` whose run lasts as long as the session plans each fault on the live cluster,
checks it against the blast radius, injects and confirms it (evidence) through the nemesis and
heals it after its hold or when asked, under the dead-man's switch (its lease is watched by the
load's watchdog, which heals the cluster if this process stalls or dies). Everything lands in
``events.jsonl`` and ``canary.jsonl`` of the session directory, beside the load's history, so
``gameday check`` can judge the session afterwards.

Locust itself (a gevent process) only proxies the tab's requests here
(workloads/webui.py); no chaos code runs under gevent.

    control = GameDayControl(cluster, session_dir, run_start, BlastRadius(max_azs=1))
    control.start()                       # the service, the orchestrator and the canaries
    env = control.locust_env()            # GAMEDAY_CONTROL_URL / GAMEDAY_CONTROL_TOKEN
    ...
    control.stop()                        # heals every fault, stops the canaries
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from chaos.backends.base import DEFAULT_ACCESS_KEY, Backend
from chaos.deadman import Guard
from chaos.faults import BlastRadius, PlanError, describe_catalog, groups_from_status, make_fault
from chaos.faults.errors import UnknownFaultKind
from chaos.orchestrator import Orchestrator
from chaos.scenario import parse_duration
from chaos.schedule import TimedFault
from workloads.canary import run_canaries
from workloads.settings import CONTROL_TOKEN_ENV, CONTROL_URL_ENV, TOKEN_HEADER
from workloads.setup import ensure_table_async

CANARY_TABLE = "gameday-canary"
CANARY_RATE = 2.0  # probes per second per (AZ, router) pair
SESSION_LIMIT_S = 7 * 24 * 3600.0  # the orchestrator's run ends by itself after a week
DEFAULT_HOLD_S = 60.0
MAX_HOLD_S = 24 * 3600.0
REFRESH_S = 1.0  # how often the cluster's state is gathered
ANSWER_WAIT_S = 30.0  # an inject answers once the fault is in effect or refused, or after this
EVENTS_KEPT = 200


@dataclass
class ManualFault:
    """A fault injected from the tab, as the tab shows it."""

    fault_id: str
    kind: str
    params: dict[str, Any]
    hold_s: float
    state: str = "planning"  # planning | active | healing | healed | refused | failed
    description: str = ""
    targets: list[str] = field(default_factory=list)
    started: float | None = None
    ended: float | None = None
    evidence: Any = None
    reason: str | None = None


class CanaryBoard:
    """Per-second canary verdicts from ``canary.jsonl`` as it grows: by client AZ and router.

    One verdict per probe (its first attempt's), as chaos/run.py's monitor counts them; a
    conditional-check failure is an answer, so it counts as served.
    """

    def __init__(self, path: Path, router_az: dict[str, str], keep_s: int = 120) -> None:
        self.path = path
        self.router_az = router_az
        self.keep_s = keep_s
        self.offset = 0
        self.seconds: dict[int, dict[tuple[str, str], list[int]]] = {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                self.offset += len(raw)
                try:
                    op = json.loads(raw)
                except ValueError:
                    continue
                if op.get("type") == "invoke" or (op.get("attempt") or 1) > 1:
                    continue
                second = int(op.get("time", 0))
                cell = (str(op.get("az")), str(op.get("router")))
                counts = self.seconds.setdefault(second, {}).setdefault(cell, [0, 0])
                counts[1] += 1
                served = op["type"] == "ok" or op.get("error") == "ConditionalCheckFailedException"
                counts[0] += 1 if served else 0
        if self.seconds:
            newest = max(self.seconds)
            for second in [s for s in self.seconds if s < newest - self.keep_s]:
                del self.seconds[second]

    def summary(self, now: float, window_s: int = 5, series_s: int = 60) -> dict[str, Any]:
        """Availability over the last ``window_s`` whole seconds: per client AZ, per router and
        per (AZ, router); and per client AZ, one ratio per second for the last ``series_s``."""
        last = int(now) - 1  # the current second is still filling up
        cells: dict[tuple[str, str], list[int]] = {}
        series: dict[str, list[float | None]] = {}
        azs = sorted(set(self.router_az.values()))
        for second in range(last - series_s + 1, last + 1):
            per_az: dict[str, list[int]] = {}
            for (az, router), (ok, total) in self.seconds.get(second, {}).items():
                if second > last - window_s:
                    cell = cells.setdefault((az, router), [0, 0])
                    cell[0], cell[1] = cell[0] + ok, cell[1] + total
                acc = per_az.setdefault(az, [0, 0])
                acc[0], acc[1] = acc[0] + ok, acc[1] + total
            for az in azs:
                ok, total = per_az.get(az, [0, 0])
                series.setdefault(az, []).append(ok / total if total else None)

        def ratio(keep: Any) -> float | None:
            ok = sum(c[0] for k, c in cells.items() if keep(k))
            total = sum(c[1] for k, c in cells.items() if keep(k))
            return ok / total if total else None

        routers = sorted(self.router_az)
        return {
            "window_s": window_s,
            "azs": azs,
            "routers": [{"id": r, "az": self.router_az[r]} for r in routers],
            "by_az": {az: ratio(lambda k, az=az: k[0] == az) for az in azs},
            "by_router": {r: ratio(lambda k, r=r: k[1] == r) for r in routers},
            "matrix": {
                az: {r: ratio(lambda k, az=az, r=r: k == (az, r)) for r in routers} for az in azs
            },
            "series": series,
        }


def describe_cluster(backend: Backend, paused: set[str]) -> dict[str, Any]:
    """Every process by AZ and rack with its state (up / down / paused / unhealthy), and every
    partition's members and leader, as the storage nodes report them now."""
    ids = backend.process_ids()
    with ThreadPoolExecutor(max_workers=max(1, len(ids))) as pool:
        health = dict(zip(ids, pool.map(backend.health, ids), strict=True))
        storage = backend.process_ids("storage")
        statuses = dict(zip(storage, pool.map(backend.storage_status, storage), strict=True))
    processes = []
    for pid in ids:
        info = backend.config.process(pid)
        if pid in paused:
            state = "paused"
        elif health[pid] is not None:
            state = "up"
        else:
            state = "down" if not backend.may_answer(pid) else "unhealthy"
        processes.append(
            {"id": pid, "role": info.role, "az": info.az, "rack": info.rack, "state": state}
        )
    groups = [
        {"group": g.group, "members": list(g.members), "leader": g.leader}
        for g in groups_from_status(statuses).values()
    ]
    return {"azs": list(backend.topology().azs), "processes": processes, "groups": groups}


def fault_catalog() -> list[dict[str, Any]]:
    return [
        {
            "kind": entry.kind,
            "description": entry.description,
            "parameters": [
                {
                    "name": p.name,
                    "type": p.type,
                    "required": p.required,
                    "default": p.default,
                    "help": p.help,
                }
                for p in entry.parameters
            ],
        }
        for entry in describe_catalog()
    ]


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class GameDayControl:
    """The service: an event loop in a thread of its own runs the HTTP API, the orchestrator's
    session and the canaries; ``start`` returns once the API answers."""

    def __init__(
        self,
        backend: Backend,
        session_dir: Path,
        run_start: float,
        radius: BlastRadius,
        guard: Guard | None = None,
        canary_rate: float = CANARY_RATE,
    ) -> None:
        self.backend = backend
        self.session_dir = session_dir
        self.run_start = run_start
        self.radius = radius
        self.guard = guard
        self.canary_rate = canary_rate
        self.token = secrets.token_urlsafe(24)
        self.url = ""
        self.tag = secrets.token_hex(2)
        self.endpoints = backend.endpoints()
        self.router_az = {r: backend.config.process(r).az for r in self.endpoints}
        self.canaries = CanaryBoard(session_dir / "canary.jsonl", self.router_az)
        self.faults: dict[str, ManualFault] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.cluster: dict[str, Any] = {"azs": [], "processes": [], "groups": []}
        self.problem: str | None = None  # why the session stopped early, if it did
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._orchestrator: Orchestrator | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # --- lifecycle (called from the CLI's thread) ------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self.session_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._main, name="gameday-control", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError(f"the game-day control service did not start: {self.problem}")

    def locust_env(self) -> dict[str, str]:
        return {CONTROL_URL_ENV: self.url, CONTROL_TOKEN_ENV: self.token}

    def stop(self, timeout: float = 90.0) -> None:
        """End the session: heal every fault (the orchestrator's own end), stop the canaries."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # surfaced by start() or in the state the tab shows
            self.problem = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        secret = self.backend.config.credentials[DEFAULT_ACCESS_KEY]
        first = next(iter(self.endpoints.values()))
        await ensure_table_async(first, DEFAULT_ACCESS_KEY, secret, CANARY_TABLE, "register")
        orchestrator = Orchestrator(
            self.backend,
            [],
            self.session_dir,
            self.radius,
            run_start=self.run_start,
            guard=self.guard,
        )
        orchestrator.events.listeners.append(self._on_event)
        self._orchestrator = orchestrator
        stop_canaries = asyncio.Event()
        canaries = asyncio.create_task(
            run_canaries(
                self.endpoints,
                self.router_az,
                DEFAULT_ACCESS_KEY,
                secret,
                CANARY_TABLE,
                self.canary_rate,
                SESSION_LIMIT_S,
                self.session_dir / "canary.jsonl",
                self.run_start,
                stop_canaries,
            )
        )
        session = asyncio.create_task(orchestrator.run(SESSION_LIMIT_S))
        refresh = asyncio.create_task(self._refresh_forever())
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._ready.set()
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stopping, session}, return_when=asyncio.FIRST_COMPLETED)
            if session.done() and session.exception() is not None:
                self.problem = f"the fault session ended: {session.exception()}"
        finally:
            orchestrator.finish()
            with contextlib.suppress(Exception):
                await session  # heals whatever is still injected, writes run_end
            stop_canaries.set()
            refresh.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await canaries
            with contextlib.suppress(asyncio.CancelledError):
                await refresh
            await runner.cleanup()

    # --- state ----------------------------------------------------------------------------------

    async def _refresh_forever(self) -> None:
        for _ in range(int(SESSION_LIMIT_S / REFRESH_S)):  # bounded; cancelled at the end
            paused: set[str] = set()
            if self._orchestrator is not None:
                for plan in list(self._orchestrator.active_plans.values()):
                    paused |= set(plan.pauses)
            try:
                self.cluster = await asyncio.to_thread(describe_cluster, self.backend, paused)
            except Exception as exc:  # keep the last view; say why it is stale
                self.problem = f"cannot read the cluster: {exc}"
            await asyncio.to_thread(self.canaries.poll)
            await asyncio.sleep(REFRESH_S)

    def _on_event(self, event: dict[str, Any]) -> None:
        """Orchestrator events (from the loop or a heal's worker thread) -> the tab's faults."""
        with self._lock:
            self.events.append(event)
            fault = self.faults.get(str(event.get("fault_id")))
            if fault is None:
                return
            name = event["event"]
            if name == "fault_start":
                fault.state, fault.started = "active", float(event["time"])
                fault.targets = list(event.get("targets", []))
                fault.description = str((event.get("detail") or {}).get("plan", fault.kind))
            elif name == "fault_confirmed":
                fault.evidence = event.get("detail")
            elif name == "fault_end":
                fault.state, fault.ended = "healed", float(event["time"])
            elif name in ("fault_refused", "fault_not_landed", "fault_failed"):
                fault.state = "refused" if name == "fault_refused" else "failed"
                fault.reason = str(event.get("reason"))

    def state(self) -> dict[str, Any]:
        now = time.time() - self.run_start
        with self._lock:
            faults = [asdict(f) for f in self.faults.values()]
            events = list(self.events)[-60:]
        return {
            "now": round(now, 3),
            "cluster": self.cluster,
            "faults": faults,
            "events": events,
            "canaries": self.canaries.summary(now),
            "blast_radius": asdict(self.radius),
            "problem": self.problem,
        }

    # --- faults ---------------------------------------------------------------------------------

    async def inject(self, body: dict[str, Any]) -> ManualFault:
        kind = body.get("kind")
        if not isinstance(kind, str) or not kind:
            raise BadRequest("give the fault's kind (see the catalog)", "kind")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("params must be an object of PARAM: VALUE", "params")
        params = {k: v for k, v in params.items() if v not in ("", None)}
        hold = body.get("hold", DEFAULT_HOLD_S)
        try:
            hold_s = parse_duration(hold) if isinstance(hold, str) else float(hold)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"hold: {exc}", "hold") from None
        if not 0 < hold_s <= MAX_HOLD_S:
            raise BadRequest(f"hold must be between 0 and {MAX_HOLD_S:g} seconds", "hold")
        try:
            fault = make_fault(kind, params)
        except PlanError as exc:
            raise BadRequest(str(exc), exc.param) from None
        except (UnknownFaultKind, ValueError, TypeError) as exc:
            param = "kind" if isinstance(exc, UnknownFaultKind) else None
            raise BadRequest(str(exc), param) from None
        orchestrator = self._orchestrator
        if orchestrator is None or not orchestrator.accepting():
            raise BadRequest("the session is ending: no more faults")
        fault_id = f"web-{self.tag}-{next(self._numbers)}"
        record = ManualFault(fault_id, kind, fault.params(), hold_s, description=fault.describe())
        with self._lock:
            self.faults[fault_id] = record
        at_s = time.time() - self.run_start
        task = orchestrator.add_fault(TimedFault(at_s, fault, hold_s, fault_id))
        self._tasks[fault_id] = task
        deadline = time.monotonic() + ANSWER_WAIT_S
        while record.state == "planning" and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if task.done() and record.state == "planning":  # it ended without saying why
            record.state, record.reason = "failed", self._task_problem(task)
        return record

    @staticmethod
    def _task_problem(task: asyncio.Task[None]) -> str:
        if task.cancelled():
            return "cancelled"
        exc = task.exception()
        return f"not injected: {exc}" if exc else "not injected (the session is stopping)"

    async def heal(self, body: dict[str, Any]) -> list[str]:
        """Heal one fault (``fault_id``) or, with ``"all": true``, every fault of the session."""
        wanted = body.get("fault_id")
        if body.get("all"):
            ids = [i for i, f in self.faults.items() if f.state == "active"]
        elif isinstance(wanted, str) and wanted in self.faults:
            fault = self.faults[wanted]
            if fault.state != "active":
                raise BadRequest(f"{wanted} is {fault.state}, not active", "fault_id")
            ids = [wanted]
        else:
            raise BadRequest("give fault_id (an active fault of this session) or all", "fault_id")
        tasks = [self._tasks[i] for i in ids if i in self._tasks]
        for fault_id in ids:
            self.faults[fault_id].state = "healing"
        for task in tasks:
            task.cancel()  # the orchestrator heals a fault whose hold is cut short
        await asyncio.gather(*tasks, return_exceptions=True)
        return ids

    # --- HTTP -----------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate], client_max_size=64 * 1024)
        app.router.add_get("/state", self._get_state)
        app.router.add_get("/catalog", self._get_catalog)
        app.router.add_post("/inject", self._post_inject)
        app.router.add_post("/heal", self._post_heal)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.json_response({"error": f"missing or wrong {TOKEN_HEADER}"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    async def _get_state(self, _request: web.Request) -> web.Response:
        return web.json_response(self.state(), dumps=_dumps)

    async def _get_catalog(self, _request: web.Request) -> web.Response:
        return web.json_response({"faults": fault_catalog()}, dumps=_dumps)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    async def _post_inject(self, request: web.Request) -> web.Response:
        try:
            record = await self.inject(await self._body(request))
        except BadRequest as exc:
            return web.json_response({"error": str(exc), "param": exc.param}, status=400)
        status = 200 if record.state in ("active", "healed") else 409
        return web.json_response({"fault": asdict(record)}, status=status, dumps=_dumps)

    async def _post_heal(self, request: web.Request) -> web.Response:
        try:
            healed = await self.heal(await self._body(request))
        except BadRequest as exc:
            return web.json_response({"error": str(exc), "param": exc.param}, status=400)
        return web.json_response({"healed": healed})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
