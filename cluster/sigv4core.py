"""The parts of AWS Signature Version 4 that a signer and a verifier compute the same way.

Deliberately public and dependency-free (the standard library only, nothing of ours): the
router's verifier (``cluster/router/sigv4.py``) and the load generator's signer
(``workloads/sigv4.py``) both import it, so the signing key and the canonical URI have one
home. It is the one cluster module that ``workloads`` may import (workloads otherwise talk to
the cluster only through its public DynamoDB API); tests/test_architecture.py holds it to
importing nothing of ours.

    key = derive_signing_key("secret", "20261204", "us-east-1", "dynamodb")   # 32 bytes
    canonical_uri("/a/./b/../c//my%20table")   # -> "/a/c/my%2520table"
"""

from __future__ import annotations

import hmac
from typing import Final
from urllib.parse import quote

ALGORITHM: Final = "AWS4-HMAC-SHA256"
TERMINATOR: Final = "aws4_request"


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key: HMAC-SHA256 chained over date (YYYYMMDD), region, service and
    the ``aws4_request`` terminator."""
    key = utf8("AWS4" + secret)
    for part in (date, region, service, TERMINATOR):
        key = hmac.digest(key, utf8(part), "sha256")
    return key


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of a non-S3 request from its raw, percent-encoded path.

    Dot segments and empty segments are removed (a trailing slash is kept), then the path is
    percent-encoded once more ("encode twice"), leaving only unreserved characters and ``/`` bare.
    """
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    normalized = "/" + "/".join(segments)
    if segments and raw_path.endswith("/"):
        normalized += "/"
    return quote(normalized, safe="/~", errors="surrogateescape")


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; the lone surrogates of undecodable wire bytes turned back into them."""
    return text.encode("utf-8", "surrogateescape")
