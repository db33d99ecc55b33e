"""Settings as environment variables, Locust's command lines, and the workload catalog."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from workloads import ops
from workloads.catalog import WORKLOADS, workload
from workloads.runner import (
    LOCUSTFILE,
    WebUI,
    headless_argv,
    locust_env,
    run_seconds,
    web_argv,
)
from workloads.settings import LoadSettings

SETTINGS = LoadSettings(
    endpoints=("http://127.20.1.100:8000", "http://127.20.2.100:8000"),
    access_key="gameday",
    secret_key="s3cret",
    workload="register",
    keys=12,
    distribution="zipfian",
    history_dir=Path("/tmp/run"),
    run_start=1700000000.25,
)


def test_settings_round_trip_through_the_environment() -> None:
    env = SETTINGS.to_env()
    assert env["GAMEDAY_ENDPOINTS"] == "http://127.20.1.100:8000,http://127.20.2.100:8000"
    assert env["GAMEDAY_RUN_START"] == "1700000000.25"
    assert LoadSettings.from_env(env) == SETTINGS


def test_defaults_and_validation() -> None:
    empty = LoadSettings.from_env({})
    assert empty.workload is None and empty.distribution == "uniform"
    spec = WORKLOADS["query"]
    assert empty.table_for(spec) == "gameday-query" and empty.keys_for(spec) == 5
    with pytest.raises(ValueError):
        LoadSettings.from_env({"GAMEDAY_WORKLOAD": "nope"})
    with pytest.raises(ValueError):
        LoadSettings.from_env({"GAMEDAY_DISTRIBUTION": "hot"})


def test_table_override_applies_to_the_selected_workload_only() -> None:
    one = LoadSettings(workload="rmw", table="t1")
    assert one.table_for(WORKLOADS["rmw"]) == "t1"
    assert one.table_for(WORKLOADS["query"]) == "gameday-query"


def test_environment_drops_stale_gameday_variables() -> None:
    base = {"PATH": "/bin", "GAMEDAY_TABLE": "stale", "GAMEDAY_HISTORY_DIR": "/old"}
    env = locust_env(LoadSettings(endpoints=("http://127.0.0.1:1",)), base)
    assert env["PATH"] == "/bin"
    assert "GAMEDAY_TABLE" not in env and "GAMEDAY_HISTORY_DIR" not in env
    assert str(LOCUSTFILE.parents[1]) in env["PYTHONPATH"]


def test_locust_runs_this_checkouts_workloads_from_any_directory(tmp_path: Path) -> None:
    """``python -m locust`` puts its working directory first on sys.path: started from another
    checkout, it imported that checkout's workloads (and a bench measured the wrong code)."""
    (tmp_path / "workloads").mkdir()
    (tmp_path / "workloads" / "__init__.py").write_text("")
    env = locust_env(LoadSettings(endpoints=("http://127.0.0.1:1",)))
    probe = "import workloads; print(workloads.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert out.stdout.decode().strip() == str(LOCUSTFILE.with_name("__init__.py"))


def test_headless_command_line() -> None:
    argv = headless_argv(SETTINGS, 5, 2.5, "8s", processes=2, csv_prefix=Path("/tmp/run/locust"))
    line = " ".join(argv)
    assert argv[1:5] == ["-m", "locust", "-f", str(LOCUSTFILE)]
    for part in (
        "--headless",
        "-u 5",
        "-r 2.5",
        "--run-time 8s",
        "--only-summary",
        "--processes 2",
        "--csv /tmp/run/locust",
        "--host http://127.20.1.100:8000",
    ):
        assert part in line


def test_web_command_line_binds_to_loopback_by_default() -> None:
    line = " ".join(web_argv(SETTINGS, WebUI(class_picker=True)))
    assert "--web-host 127.0.0.1 --web-port 8089" in line
    assert "--class-picker" in line and "--headless" not in line


@pytest.mark.parametrize(
    ("span", "seconds"), [("90", 90), ("8s", 8), ("2m", 120), ("1h30m", 5400), ("0.5s", 0.5)]
)
def test_run_seconds(span: str, seconds: float) -> None:
    assert run_seconds(span) == seconds


@pytest.mark.parametrize("span", ["", "soon", "5x", "1h and 2m"])
def test_run_seconds_refuses_nonsense(span: str) -> None:
    with pytest.raises(ValueError):
        run_seconds(span)


def test_every_workload_has_its_user_class_in_the_locustfile() -> None:
    """Checked on the source: importing the locustfile would monkey-patch pytest for gevent."""
    tree = ast.parse(LOCUSTFILE.read_text())
    declared: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id == "workload"
                    and isinstance(stmt.value, ast.Constant)
                ):
                    declared[node.name] = str(stmt.value.value)
    assert {spec.user_class: spec.name for spec in WORKLOADS.values()} == declared
    with pytest.raises(ValueError):
        workload("nope")


def test_requests_and_answers() -> None:
    call = ops.cas("t", "r3", expected="a", new="b")
    assert call.operation == "UpdateItem"
    assert call.params["ConditionExpression"] == "#v = :expected"
    assert call.params["ExpressionAttributeValues"] == {":new": {"S": "b"}, ":expected": {"S": "a"}}
    assert ops.versioned_update("t", "k", None, "v").params["ConditionExpression"] == (
        "attribute_not_exists(#ver)"
    )
    assert ops.versioned_update("t", "k", 4, "v").params["ExpressionAttributeValues"][":ver"] == {
        "N": "4"
    }
    assert ops.read_value({"Item": {"k": {"S": "r3"}, "v": {"S": "x"}}}) == "x"
    assert ops.read_value({}) is None
    assert ops.read_version({"Item": {"ver": {"N": "7"}}}) == 7
    items = {"Items": [{"sk": {"N": "9"}, "v": {"S": "b"}}, {"sk": {"N": "2"}, "v": {"S": "a"}}]}
    assert ops.query_items(items) == [[2, "a"], [9, "b"]]
    assert ops.sorted_key_name("q1", 17) == "q1#17"
