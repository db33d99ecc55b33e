"""The "Game day" tab of Locust's web UI: a Locust plugin that shows the cluster and its faults.

Loaded beside the locustfile (``locust -f workloads/locustfile.py,workloads/webui.py``) by
`gameday load --web`, which also runs the game-day control service (chaos/control.py) and
passes its address and token in ``GAMEDAY_CONTROL_URL`` / ``GAMEDAY_CONTROL_TOKEN``. On the
process that serves the web UI it adds:

- a "Game day" tab (Locust's ``extended_tabs``) whose panel is drawn by ``webui_static/panel.js``,
  injected into Locust's own page; the same panel on its own page at ``/gameday``;
- ``/gameday/api/state`` (GET), ``/gameday/api/inject`` and ``/gameday/api/heal`` (POST), passed
  on to the control service. Nothing here decides anything about faults: planning, the blast
  radius, evidence and healing are the orchestrator's, behind the control service.

Cross-site requests are refused: every ``/gameday/api`` request must name a loopback host (or
the host the UI is bound to) in ``Host`` (no DNS rebinding), must not come from another origin
(``Origin``, ``Sec-Fetch-Site``), and a POST must carry the session's token in
``X-Gameday-Token``, which the page reads from ``/gameday/api/token`` (refused to other
origins, so a foreign page cannot read it even though Locust allows CORS). Locust's own POST
routes (``/swarm``, ``/stop``, ``/stats/reset``, ``/user``) get the same Host and cross-site
checks (not the token: Locust's page does not send it), so another site's page cannot start or
stop the load through the user's browser.
"""

from __future__ import annotations

import hmac
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from flask import Response, abort, request, send_from_directory
from locust import events
from locust.env import Environment

from workloads.settings import CONTROL_TOKEN_ENV, CONTROL_URL_ENV, TOKEN_HEADER

STATIC = Path(__file__).resolve().with_name("webui_static")
TAB = {"title": "Game day", "key": "gameday"}
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
PROXY_TIMEOUT = 90.0  # an inject answers once the fault is confirmed (or refused)
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Game day - Locust</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="gameday/static/panel.css"></head>
<body class="gameday-standalone"><div id="gameday-root"></div>
<script src="gameday/static/panel.js"></script></body></html>
"""
SNIPPET = (
    '<link rel="stylesheet" href="./gameday/static/panel.css">'
    '<script src="./gameday/static/panel.js" defer></script>'
)


class Control:
    """The control service, as the web UI's process reaches it."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={TOKEN_HEADER: self.token, "Content-Type": "application/json"},
        )
        try:  # cooperative: Locust has monkey-patched sockets for gevent
            with urllib.request.urlopen(req, timeout=PROXY_TIMEOUT) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except OSError as exc:
            message = f"the game-day control service does not answer: {exc}"
            return 502, json.dumps({"error": message}).encode()


def allowed_hosts(bind_host: str) -> frozenset[str]:
    hosts = set(LOOPBACK_NAMES)
    if bind_host and bind_host not in ("*", "0.0.0.0", "::"):
        hosts.add(bind_host)
    return frozenset(hosts)


def refusal(headers: Any, method: str, token: str, hosts: frozenset[str]) -> str | None:
    """Why this request may not use the Game day API (None: it may).

    ``headers`` is a mapping of request headers (case-insensitive, as Flask's)."""
    host = str(headers.get("Host", ""))
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name not in hosts:
        return f"Host {host!r} is not this web UI's (loopback only)"
    origin = headers.get("Origin")
    if origin is not None and origin != f"http://{host}" and origin != f"https://{host}":
        return f"cross-site request from {origin!r}"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request (Sec-Fetch-Site: {site})"
    if method == "POST":
        given = str(headers.get(TOKEN_HEADER, ""))
        if not hmac.compare_digest(given.encode(), token.encode()):
            return f"missing or wrong {TOKEN_HEADER}"
        if not str(headers.get("Content-Type", "")).startswith("application/json"):
            return "the body must be application/json"
    return None


def install(environment: Environment, control: Control) -> None:
    """Add the tab, its page and its API to ``environment.web_ui``."""
    web_ui = environment.web_ui
    assert web_ui is not None and web_ui.app is not None
    app = web_ui.app
    hosts = allowed_hosts(web_ui.host)
    web_ui.template_args["extended_tabs"] = [TAB]

    def guard() -> None:
        reason = refusal(request.headers, request.method, control.token, hosts)
        if reason is not None:
            abort(Response(json.dumps({"error": reason}), 403, mimetype="application/json"))

    def guard_locust() -> None:
        """Locust's own state-changing routes are all POSTs: no cross-site ones."""
        if request.method == "POST" and not request.path.startswith("/gameday/"):
            reason = refusal(request.headers, "GET", control.token, hosts)
            if reason is not None:
                abort(Response(json.dumps({"error": reason}), 403, mimetype="application/json"))

    def relay(status: int, body: bytes) -> Response:
        response = Response(body, status, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    def page() -> Response:
        return Response(PAGE, mimetype="text/html")

    def static(name: str) -> Response:
        return send_from_directory(STATIC, name, max_age=0)

    def token() -> Response:
        guard()
        return relay(200, json.dumps({"token": control.token, "header": TOKEN_HEADER}).encode())

    def state() -> Response:
        guard()
        return relay(*control.call("GET", "/state"))

    def catalog() -> Response:
        guard()
        return relay(*control.call("GET", "/catalog"))

    def inject() -> Response:
        guard()
        return relay(*control.call("POST", "/inject", request.get_data()))

    def heal() -> Response:
        guard()
        return relay(*control.call("POST", "/heal", request.get_data()))

    def add_panel(response: Response) -> Response:
        """Locust's own page gets the panel's script, which draws the tab's content."""
        if request.endpoint == "locust.index" and response.mimetype == "text/html":
            html = response.get_data(as_text=True)
            if "</body>" in html:
                response.set_data(html.replace("</body>", SNIPPET + "</body>", 1))
        return response

    app.add_url_rule("/gameday", "gameday_page", page)
    app.add_url_rule("/gameday/static/<path:name>", "gameday_static", static)
    app.add_url_rule("/gameday/api/token", "gameday_token", token)
    app.add_url_rule("/gameday/api/state", "gameday_state", state)
    app.add_url_rule("/gameday/api/catalog", "gameday_catalog", catalog)
    app.add_url_rule("/gameday/api/inject", "gameday_inject", inject, methods=["POST"])
    app.add_url_rule("/gameday/api/heal", "gameday_heal", heal, methods=["POST"])
    app.before_request(guard_locust)
    app.after_request(add_panel)


def _on_init(environment: Environment, **_: Any) -> None:
    url, token = os.environ.get(CONTROL_URL_ENV), os.environ.get(CONTROL_TOKEN_ENV)
    if environment.web_ui is not None and url and token:
        install(environment, Control(url, token))


events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
