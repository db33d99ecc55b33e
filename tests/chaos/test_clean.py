"""`gameday clean` judges a process's paths as the process sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chaos.clean import processes


def test_a_relative_config_is_read_from_the_process_cwd(tmp_path: Path) -> None:
    # A live cluster started with a relative --config (as `make demo` does) from another
    # directory must not look like one "whose data dir is gone".
    cluster = tmp_path / "runs" / "r1" / "cluster"
    cluster.mkdir(parents=True)
    (cluster / "cluster.json").write_text("{}")
    argv = [sys.executable, "-c", "import time; time.sleep(30)", "--config"]
    child = subprocess.Popen([*argv, "runs/r1/cluster/cluster.json"], cwd=tmp_path)
    try:
        proc = next(p for p in processes() if p.pid == child.pid)
        assert proc.path_option("--config") == cluster / "cluster.json"
        assert proc.path_option("--missing") is None
    finally:
        child.kill()
        child.wait()
