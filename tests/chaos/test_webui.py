"""The web UI's Game day tab in a real browser: Debian's chromium driven by selenium.

`gameday load --web` on a cluster of its own; the browser starts a swarm, opens the Game day
tab, powers off az-b from the fault form, sees the AZ go down and the canaries reaching its
router drop, heals it from the tab and sees everything recover. Screenshots of the tab with
the AZ down and after the heal are kept in runs/browser-test/ (and the test's tmp dir).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.backends.local import LocalCluster
from tests.local_nodes import free_port

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BOUND = 300.0  # a bound for a hang, not a deadline for slowness (a heal at load 20: minutes)


def wait_for(what: str, check: Callable[[], Any], bound: float = BOUND) -> Any:
    deadline = time.monotonic() + bound
    while True:
        try:
            value = check()
        except Exception:  # the page is redrawn every second: an element may go stale
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} after {bound:.0f}s"
        time.sleep(0.3)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (make browser installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1500,1050")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(300)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.timeout(900)  # Locust's page is a large bundle; a busy machine renders it slowly
def test_game_day_tab_powers_off_an_az_and_heals_it(
    fresh_cluster: LocalCluster, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "chaos.cli_entry", "load", "--web", "--web-port", str(port)]
    argv += ["--data-dir", str(fresh_cluster.data_dir), "--users", "4"]
    argv += ["--history", str(tmp_path / "session")]
    with (tmp_path / "load.log").open("wb") as log:
        load = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        token = wait_for("Game day API", lambda: _token(base) or load.poll() is not None)
        assert load.poll() is None, (tmp_path / "load.log").read_text()[-3000:]
        # another site may not inject, even with the token: Origin and Host are checked
        inject = f"{base}/gameday/api/inject"
        fault = {"kind": "power_off_az", "params": {"target": "az-b"}}
        assert post(inject, fault, {}) == 403
        assert post(inject, fault, {"X-Gameday-Token": token, "Origin": "http://x.test"}) == 403
        assert post(inject, fault, {"X-Gameday-Token": token, "Host": "evil.test"}) == 403

        browser.get(base + "/")
        wait_for("Locust's start form", lambda: browser.find_element(By.NAME, "userCount"))
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        tab = wait_for("Game day tab", lambda: _tab(browser, "game day"))
        tab.click()

        def az(name: str) -> str | None:
            return str(browser.execute_script(f"return _gd('[data-az=\"{name}\"]', 'state')"))

        def router_ratio(router: str) -> float | None:
            value = browser.execute_script(f"return _gd('[data-router-total={router}]', 'ratio')")
            return None if value in (None, "", "null") else float(value)

        browser.execute_script(HELPER)
        wait_for("az-b up", lambda: az("az-b") == "up")
        wait_for("canaries through rt-b", lambda: (router_ratio("rt-b") or 0) >= 0.99)

        browser.find_element(By.CSS_SELECTOR, "#gd-kind option[value=power_off_az]").click()
        target = browser.find_element(By.CSS_SELECTOR, "input[data-param=target]")
        target.clear()
        target.send_keys("az-b")
        hold = browser.find_element(By.ID, "gd-hold")
        hold.clear()
        hold.send_keys("600s")  # the test heals it; a busy browser must not race the hold
        browser.find_element(By.ID, "gd-inject").click()

        wait_for("az-b down", lambda: az("az-b") == "down")

        def dropped() -> bool:
            ratio = router_ratio("rt-b")
            return ratio is not None and ratio < 0.5

        wait_for("canaries through rt-b dropping", dropped)
        wait_for("the fault active", lambda: browser.find_element(By.CSS_SELECTOR, ACTIVE_ROW))
        shot = tmp_path / "gameday-tab-az-down.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")

        browser.execute_script(f"document.querySelector('{ACTIVE_ROW} button.gd-heal').click()")
        wait_for("az-b back up", lambda: az("az-b") == "up")
        wait_for("canaries through rt-b back", lambda: (router_ratio("rt-b") or 0) >= 0.99)
        browser.save_screenshot(str(tmp_path / "gameday-tab-healed.png"))
    finally:
        if load.poll() is None:
            load.send_signal(signal.SIGTERM)
        try:
            load.wait(120)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait(10)
    assert shot.stat().st_size > 10_000
    keep = Path(__file__).resolve().parents[2] / "runs" / "browser-test"  # outlives pytest's tmp
    keep.mkdir(parents=True, exist_ok=True)
    for png in tmp_path.glob("*.png"):
        shutil.copy(png, keep / png.name)
    events = [json.loads(line) for line in (tmp_path / "session" / "events.jsonl").open()]
    kinds = [(e["event"], e.get("fault")) for e in events]
    assert ("fault_start", "power_off_az") in kinds
    assert ("fault_confirmed", "power_off_az") in kinds
    assert ("fault_end", "power_off_az") in kinds
    assert kinds[-1] == ("run_end", None) and events[-1]["aborted"] is None
    assert (tmp_path / "session" / "canary.jsonl").stat().st_size > 0


ACTIVE_ROW = "tr[data-fault][data-state=active]"
HELPER = """
window._gd = (selector, attr) => {
  const el = document.querySelector('#gameday-panel ' + selector);
  return el ? el.getAttribute('data-' + attr) : null;
};
"""


def _token(base: str) -> str | None:
    try:
        with urllib.request.urlopen(base + "/gameday/api/token", timeout=5) as resp:
            return str(json.loads(resp.read())["token"])
    except (OSError, ValueError, KeyError):
        return None


def _tab(browser: Any, title: str) -> Any:
    from selenium.webdriver.common.by import By

    for tab in browser.find_elements(By.CSS_SELECTOR, "[role=tab]"):
        if tab.text.strip().lower() == title:
            return tab
    return None
