"""Start and stop Locust as a subprocess, configured for gameday: headless runs or the web UI.

Locust runs in its own process because it monkey-patches Python for gevent; the orchestrator,
the CLI and the tests stay plain asyncio/threads and talk to it through argv and ``GAMEDAY_*``
environment variables (workloads/settings.py).

    settings = LoadSettings(endpoints=tuple(cluster.endpoints().values()), access_key="gameday",
                            secret_key=secret, workload="register", history_dir=run_dir,
                            run_start=run_start)
    proc = start_locust(settings, users=10, spawn_rate=10, run_time="60s",
                        csv_prefix=run_dir / "locust")
    proc.wait(timeout=run_seconds("60s") + 30)      # or stop_locust(proc) to end it early
    merge_histories(run_dir)

    web = start_web(settings, WebUI(port=8089))     # http://127.0.0.1:8089
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from workloads.settings import PREFIX, LoadSettings

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
WEBUI_PLUGIN = LOCUSTFILE.with_name("webui.py")  # the Game day tab (needs the control service)
REPO_ROOT = LOCUSTFILE.parents[1]
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")


def run_seconds(span: str) -> float:
    """Locust's time spans: ``"90"``, ``"90s"``, ``"2m"``, ``"1h30m"`` -> seconds."""
    text = span.strip().lower()
    if not text or _SPAN.sub("", text).strip():
        raise ValueError(f"not a time span: {span!r} (e.g. 30s, 2m, 1h30m)")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
    return sum(float(n) * scale[unit] for n, unit in _SPAN.findall(text))


def locust_env(settings: LoadSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Locust: ``base`` without stale ``GAMEDAY_*``, plus ``settings``."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not k.startswith(PREFIX)}
    env.update(settings.to_env())
    # the locustfile imports the workloads package; make that work from a source tree too, and
    # keep ``python -m locust`` from putting the working directory first on sys.path: started
    # from another checkout, Locust ran that checkout's workloads (Python >= 3.11)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONSAFEPATH"] = "1"
    return env


def _common_argv(
    settings: LoadSettings, locustfile: Path, plugins: Sequence[Path] = ()
) -> list[str]:
    if not settings.endpoints:
        raise ValueError("no endpoints: set LoadSettings.endpoints")
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(f) for f in (locustfile, *plugins)),
        "--host",
        settings.endpoints[0],
        # let an op in flight finish (or time out) rather than kill it mid-request: its deadline
        # plus the attempt that may have started just before it
        "--stop-timeout",
        str(int(settings.timeout + min(settings.attempt_timeout, settings.timeout)) + 1),
    ]


def headless_argv(
    settings: LoadSettings,
    users: int,
    spawn_rate: float,
    run_time: str,
    processes: int | None = None,
    csv_prefix: Path | None = None,
    locustfile: Path = LOCUSTFILE,
    extra: Sequence[str] = (),
) -> list[str]:
    run_seconds(run_time)  # validate before starting anything
    argv = [
        *_common_argv(settings, locustfile),
        "--headless",
        "-u",
        str(users),
        "-r",
        f"{spawn_rate:g}",
        "--run-time",
        run_time,
        "--only-summary",
    ]
    if processes:
        argv += ["--processes", str(processes)]
    if csv_prefix is not None:
        argv += ["--csv", str(csv_prefix)]
    return argv + list(extra)


@dataclass(frozen=True, slots=True)
class WebUI:
    """How Locust's web UI is started: where it listens (127.0.0.1 unless told otherwise),
    the form's defaults (users, spawn rate), worker processes, CSV stats, the class picker."""

    host: str = "127.0.0.1"
    port: int = 8089
    users: int | None = None
    spawn_rate: float | None = None
    processes: int | None = None
    csv_prefix: Path | None = None
    class_picker: bool = False


def web_argv(
    settings: LoadSettings,
    ui: WebUI = WebUI(),
    locustfile: Path = LOCUSTFILE,
    extra: Sequence[str] = (),
    plugins: Sequence[Path] = (),
) -> list[str]:
    argv = [
        *_common_argv(settings, locustfile, plugins),
        "--web-host",
        ui.host,
        "--web-port",
        str(ui.port),
    ]
    if ui.users is not None:
        argv += ["-u", str(ui.users)]
    if ui.spawn_rate is not None:
        argv += ["-r", f"{ui.spawn_rate:g}"]
    if ui.processes:
        argv += ["--processes", str(ui.processes)]
    if ui.csv_prefix is not None:
        argv += ["--csv", str(ui.csv_prefix)]
    if ui.class_picker:
        argv.append("--class-picker")
    return argv + list(extra)


#: How Locust is started: ``subprocess.Popen`` or a caller's equivalent (chaos ties it to itself).
Popen = Callable[..., "subprocess.Popen[bytes]"]


def _spawn(
    argv: list[str],
    settings: LoadSettings,
    log: IO[bytes] | None,
    extra_env: Mapping[str, str] | None = None,
    popen: Popen | None = None,
) -> subprocess.Popen[bytes]:
    return (popen or subprocess.Popen)(
        argv,
        env={**locust_env(settings), **(extra_env or {})},
        stdin=subprocess.DEVNULL,  # Locust's key listener would otherwise read our terminal
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,  # its --processes workers share its group: stop_locust ends all
    )


def start_locust(
    settings: LoadSettings,
    users: int = 5,
    spawn_rate: float = 5.0,
    run_time: str = "60s",
    processes: int | None = None,
    csv_prefix: Path | None = None,
    log: IO[bytes] | None = None,
    locustfile: Path = LOCUSTFILE,
    extra: Sequence[str] = (),
    popen: Popen | None = None,
) -> subprocess.Popen[bytes]:
    """Start a headless run (``--headless -u N -r R --run-time T --only-summary``); it ends by
    itself after ``run_time`` plus the stop timeout. ``log``: where its output goes (default:
    inherited); ``popen``: what starts it (default ``subprocess.Popen``)."""
    argv = headless_argv(
        settings, users, spawn_rate, run_time, processes, csv_prefix, locustfile, extra
    )
    return _spawn(argv, settings, log, popen=popen)


def start_web(
    settings: LoadSettings,
    ui: WebUI = WebUI(),
    log: IO[bytes] | None = None,
    locustfile: Path = LOCUSTFILE,
    popen: Popen | None = None,
    control_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start Locust's web UI (bound to 127.0.0.1 unless told otherwise); runs until stopped.

    ``control_env``: the game-day control service's address and token
    (``GameDayControl.locust_env()``, chaos/control.py); with it the UI gets the Game day tab.
    """
    argv = web_argv(settings, ui, locustfile, plugins=(WEBUI_PLUGIN,) if control_env else ())
    return _spawn(argv, settings, log, control_env, popen)


def stop_locust(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM (Locust stops its users, flushes the history and writes stats), then SIGKILL
    to its process group after ``timeout``. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # still unreaped, so its group id is still its own: this ends it and its workers
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return int(proc.returncode)
