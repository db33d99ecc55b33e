"""The request router's HTTP front end: DynamoDB's JSON protocol, authenticated with SigV4.

``POST /`` with ``X-Amz-Target: DynamoDB_20120810.<Operation>`` and a JSON body; the reply is
JSON with DynamoDB's error types and HTTP statuses, so boto3 and the AWS CLI work unchanged.
Nothing a client sends can crash or hold the router: the signature's headers are checked before
the body is read, the body is read under size and time limits (body.py), every top-level member
is type-checked (shapes.py), and unexpected failures become InternalServerError. The server
options close idle connections and those that never finish their headers (slowloris).

    app = make_app(ctx, verifier)     # aiohttp Application
    async with http_service(app, address, **SERVER_OPTIONS): ...
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from cluster.requestmetrics import RequestMetrics

from . import items, reads, settings, tables, transact
from .body import check_declared_length, parse_json, read_body
from .capacity import metering, report
from .context import RouterContext
from .errors import DynamoError
from .shapes import check_members
from .sigv4 import AuthError, SigV4Verifier

log = logging.getLogger(__name__)
TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"

Operation = Callable[[RouterContext, dict[str, Any]], Awaitable[dict[str, Any]]]
OPERATIONS: dict[str, Operation] = {
    "CreateTable": tables.create_table,
    "DescribeTable": tables.describe_table,
    "ListTables": tables.list_tables,
    "DeleteTable": tables.delete_table,
    "PutItem": items.put_item,
    "GetItem": items.get_item,
    "UpdateItem": items.update_item,
    "DeleteItem": items.delete_item,
    "BatchWriteItem": items.batch_write_item,
    "BatchGetItem": items.batch_get_item,
    "Query": reads.query,
    "Scan": reads.scan,
    "TransactWriteItems": transact.transact_write_items,
    "TransactGetItems": transact.transact_get_items,
    "UpdateTable": settings.update_table,
    "TagResource": settings.tag_resource,
    "UntagResource": settings.untag_resource,
    "ListTagsOfResource": settings.list_tags_of_resource,
    "UpdateTimeToLive": settings.update_time_to_live,
    "DescribeTimeToLive": settings.describe_time_to_live,
    "DescribeEndpoints": settings.describe_endpoints,
    "DescribeLimits": settings.describe_limits,
}


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "router_requests", "API requests", ["operation", "outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "router_request_seconds", "API request latency", ["operation"], registry=self.registry
        )
        self.throttled = Counter(
            "router_throttled", "Throttled requests", ["table"], registry=self.registry
        )
        self.calls = RequestMetrics(self.requests, self.latency, OPERATIONS)


_ERROR_LOG_SECONDS = 1.0
_error_logged_at: dict[tuple[str, str], float] = {}


def _note_server_error(operation: str, exc: DynamoError) -> None:
    """Log why a request got a 5xx (the client sees only the type; the message says which
    group or step failed): at most once a second per operation and message, with a count."""
    key = (operation, exc.message[:80])
    now = time.monotonic()
    if now - _error_logged_at.get(key, -_ERROR_LOG_SECONDS) >= _ERROR_LOG_SECONDS:
        _error_logged_at[key] = now
        if len(_error_logged_at) > 1000:
            _error_logged_at.clear()
        log.warning("%s answered %s %s: %s", operation, exc.status, exc.type, exc.message)


def make_app(ctx: RouterContext, verifier: SigV4Verifier) -> web.Application:
    metrics = RouterMetrics()

    async def handle(request: web.Request) -> web.Response:
        started = time.monotonic()
        operation = "unknown"
        try:
            check_declared_length(request)
            try:
                pending = verifier.check_headers(
                    request.method, request.raw_path, "", request.headers, datetime.now(UTC)
                )
                body = await read_body(request)
                verifier.check_body(pending, body)
            except AuthError as exc:
                raise DynamoError(exc.type, exc.message, exc.status) from None
            operation = _operation(request)
            handler = OPERATIONS.get(operation)
            if handler is None:
                raise DynamoError("UnknownOperationException", f"Unknown operation {operation}")
            payload = parse_json(body)
            check_members(operation, payload)
            with metering() as spent:
                result = await handler(ctx, payload)
            result.update(report(operation, payload, spent))
            outcome = "ok"
            response = _reply(result)
        except DynamoError as exc:
            outcome = exc.type
            if exc.type in ("ProvisionedThroughputExceededException", "ThrottlingException"):
                metrics.throttled.labels(str(_table_of(request))).inc()
            if exc.status >= 500:
                _note_server_error(operation, exc)
            response = _error(exc)
        except Exception:  # a bug must not take the router down; say so, and log it
            log.exception("internal error in %s", operation)
            outcome = "InternalServerError"
            response = _error(DynamoError.internal())
        if not request.content.is_eof():
            # Refused before its body was read: the rest of it must not be parsed as the next
            # request on this connection, so the connection ends with this reply.
            response.force_close()
        metrics.calls.observe(operation, outcome, time.monotonic() - started)
        return response

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "router": ctx.router_id,
                "resolver": ctx.describe_stats(),
                "unsafe": list(ctx.config.unsafe),  # TEST-ONLY broken modes, if any
            }
        )

    async def healthy(request: web.Request) -> web.Response:
        # DynamoDB's own health check: GET / answers without a signature.
        return web.Response(text=f"healthy: {request.host}", content_type="text/plain")

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

    app = web.Application()
    app.router.add_post("/", handle)
    app.router.add_get("/", healthy)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    app["metrics"] = metrics
    return app


class MalformedHttpLog(logging.Logger):
    """aiohttp's server log, given to its request handlers.

    A request aiohttp cannot parse (a bad request line, a header too long, a lying length) is
    the client's problem: it gets a 400 from aiohttp and one INFO line here, without the
    traceback aiohttp would log at ERROR. Anything else is still logged as aiohttp logs it.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            self.info("malformed HTTP: %s: %s", str(msg) % args, error.message or error)
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)


def _server_log() -> logging.Logger:
    server_log = MalformedHttpLog("cluster.router.http")
    server_log.parent = logging.getLogger("cluster.router")
    return server_log


IDLE_SECONDS = 4.0
"""How long a connection may sit without a complete request before it is closed: between
requests (idle keep-alive) and while its headers trickle in (slowloris), which aiohttp times
as one. Clients reconnect transparently; a closed idle connection costs one TCP handshake."""

SERVER_OPTIONS: dict[str, Any] = {
    "keepalive_timeout": IDLE_SECONDS,
    "lingering_time": 1.0,  # a refused body is drained at most this long, then dropped
    "auto_decompress": False,  # DynamoDB bodies are never compressed: no decompression bombs
    "max_line_size": 8190,
    "max_field_size": 8190,
    "max_headers": 100,
    "logger": _server_log(),
}
"""aiohttp server options for the router (``http_service(app, address, **SERVER_OPTIONS)``)."""


def _operation(request: web.Request) -> str:
    target = request.headers.get("X-Amz-Target", "")
    if not target.startswith(TARGET_PREFIX):
        raise DynamoError("UnknownOperationException", "Missing or unknown X-Amz-Target")
    return target[len(TARGET_PREFIX) :]


def _table_of(request: web.Request) -> str | None:
    return None  # the table is not re-parsed for metrics; counts are per router


_REQUEST_IDS = itertools.count()
_ID_PREFIX = secrets.token_hex(8).upper()


def _request_id() -> str:
    """Unique per request: a random per-process prefix and a counter (uuid4 per request read
    the OS's random source each time, a visible share of a request's CPU)."""
    return f"{_ID_PREFIX}{next(_REQUEST_IDS):016X}"


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON reply with the headers DynamoDB sends: its content type (no charset), a request
    id (boto3's ResponseMetadata.RequestId) and the CRC32 of the body (botocore checks it)."""
    data = json.dumps(body).encode()
    headers = {
        "Content-Type": CONTENT_TYPE,
        "x-amzn-RequestId": _request_id(),
        "x-amz-crc32": str(zlib.crc32(data) & 0xFFFFFFFF),
    }
    return web.Response(body=data, status=status, headers=headers)


def _error(exc: DynamoError) -> web.Response:
    return _reply(exc.body(), exc.status)
