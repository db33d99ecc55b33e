"""Locust's own state-changing routes refuse cross-site requests once the Game day plugin is
installed: real Locust routes (its WebUI, not started), driven with Flask's test client.

Locust patches the interpreter with gevent when imported, so the requests run in a child
Python, not in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    from locust.env import Environment
    from workloads import webui

    env = Environment()
    env.create_web_ui("127.0.0.1", 0, delayed_start=True)
    webui.install(env, webui.Control("http://127.0.0.1:9", "tok"))
    client = env.web_ui.app.test_client()
    own = {"Host": "127.0.0.1:8089"}
    cases = {
        "stop same origin": ("/stop", {**own, "Origin": "http://127.0.0.1:8089"}),
        "stop no origin (curl)": ("/stop", own),
        "stop other origin": ("/stop", {**own, "Origin": "http://evil.test"}),
        "reset cross-site": ("/stats/reset", {**own, "Sec-Fetch-Site": "cross-site"}),
        "swarm rebound host": ("/swarm", {"Host": "evil.test:8089"}),
        "swarm other origin": ("/swarm", {**own, "Origin": "null"}),
    }
    print(json.dumps({k: client.post(p, headers=h).status_code for k, (p, h) in cases.items()}))
    """
)


def test_locust_post_routes_refuse_cross_site_requests() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == {
        "stop same origin": 200,
        "stop no origin (curl)": 200,
        "stop other origin": 403,
        "reset cross-site": 403,
        "swarm rebound host": 403,
        "swarm other origin": 403,
    }
