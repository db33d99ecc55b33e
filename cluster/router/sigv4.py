"""Server-side AWS Signature Version 4 verification for the request router.

The router speaks the DynamoDB JSON protocol, so boto3 and the AWS CLI must work against it
unchanged, given only ``endpoint_url``, a region and one of the configured key pairs. This
module checks the ``Authorization: AWS4-HMAC-SHA256 ...`` header those clients send: it rebuilds
the canonical request from what arrived on the wire, derives the signing key from the secret
that belongs to the access key id, and compares signatures in constant time. Failures raise
:class:`AuthError` carrying DynamoDB's own error type, message and HTTP status, so clients see
the errors they would see from the real service.

Example (in an aiohttp handler)::

    verifier = SigV4Verifier({"AKIDGAMEDAY": "gameday-secret"})
    try:
        principal = verifier.verify(
            request.method,
            request.raw_path,  # as received, still percent-encoded; may include "?query"
            "",
            request.headers,
            await request.read(),
            datetime.now(UTC),
        )
    except AuthError as exc:
        return web.json_response(exc.as_body(), status=exc.status)
    # principal.access_key_id, principal.region

The router is region-agnostic: any region in the credential scope is accepted and handed back
in the :class:`Principal`. The service in the scope must be ``dynamodb`` (configurable).

Wire-format notes, matching what AWS does for services other than S3:

* ``path`` is the raw request path, percent-encoded as received. The canonical URI removes
  ``.``/``..`` segments and empty segments, then percent-encodes the result once more, which
  is the "encode twice" rule of SigV4 (clients encode once to put the path on the wire and
  again for the canonical request).
* ``query`` is the raw query string. Each name and value is decoded (``+`` meaning space, as
  in form encoding) and re-encoded with only the RFC 3986 unreserved characters left bare,
  then the pairs are sorted. (botocore sends query parameters form-encoded, with ``+`` for
  space, and signs them strictly encoded; this is what makes the two agree.)
* Canonical headers are the signed ones, lowercased, values trimmed with inner whitespace
  collapsed, repeats joined by commas; the ``SignedHeaders`` list itself is bound as sent.
* The payload is always hashed from ``body``; an ``X-Amz-Content-SHA256`` header must agree
  with it (``UNSIGNED-PAYLOAD`` is not accepted: DynamoDB requests carry signed bodies).
* ``X-Amz-Security-Token`` is not checked: the router has static keys only. If present it is
  covered by the signature like any other signed header.

Checks run in the order DynamoDB applies them, so the first problem reported is the same one
the real service reports.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from cluster.sigv4core import ALGORITHM, TERMINATOR, canonical_uri, derive_signing_key, utf8

__all__ = [
    "AuthError",
    "Credentials",
    "PendingSignature",
    "Principal",
    "SigV4Verifier",
    "canonical_headers",
    "canonical_query_string",
]

_AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_RE: Final = re.compile(r"\d{8}T\d{6}Z")
_AUTH_SPLIT_RE: Final = re.compile(r"[\s,]+")
_KEY_CACHE_LIMIT: Final = 1024

# Error types and fixed messages, as DynamoDB returns them.
MISSING_TOKEN: Final = "MissingAuthenticationTokenException"
UNRECOGNIZED_CLIENT: Final = "UnrecognizedClientException"
INVALID_SIGNATURE: Final = "InvalidSignatureException"
INCOMPLETE_SIGNATURE: Final = "IncompleteSignatureException"

_MSG_MISSING_TOKEN: Final = "Request is missing Authentication Token"
_MSG_UNRECOGNIZED: Final = "The security token included in the request is invalid."
_MSG_MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
_ERROR_NAMESPACE: Final = "com.amazon.coral.service#"


class AuthError(Exception):
    """A request failed authentication.

    ``type`` is the DynamoDB error type (e.g. ``InvalidSignatureException``), ``message`` the
    client-facing text and ``status`` the HTTP status to answer with. ``detail`` optionally
    carries server-side diagnostics (for a signature mismatch: the canonical request and the
    string to sign that were computed); log it, do not send it.
    """

    def __init__(self, type: str, message: str, status: int = 400, *, detail: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.status = status
        self.detail = detail

    def as_body(self) -> dict[str, str]:
        """The JSON error body DynamoDB sends for this error (``__type`` and ``message``)."""
        return {"__type": _ERROR_NAMESPACE + self.type, "message": self.message}


@dataclass(frozen=True)
class Credentials:
    """One access key pair. The secret is kept out of ``repr``."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class Principal:
    """Who signed a verified request, and the region named in its credential scope."""

    access_key_id: str
    region: str


@dataclass(frozen=True)
class PendingSignature:
    """A request whose headers passed every check; only the signature over the body is left.

    Opaque to callers: hand it to :meth:`SigV4Verifier.check_body` with the body.
    """

    method: str
    path: str
    query: str
    received: Mapping[str, list[str]]
    signed_headers: str
    signed_names: tuple[str, ...]
    amz_date: str
    scope: str
    key: bytes = field(repr=False)
    signature: str
    principal: Principal


class SigV4Verifier:
    """Verifies SigV4 ``Authorization`` headers against a fixed set of key pairs.

    ``credentials`` maps access key id to secret access key; it is copied, so later changes
    to the mapping do not affect the verifier. ``max_skew_seconds`` bounds how far the
    request's ``X-Amz-Date`` may be from the server's clock in either direction (AWS: 15 min).
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        service: str = "dynamodb",
        max_skew_seconds: int = 900,
    ) -> None:
        if max_skew_seconds <= 0:
            raise ValueError("max_skew_seconds must be positive")
        if not service:
            raise ValueError("service must be non-empty")
        self._secrets: dict[str, str] = dict(credentials)
        self._service = service
        self._max_skew = timedelta(seconds=max_skew_seconds)
        self._key_cache: dict[tuple[str, str, str, str], bytes] = {}

    @classmethod
    def from_credentials(
        cls,
        credentials: Iterable[Credentials],
        *,
        service: str = "dynamodb",
        max_skew_seconds: int = 900,
    ) -> SigV4Verifier:
        """Build a verifier from :class:`Credentials` objects."""
        return cls(
            {c.access_key_id: c.secret_access_key for c in credentials},
            service=service,
            max_skew_seconds=max_skew_seconds,
        )

    @property
    def service(self) -> str:
        return self._service

    def verify(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime,
    ) -> Principal:
        """Authenticate one request; return its :class:`Principal` or raise :class:`AuthError`.

        ``path`` is the raw (percent-encoded) request path; it may also be the whole request
        target with ``?query`` attached, in which case ``query`` must be empty. ``headers`` may
        be a plain dict or a case-insensitive multi-dict (aiohttp's ``request.headers``);
        names are matched case-insensitively and repeated headers are joined with commas.
        ``now`` is the server's clock; a naive datetime is taken to be UTC.

        The same as :meth:`check_headers` followed by :meth:`check_body`.
        """
        return self.check_body(self.check_headers(method, path, query, headers, now), body)

    def check_headers(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        now: datetime,
    ) -> PendingSignature:
        """Every check that needs no body: the Authorization header's shape, the date and its
        skew, the scope, the access key and the signed headers' presence.

        A server calls this before it reads the body, so a request from an unknown key, with
        a stale date or a wrong scope costs it no body bytes; :meth:`check_body` finishes.
        """
        path, query = _split_target(path, query)
        received = _collect_headers(headers)

        auth_values = received.get("authorization")
        auth = auth_values[0].strip() if auth_values else ""
        if not auth.startswith("AWS4-"):
            raise AuthError(MISSING_TOKEN, _MSG_MISSING_TOKEN)
        if auth_values is not None and len(auth_values) > 1:
            raise AuthError(INCOMPLETE_SIGNATURE, "Only one Authorization header is allowed.")

        algorithm, params = _parse_authorization(auth)

        # 1. Required parameters and a date header.
        date_values = received.get("x-amz-date") or received.get("date")
        amz_date = date_values[0].strip() if date_values else ""
        missing = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if not params.get(name) and not (name == "SignedHeaders" and name in params)
        ]
        if not amz_date:
            missing.append(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                "header."
            )
        if missing:
            raise AuthError(INCOMPLETE_SIGNATURE, " ".join([*missing, f"Authorization={auth}"]))

        # 2. Date format, then the skew window.
        request_time = _parse_amz_date(amz_date)
        self._check_skew(amz_date, request_time, now)

        # 3. Host must be signed.
        # The signed-headers line is used exactly as sent; clients send it lowercased and sorted.
        signed_headers = params["SignedHeaders"]
        signed_names = [n.strip().lower() for n in signed_headers.split(";") if n.strip()]
        if "host" not in signed_names:
            raise AuthError(
                INVALID_SIGNATURE, "'Host' must be a 'SignedHeader' in the AWS Authorization."
            )

        # 4. Algorithm.
        if algorithm != ALGORITHM:
            raise AuthError(
                INCOMPLETE_SIGNATURE,
                f"Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} for now).",
            )

        # 5. Credential shape, then every part of its scope.
        credential = params["Credential"]
        parts = credential.rstrip("/").split("/")
        if len(parts) != 5:
            raise AuthError(
                INCOMPLETE_SIGNATURE,
                "Credential must have exactly 5 slash-delimited elements, "
                f"e.g. keyid/date/region/service/term, got '{credential}'",
            )
        key_id, scope_date, region, service, terminator = parts
        self._check_scope(scope_date, region, service, terminator, amz_date)

        # 6. The access key.
        secret = self._secrets.get(key_id)
        if secret is None:
            raise AuthError(UNRECOGNIZED_CLIENT, _MSG_UNRECOGNIZED)

        # 7. Every signed header is there.
        for name in signed_names:
            if name not in received:
                raise AuthError(
                    INCOMPLETE_SIGNATURE,
                    f"'{name}' is named as a SignedHeader, but it does not exist in the HTTP "
                    "request.",
                )
        return PendingSignature(
            method=method.upper(),
            path=path,
            query=query,
            received=received,
            signed_headers=signed_headers,
            signed_names=tuple(signed_names),
            amz_date=amz_date,
            scope=f"{scope_date}/{region}/{service}/{terminator}",
            key=self._signing_key(secret, scope_date, region),
            signature=params["Signature"],
            principal=Principal(access_key_id=key_id, region=region),
        )

    def check_body(self, pending: PendingSignature, body: bytes) -> Principal:
        """The signature itself, over the headers :meth:`check_headers` accepted and ``body``."""
        payload_hash = hashlib.sha256(body).hexdigest()
        declared = pending.received.get("x-amz-content-sha256")
        if declared is not None and declared[0].strip() != payload_hash:
            raise AuthError(
                INVALID_SIGNATURE,
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )

        canonical_request = "\n".join(
            [
                pending.method,
                canonical_uri(pending.path),
                canonical_query_string(pending.query),
                canonical_headers(pending.received, pending.signed_names),
                pending.signed_headers,
                payload_hash,
            ]
        )
        string_to_sign = "\n".join(
            [
                ALGORITHM,
                pending.amz_date,
                pending.scope,
                hashlib.sha256(utf8(canonical_request)).hexdigest(),
            ]
        )
        expected = hmac.digest(pending.key, utf8(string_to_sign), "sha256").hex()
        if not hmac.compare_digest(expected.encode("ascii"), utf8(pending.signature)):
            raise AuthError(
                INVALID_SIGNATURE,
                _MSG_MISMATCH,
                detail=(
                    f"canonical request:\n{canonical_request}\n\nstring to sign:\n{string_to_sign}"
                ),
            )
        return pending.principal

    def _check_skew(self, amz_date: str, request_time: datetime, now: datetime) -> None:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        earliest = now - self._max_skew
        latest = now + self._max_skew
        if request_time < earliest:
            raise AuthError(
                INVALID_SIGNATURE,
                f"Signature expired: {amz_date} is now earlier than {_fmt(earliest)} "
                f"({_fmt(now)} - {_format_window(self._max_skew)}.)",
            )
        if request_time > latest:
            raise AuthError(
                INVALID_SIGNATURE,
                f"Signature not yet current: {amz_date} is still later than {_fmt(latest)} "
                f"({_fmt(now)} + {_format_window(self._max_skew)}.)",
            )

    def _check_scope(
        self, scope_date: str, region: str, service: str, terminator: str, amz_date: str
    ) -> None:
        problems: list[str] = []
        if not region or any(ch.isspace() for ch in region):
            problems.append(f"Credential should be scoped to a valid region, not '{region}'.")
        if service != self._service:
            problems.append(f"Credential should be scoped to correct service: '{self._service}'.")
        if terminator != TERMINATOR:
            problems.append(
                "Credential should be scoped with a valid terminator: "
                f"'{TERMINATOR}', not '{terminator}'."
            )
        if scope_date != amz_date[:8]:
            problems.append(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                f"from HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        if problems:
            raise AuthError(INVALID_SIGNATURE, " ".join(problems))

    def _signing_key(self, secret: str, date: str, region: str) -> bytes:
        cache_key = (secret, date, region, self._service)
        key = self._key_cache.get(cache_key)
        if key is None:
            if len(self._key_cache) >= _KEY_CACHE_LIMIT:
                self._key_cache.clear()
            key = derive_signing_key(secret, date, region, self._service)
            self._key_cache[cache_key] = key
        return key


def canonical_query_string(raw_query: str) -> str:
    """Canonical query string from the raw query: decode, re-encode strictly, sort."""
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((_reencode(name), _reencode(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_headers(received: Mapping[str, list[str]], signed_names: Iterable[str]) -> str:
    """Canonical headers block (each ``name:value`` line newline-terminated).

    ``received`` maps lowercase header names to every value received for them; values are
    trimmed, inner runs of whitespace collapsed to one space, and repeats joined by commas.
    """
    lines = []
    for name in signed_names:
        values = received.get(name, [])
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def _split_target(path: str, query: str) -> tuple[str, str]:
    if "?" in path:
        if query:
            raise ValueError("query given both inside path and separately")
        path, _, query = path.partition("?")
    return path, query


def _collect_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    # items() yields every (name, value) pair of a multi-dict, once per key of a plain dict.
    collected: dict[str, list[str]] = {}
    for name, value in headers.items():
        collected.setdefault(name.lower(), []).append(value)
    return collected


def _parse_authorization(auth: str) -> tuple[str, dict[str, str]]:
    algorithm, _, rest = auth.partition(" ")
    params: dict[str, str] = {}
    for token in _AUTH_SPLIT_RE.split(rest):
        if not token:
            continue
        name, eq, value = token.partition("=")
        if not eq:
            raise AuthError(
                INCOMPLETE_SIGNATURE,
                f"'{token}' not a valid key=value pair (missing equal-sign) in Authorization "
                f"header: '{auth}'.",
            )
        params.setdefault(name, value)
    return algorithm.strip(), params


_DATE_CACHE: dict[str, datetime] = {}


def _parse_amz_date(value: str) -> datetime:
    # Every request carries one; clients sign many per second with the same one, and strptime
    # costs more than the rest of the header checks together: parsed dates are kept (a few).
    cached = _DATE_CACHE.get(value)
    if cached is not None:
        return cached
    if _AMZ_DATE_RE.fullmatch(value):
        try:
            parsed = datetime.strptime(value, _AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
        else:
            if len(_DATE_CACHE) >= 64:
                _DATE_CACHE.clear()
            _DATE_CACHE[value] = parsed
            return parsed
    raise AuthError(
        INCOMPLETE_SIGNATURE,
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601",
    )


def _reencode(component: str) -> str:
    raw = unquote_to_bytes(utf8(component.replace("+", " ")))
    return quote(raw, safe="-_.~")


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_AMZ_DATE_FORMAT)


def _format_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} sec"
