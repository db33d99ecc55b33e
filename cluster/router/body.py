"""A request body as the router accepts it: bounded in size and in time, then strict JSON.

Nothing a client sends (or does not send) may hold the router: the declared length is checked
before a byte of the body is read, every read waits at most ``BODY_IDLE_SECONDS`` for the next
bytes, and the whole body must arrive within a deadline that grows with its declared size. The
JSON must be UTF-8 and may hold no lone surrogate (``"\\ud800"``) anywhere, in keys or values:
such a request is a SerializationException here, so no handler ever meets a string it cannot
encode.

    body = await read_body(request)     # bytes, or DynamoError (400 too big, 408 too slow)
    payload = parse_json(body)          # dict, or DynamoError (400 SerializationException)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .errors import DynamoError

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # DynamoDB's request size limit
BODY_IDLE_SECONDS = 2.0  # the longest wait for the next bytes of a body
BODY_BASE_SECONDS = 3.0  # every body may take this long, plus its size at BODY_MIN_RATE
BODY_MIN_RATE = 1024 * 1024  # bytes per second a client must at least manage

_NOT_JSON = "Start of structure or map found where not expected, or the body is not valid JSON"


def too_big() -> DynamoError:
    return DynamoError.validation("Request size exceeds the limit of 16 MB")


def check_declared_length(request: web.BaseRequest) -> None:
    """Refuse, unread, a body whose Content-Length is over the limit."""
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise too_big()


async def read_body(request: web.BaseRequest) -> bytes:
    """The whole body, read under the size limit, the idle timeout and the body deadline.

    A client that stops sending (a Content-Length that promises more than comes) or sends too
    slowly gets 408 RequestTimeoutException; one that closes early gets a 400.
    """
    check_declared_length(request)
    if request.content.is_eof():
        # The whole body arrived with the headers (most requests: a few hundred bytes): take
        # it as it is, without arming the per-read timeout for a wait that cannot happen.
        try:
            body = request.content.read_nowait(-1)
        except (web.RequestPayloadError, ConnectionError) as exc:
            raise DynamoError(
                "SerializationException", f"The request body is incomplete: {exc}"
            ) from None
        if len(body) > MAX_REQUEST_BYTES:
            raise too_big()
        return body
    declared = request.content_length
    loop = asyncio.get_running_loop()
    budget = BODY_BASE_SECONDS + (MAX_REQUEST_BYTES if declared is None else declared) / (
        BODY_MIN_RATE
    )
    deadline = loop.time() + budget
    chunks: list[bytes] = []
    size = 0
    while True:
        wait = min(BODY_IDLE_SECONDS, deadline - loop.time())
        try:
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                chunk = await request.content.readany()
        except TimeoutError:
            raise DynamoError(
                "RequestTimeoutException",
                f"The request body did not arrive in time: {size} bytes received"
                + (f" of the {declared} its Content-Length promised" if declared else "")
                + (
                    f"; no bytes for {BODY_IDLE_SECONDS:g} s"
                    if wait >= BODY_IDLE_SECONDS
                    else f"; the whole body is due within {budget:.0f} s"
                ),
                status=408,
            ) from None
        except (web.RequestPayloadError, ConnectionError) as exc:
            raise DynamoError(
                "SerializationException", f"The request body is incomplete: {exc}"
            ) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise too_big()
        chunks.append(chunk)


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object: strict UTF-8, no NaN or Infinity, no lone surrogates."""
    try:
        text = body.decode("utf-8") if body else "{}"
        payload = _DECODER.decode(text)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included;
        # RecursionError: nesting deeper than the parser goes; ValueError: e.g. a huge integer
        raise DynamoError("SerializationException", _NOT_JSON) from None
    if not isinstance(payload, dict):
        raise DynamoError("SerializationException", "The request body must be a JSON object")
    # A lone surrogate can only come from a \u escape, so most bodies skip the walk.
    if "\\u" in text:
        _check_encodable(payload)
    return payload


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every body: json.loads with any option builds a new JSONDecoder per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _check_encodable(payload: dict[str, Any]) -> None:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise DynamoError(
            "SerializationException",
            f"The request holds a string that is not valid Unicode: lone surrogate {bad}",
        ) from None
    except RecursionError:
        raise DynamoError("SerializationException", _NOT_JSON) from None
