"""Authentication of internal traffic: proof that a caller holds the cluster's internal key.

Cluster processes, and the orchestrator that opened the cluster's config, install the key once
(``install``); a caller then proves it at connection setup (a storage node's ``hello`` frame)
or per HTTP request (a header), with an HMAC-SHA256 over a timestamp and a random nonce. A
receiver accepts a proof whose time is within ``MAX_SKEW_SECONDS`` and whose nonce it has not
seen, so a captured proof cannot be replayed later. The cost is one HMAC per connection (or
per admin request), nothing per message. Destructive operations (dropping a replica, dumping
a snapshot, scrubbing, changing quotas) require a proof; the key never travels.

    auth.install(config.internal_secret())            # at process start
    writer.write(encode_frame(auth.hello("client")))  # {"hello": "client", "auth": [...]}
    trusted = auth.check_hello(hello)                 # on the node
    headers = auth.http_headers("POST", "/admin/scrub")
    app = web.Application(middlewares=[auth.guard()])   # POST/PUT/DELETE need the proof
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

HEADER = "X-Gameday-Auth"
MAX_SKEW_SECONDS = 60.0
_SEEN_LIMIT = 100_000  # remembered nonces; older ones are outside the skew window anyway

_keys: list[bytes] = []
_seen: OrderedDict[str, float] = OrderedDict()


def install(secret: str) -> None:
    """Trust ``secret`` and prove it in everything this process sends (idempotent). A process
    that works with several clusters (a test run) installs each one's key."""
    key = hashlib.sha256(b"gameday-internal-v1\0" + secret.encode()).digest()
    if key not in _keys:
        _keys.append(key)


def installed() -> bool:
    return bool(_keys)


def _mac(key: bytes, subject: str, stamp: str, nonce: str) -> str:
    message = f"{subject}\n{stamp}\n{nonce}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _proof(subject: str) -> str:
    stamp, nonce = f"{time.time():.3f}", secrets.token_hex(12)
    return ":".join([stamp, nonce, *(_mac(key, subject, stamp, nonce) for key in _keys)])


def _check(subject: str, proof: Any, now: float | None = None) -> bool:
    if not isinstance(proof, str) or not _keys:
        return False
    stamp, _, rest = proof.partition(":")
    nonce, _, macs = rest.partition(":")
    try:
        skew = abs((time.time() if now is None else now) - float(stamp))
    except ValueError:
        return False
    if not skew <= MAX_SKEW_SECONDS or not nonce or nonce in _seen:
        return False
    offered = macs.split(":")
    for key in _keys:
        expected = _mac(key, subject, stamp, nonce)
        if any(hmac.compare_digest(expected, mac) for mac in offered):
            _remember(nonce)
            return True
    return False


def _remember(nonce: str) -> None:
    _seen[nonce] = time.monotonic()
    while len(_seen) > _SEEN_LIMIT:
        _seen.popitem(last=False)


def hello(kind: str, **fields: Any) -> dict[str, Any]:
    """A storage node ``hello`` frame (``client`` or ``peer``), with a proof if a key is
    installed."""
    frame: dict[str, Any] = {"hello": kind, **fields}
    if _keys:
        frame["auth"] = _proof(f"hello {kind}")
    return frame


def check_hello(frame: dict[str, Any]) -> bool:
    """Whether a ``hello`` frame proves the cluster's key."""
    return _check(f"hello {frame.get('hello')}", frame.get("auth"))


def http_headers(method: str, path: str) -> dict[str, str]:
    """The header proving the key for one request (``path`` without the query)."""
    return {HEADER: _proof(f"{method.upper()} {path}")} if _keys else {}


def check_http(method: str, path: str, proof: str | None) -> bool:
    return _check(f"{method.upper()} {path}", proof)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHANGES = frozenset({"POST", "PUT", "DELETE", "PATCH"})


def guard(methods: frozenset[str] = CHANGES) -> Middleware:
    """aiohttp middleware: requests with one of ``methods`` need a proof of the internal key
    (403 without one); the others (GET: health checks, scrapes) stay open. Without a key
    installed (a process run without a cluster config) nothing is checked."""

    @web.middleware
    async def require_proof(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in methods or not _keys:
            return await handler(request)
        if not check_http(request.method, request.path, request.headers.get(HEADER)):
            return web.json_response(
                {
                    "error": "Forbidden",
                    "message": f"{request.method} {request.path} needs the cluster's internal "
                    f"key (the {HEADER} header; see cluster/auth.py)",
                },
                status=403,
            )
        return await handler(request)

    return require_proof
