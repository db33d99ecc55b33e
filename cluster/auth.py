"""Authentication of internal traffic: proof that a caller holds the cluster's internal key.

Cluster processes, and the orchestrator that opened the cluster's config, install the key once
(``install``); a caller then proves it:

- at connection setup on a storage node's port (Raft peers and clients alike): the node sends
  a fresh random challenge first, and the dialer's ``hello`` carries an HMAC-SHA256 over it
  (``challenge`` / ``hello`` / ``check_hello``). A hello recorded on the network is worthless
  on any other connection. A connection without a valid hello is closed.
- per HTTP request (a header), with an HMAC over the method, the path, a timestamp and a
  random nonce. A receiver accepts a proof whose time is within ``MAX_SKEW_SECONDS`` and whose
  nonce it has not seen, so a captured proof cannot be replayed. It remembers nonces until
  their proofs are too old to pass anyway; past ``_SEEN_LIMIT`` it forgets the oldest early and
  from then on refuses every proof stamped no later than one it forgot (so a forgotten nonce
  can never pass again). Every request needs one
  except ``GET /health`` and ``GET /metrics`` (probes and scrapers hold no key; neither
  serves data).

The cost is one HMAC per connection or per request, nothing per message; the key never travels.

    auth.install(config.internal_secret())                  # at process start
    frame = auth.hello("peer", challenge, node="sn-a1")     # the dialer, answering
    proven = auth.check_hello(frame, challenge)             # on the node
    headers = auth.http_headers("GET", "/map")
    app = web.Application(middlewares=[auth.guard()])       # all but /health, /metrics
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

HEADER = "X-Gameday-Auth"
MAX_SKEW_SECONDS = 60.0
_SEEN_LIMIT = 100_000  # nonces remembered at most (a proof of 2 minutes ago is refused anyway)

_keys: list[bytes] = []
_seen: OrderedDict[str, float] = OrderedDict()  # nonce -> its proof's time, oldest first
_horizon = 0.0  # proofs stamped at or before this are refused: their nonces may be forgotten


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
    now = time.time() if now is None else now
    try:
        stamped = float(stamp)
    except ValueError:
        return False
    fresh = abs(now - stamped) <= MAX_SKEW_SECONDS and stamped > _horizon
    if not fresh or not nonce or nonce in _seen:
        return False
    offered = macs.split(":")
    for key in _keys:
        expected = _mac(key, subject, stamp, nonce)
        if any(hmac.compare_digest(expected, mac) for mac in offered):
            _remember(nonce, stamped, now)
            return True
    return False


def _remember(nonce: str, stamped: float, now: float) -> None:
    """Remember ``nonce``; forget those whose proofs the skew check refuses by now, and past
    the limit the oldest ones, raising the horizon so their proofs stay refused."""
    global _horizon
    _seen[nonce] = stamped
    while _seen:
        oldest = next(iter(_seen.values()))
        expired = oldest < now - MAX_SKEW_SECONDS
        if not expired and len(_seen) <= _SEEN_LIMIT:
            break
        _seen.popitem(last=False)
        if not expired:
            _horizon = max(_horizon, oldest)


def challenge() -> str:
    """A fresh challenge, sent first on every connection a storage node accepts."""
    return secrets.token_hex(16)


def _hello_subject(kind: Any, node: Any, nonce: str) -> str:
    return f"hello {kind} {node}\n{nonce}"


def hello(kind: str, challenge: str, **fields: Any) -> dict[str, Any]:
    """A storage node ``hello`` frame (``client`` or ``peer``) answering the node's
    ``challenge``, with a proof of every installed key (none without a key)."""
    frame: dict[str, Any] = {"hello": kind, **fields}
    if _keys:
        subject = _hello_subject(kind, fields.get("node"), challenge)
        frame["auth"] = [hmac.new(k, subject.encode(), hashlib.sha256).hexdigest() for k in _keys]
    return frame


def check_hello(frame: dict[str, Any], challenge: str) -> bool:
    """Whether a ``hello`` frame proves the cluster's key over this connection's challenge."""
    offered = frame.get("auth")
    if not _keys or not isinstance(offered, list) or not challenge:
        return False
    subject = _hello_subject(frame.get("hello"), frame.get("node"), challenge).encode()
    for key in _keys:
        expected = hmac.new(key, subject, hashlib.sha256).hexdigest()
        if any(isinstance(m, str) and hmac.compare_digest(expected, m) for m in offered):
            return True
    return False


def http_headers(method: str, path: str) -> dict[str, str]:
    """The header proving the key for one request (``path`` without the query)."""
    return {HEADER: _proof(f"{method.upper()} {path}")} if _keys else {}


def url_headers(method: str, url: str) -> dict[str, str]:
    """``http_headers`` for a whole URL (its path counts, not its query)."""
    return http_headers(method, urllib.parse.urlsplit(url).path)


def check_http(method: str, path: str, proof: str | None) -> bool:
    return _check(f"{method.upper()} {path}", proof)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Open to anyone: liveness/readiness probes and Prometheus scrapers carry no key, and neither
# endpoint serves data.
OPEN = frozenset({("GET", "/health"), ("HEAD", "/health"), ("GET", "/metrics")})


def guard(open_routes: frozenset[tuple[str, str]] = OPEN) -> Middleware:
    """aiohttp middleware: every request but ``open_routes`` (method, path) needs a proof of
    the internal key (403 without one, before the body is read). Without a key installed (a
    process run without a cluster config) nothing is checked."""

    @web.middleware
    async def require_proof(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in open_routes or not _keys:
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
