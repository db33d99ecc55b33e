"""The request router's HTTP front end: DynamoDB's JSON protocol, authenticated with SigV4.

``POST /`` with ``X-Amz-Target: DynamoDB_20120810.<Operation>`` and a JSON body; the reply is
JSON with DynamoDB's error types and HTTP statuses, so boto3 and the AWS CLI work unchanged.
Nothing a client sends can crash the router: unexpected failures become InternalServerError.

    app = make_app(ctx, verifier)     # aiohttp Application
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from . import items, reads, tables
from .context import RouterContext
from .errors import DynamoError
from .sigv4 import AuthError, SigV4Verifier

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # DynamoDB's request size limit
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


def make_app(ctx: RouterContext, verifier: SigV4Verifier) -> web.Application:
    metrics = RouterMetrics()

    async def handle(request: web.Request) -> web.Response:
        started = time.monotonic()
        operation = "unknown"
        try:
            body = await _body(request)
            try:
                verifier.verify(
                    request.method, request.raw_path, "", request.headers, body, datetime.now(UTC)
                )
            except AuthError as exc:
                raise DynamoError(exc.type, exc.message, exc.status) from None
            operation = _operation(request)
            handler = OPERATIONS.get(operation)
            if handler is None:
                raise DynamoError("UnknownOperationException", f"Unknown operation {operation}")
            payload = _parse_json(body)
            result = await handler(ctx, payload)
            outcome = "ok"
            response = _reply(result)
        except DynamoError as exc:
            outcome = exc.type
            if exc.type in ("ProvisionedThroughputExceededException", "ThrottlingException"):
                metrics.throttled.labels(str(_table_of(request))).inc()
            response = _error(exc)
        except Exception:  # a bug must not take the router down; say so, and log it
            log.exception("internal error in %s", operation)
            outcome = "InternalServerError"
            response = _error(DynamoError.internal())
        metrics.requests.labels(operation, outcome).inc()
        metrics.latency.labels(operation).observe(time.monotonic() - started)
        return response

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "router": ctx.router_id, "resolver": ctx.describe_stats()}
        )

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

    app = web.Application(client_max_size=MAX_REQUEST_BYTES + 1024)
    app.router.add_post("/", handle)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    app["metrics"] = metrics
    return app


async def _body(request: web.Request) -> bytes:
    """The request body, or ValidationException (400) when it is over DynamoDB's 16 MB limit.

    aiohttp refuses a body over ``client_max_size`` with its own HTTPException, which must not
    surface as an InternalServerError; a declared length over the limit is refused unread.
    """
    too_big = DynamoError.validation("Request size exceeds the limit of 16 MB")
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise too_big
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_big from None
    if len(body) > MAX_REQUEST_BYTES:
        raise too_big
    return body


def _operation(request: web.Request) -> str:
    target = request.headers.get("X-Amz-Target", "")
    if not target.startswith(TARGET_PREFIX):
        raise DynamoError("UnknownOperationException", "Missing or unknown X-Amz-Target")
    return target[len(TARGET_PREFIX) :]


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included;
        # RecursionError: nesting deeper than the parser goes; ValueError: e.g. a huge integer
        raise DynamoError(
            "SerializationException",
            "Start of structure or map found where not expected, or the body is not valid JSON",
        ) from None
    if not isinstance(payload, dict):
        raise DynamoError("SerializationException", "The request body must be a JSON object")
    return payload


def _table_of(request: web.Request) -> str | None:
    return None  # the table is not re-parsed for metrics; counts are per router


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON reply with the headers DynamoDB sends: its content type (no charset), a request
    id (boto3's ResponseMetadata.RequestId) and the CRC32 of the body (botocore checks it)."""
    data = json.dumps(body).encode()
    headers = {
        "Content-Type": CONTENT_TYPE,
        "x-amzn-RequestId": uuid.uuid4().hex.upper(),
        "x-amz-crc32": str(zlib.crc32(data) & 0xFFFFFFFF),
    }
    return web.Response(body=data, status=status, headers=headers)


def _error(exc: DynamoError) -> web.Response:
    return _reply(exc.body(), exc.status)
