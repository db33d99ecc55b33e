"""Load settings as environment variables: how ``gameday load``/``gameday run`` configure Locust.

The locustfile reads them with ``LoadSettings.from_env()``; the runner writes them with
``settings.to_env()``, so both sides share one definition. No Locust import here.

    GAMEDAY_ENDPOINTS    router URLs, comma-separated; users take them round-robin
    GAMEDAY_ACCESS_KEY   SigV4 access key id            GAMEDAY_SECRET_KEY  its secret
    GAMEDAY_WORKLOAD     register | read-heavy | update-heavy | rmw | query; unset: all classes
    GAMEDAY_TABLE        table name (default gameday-<workload>)
    GAMEDAY_KEYS         number of keys (partition keys for query; default per workload)
    GAMEDAY_DISTRIBUTION uniform | zipfian (theta 0.99)
    GAMEDAY_HISTORY_DIR  when set, every op is recorded to history-<host>-<pid>.jsonl there
    GAMEDAY_RUN_START    the run's start, a wall-clock epoch float (history times count from it)
    GAMEDAY_SEED         seeds the key choosers (default 0)
    GAMEDAY_TIMEOUT      an op's deadline in seconds, retries included (default 6)
    GAMEDAY_ATTEMPT_TIMEOUT  one attempt's timeout in seconds (default 2, at most TIMEOUT);
                         after it the client retries, on another router
    GAMEDAY_USER_RATE    open loop: each user's ops per second, on a fixed schedule whatever the
                         service does (workloads/schedule.py); the op deadline is GAMEDAY_TIMEOUT.
                         Unset: closed loop (next op after the last answer plus WAIT), which
                         hides stalls: a client blocked on a hung request sends nothing, so few
                         requests fail and the success ratio stays high (coordinated omission)
    GAMEDAY_WAIT         closed loop: think time between ops, uniform in [0, WAIT] s (default 0.01)

    settings = LoadSettings(endpoints=("http://127.20.1.100:8000",), access_key="gameday",
                            secret_key="...", workload="register")
    env = {**os.environ, **settings.to_env()}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from workloads.catalog import Workload, workload
from workloads.history import RUN_START_ENV
from workloads.keys import DISTRIBUTIONS

PREFIX = "GAMEDAY_"


@dataclass(frozen=True, slots=True)
class LoadSettings:
    endpoints: tuple[str, ...] = ()
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    workload: str | None = None
    table: str | None = None
    keys: int | None = None
    distribution: str = "uniform"
    history_dir: Path | None = None
    run_start: float | None = None
    seed: str = "0"
    timeout: float = 6.0
    wait: float = 0.01
    user_rate: float | None = None
    attempt_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.workload is not None:
            workload(self.workload)  # raises on an unknown name
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"unknown key distribution {self.distribution!r}; choose from {DISTRIBUTIONS}"
            )
        if self.keys is not None and self.keys < 1:
            raise ValueError("GAMEDAY_KEYS must be at least 1")
        if self.timeout <= 0 or self.wait < 0:
            raise ValueError("GAMEDAY_TIMEOUT must be > 0 and GAMEDAY_WAIT >= 0")
        if self.attempt_timeout <= 0:
            raise ValueError("GAMEDAY_ATTEMPT_TIMEOUT must be > 0")
        if self.user_rate is not None and self.user_rate <= 0:
            raise ValueError("GAMEDAY_USER_RATE must be > 0 (unset it for a closed loop)")

    def table_for(self, spec: Workload) -> str:
        """GAMEDAY_TABLE when it applies to ``spec`` (one workload selected), else its default."""
        if self.table and self.workload in (None, spec.name):
            return self.table
        return spec.default_table

    def keys_for(self, spec: Workload) -> int:
        return self.keys if self.keys is not None else spec.default_keys

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LoadSettings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name, "").strip()
            return value or None

        endpoints = tuple(e.strip() for e in (get("ENDPOINTS") or "").split(",") if e.strip())
        keys, run_start = get("KEYS"), env.get(RUN_START_ENV, "").strip()
        history, user_rate = get("HISTORY_DIR"), get("USER_RATE")
        return cls(
            endpoints=endpoints,
            access_key=get("ACCESS_KEY") or "",
            secret_key=get("SECRET_KEY") or "",
            workload=get("WORKLOAD"),
            table=get("TABLE"),
            keys=int(keys) if keys else None,
            distribution=get("DISTRIBUTION") or "uniform",
            history_dir=Path(history) if history else None,
            run_start=float(run_start) if run_start else None,
            seed=get("SEED") or "0",
            timeout=float(get("TIMEOUT") or 6.0),
            wait=float(get("WAIT") or 0.01),
            user_rate=float(user_rate) if user_rate else None,
            attempt_timeout=float(get("ATTEMPT_TIMEOUT") or 2.0),
        )

    def to_env(self) -> dict[str, str]:
        """The variables to set (unset optional ones are omitted)."""
        env = {
            PREFIX + "ENDPOINTS": ",".join(self.endpoints),
            PREFIX + "ACCESS_KEY": self.access_key,
            PREFIX + "SECRET_KEY": self.secret_key,
            PREFIX + "DISTRIBUTION": self.distribution,
            PREFIX + "SEED": self.seed,
            PREFIX + "TIMEOUT": repr(self.timeout),
            PREFIX + "WAIT": repr(self.wait),
            PREFIX + "ATTEMPT_TIMEOUT": repr(self.attempt_timeout),
        }
        if self.workload:
            env[PREFIX + "WORKLOAD"] = self.workload
        if self.table:
            env[PREFIX + "TABLE"] = self.table
        if self.keys is not None:
            env[PREFIX + "KEYS"] = str(self.keys)
        if self.history_dir is not None:
            env[PREFIX + "HISTORY_DIR"] = str(self.history_dir)
        if self.run_start is not None:
            env[RUN_START_ENV] = repr(self.run_start)
        if self.user_rate is not None:
            env[PREFIX + "USER_RATE"] = repr(self.user_rate)
        return env


# The Game day tab of the web UI (workloads/webui.py) reaches the game-day control service
# (chaos/control.py) at this address, with this token; every request to it carries the header.
CONTROL_URL_ENV = PREFIX + "CONTROL_URL"
CONTROL_TOKEN_ENV = PREFIX + "CONTROL_TOKEN"
TOKEN_HEADER = "X-Gameday-Token"
