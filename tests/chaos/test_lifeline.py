"""Children tied to their parent with PR_SET_PDEATHSIG die when it is SIGKILLed, and only then:
not when the (worker) thread that asked for them ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos.backends.processes import ProcessTable

pytestmark = pytest.mark.slow  # real processes; seconds on a busy machine

PARENT = """
import signal, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

from chaos.backends.processes import ProcessTable

pytestmark = pytest.mark.slow  # real processes; seconds on a busy machine

root = Path(sys.argv[1])
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
tied = ProcessTable(root / "tied", root / "logs", die_with=signal.SIGKILL)
with ThreadPoolExecutor(1) as pool:  # its worker thread ends with the block
    pool.submit(tied.spawn, "tied", sleeper).result()
tied.spawn("piped", sleeper, rotate_bytes=1 << 20)  # through the log pipe
ProcessTable(root / "free", root / "logs").spawn("free", sleeper)
print("ready", flush=True)
time.sleep(600)
"""


def _alive(table: ProcessTable, process_id: str) -> bool:
    return table.alive(process_id)


def _wait(what: str, predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_tied_children_die_with_a_sigkilled_parent_not_with_its_threads(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    tied = ProcessTable(tmp_path / "tied", tmp_path / "logs")
    free = ProcessTable(tmp_path / "free", tmp_path / "logs")
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "ready\n"
        time.sleep(0.5)  # the worker thread that forked "tied" has ended by now
        assert _alive(tied, "tied") and _alive(tied, "piped") and _alive(free, "free")
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        _wait("tied children dead", lambda: not tied.alive("tied") and not tied.alive("piped"))
        assert free.alive("free")  # an untied child outlives its parent, as a kept cluster does
    finally:
        parent.kill()
        parent.wait(30)
        for table, process_id in ((tied, "tied"), (tied, "piped"), (free, "free")):
            pid = table.pid(process_id)
            if pid is not None and table.alive(process_id):
                os.kill(pid, signal.SIGKILL)
