"""A rotated process log: bounded on disk however much the process writes; nothing lingers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from chaos.backends.processes import ProcessTable


def test_a_chatty_process_log_stays_bounded_and_the_reader_ends_with_it(tmp_path: Path) -> None:
    procs = ProcessTable(tmp_path / "run", tmp_path / "logs")
    chatty = "import sys\nfor i in range(20000): print(f'line {i:06d} ' + 'x' * 40)\n"
    pid = procs.spawn("chatty", [sys.executable, "-c", chatty], rotate_bytes=100_000)
    assert procs.wait_dead("chatty", 60)
    log = procs.log_file("chatty")
    files = sorted(log.parent.glob("chatty.log*"))
    assert [f.name for f in files] == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    for _ in range(600):  # the reader drains the pipe and exits at EOF
        if "line 019999" in log.read_text():
            break
        time.sleep(0.05)
    assert log.read_text().rstrip().endswith("line 019999 " + "x" * 40)
    assert all(f.stat().st_size <= 100_000 for f in files)
    assert pid > 0
