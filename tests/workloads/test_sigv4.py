"""The load generator's SigV4 signer produces exactly botocore's headers, and the router accepts
them: many requests (operations, bodies, endpoints, instants across second and day boundaries,
regions and secrets), each signed by both and compared byte for byte."""

from __future__ import annotations

import datetime
import json
import random
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cluster.router.sigv4 import SigV4Verifier
from cluster.sigv4core import canonical_uri
from workloads.sigv4 import SigV4Signer, host_header

OPERATIONS = ["GetItem", "PutItem", "UpdateItem", "Query", "DeleteItem", "TransactWriteItems"]
ENDPOINTS = [
    "http://127.20.1.100:8000",
    "http://127.0.0.1:8000/",
    "http://LOCALHOST:80",
    "https://example.test:443/",
    "https://example.test:8443",
    "http://[::1]:8000",
    "http://127.0.0.1:9000/a/./b/../c/",
]


def botocore_headers(
    endpoint: str, access: str, secret: str, region: str, op: str, body: bytes, now: float
) -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url=endpoint.rstrip("/") + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"DynamoDB_20120810.{op}",
        },
    )
    instant = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=instant):
        SigV4Auth(Credentials(access, secret), "dynamodb", region).add_auth(request)
    return dict(request.headers.items())


def random_body(rng: random.Random) -> bytes:
    value = "".join(rng.choice('ab yé😀\n"\\') for _ in range(rng.randrange(0, 40)))
    item = {"k": {"S": f"r{rng.randrange(1000)}"}, "v": {"S": value}}
    return json.dumps({"TableName": "t", "Item": item}).encode() if rng.random() < 0.95 else b""


def test_signatures_are_botocores_on_many_requests() -> None:
    rng = random.Random(15)
    day = 86_400
    base = 1_796_000_000.0  # late 2026
    signers: dict[tuple[str, str, str, str], SigV4Signer] = {}
    for i in range(1500):
        endpoint = rng.choice(ENDPOINTS)
        access = rng.choice(["gameday", "AKIDEXAMPLE"])
        secret = rng.choice(["s3cr3t", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "ü"])
        region = rng.choice(["us-east-1", "eu-west-3"])
        # mostly moving forward through seconds and days (the caches), sometimes back in time
        now = base + i * rng.choice([0.0, 0.4, 1.0, 977.3]) + rng.choice([0, day, -day])
        op = rng.choice(OPERATIONS)
        body = random_body(rng)
        signer = signers.setdefault(
            (endpoint, access, secret, region), SigV4Signer(endpoint, access, secret, region)
        )
        ours = signer.headers(op, body, now=now)
        theirs = botocore_headers(endpoint, access, secret, region, op, body, now)
        assert ours == theirs, f"request {i}: {endpoint} {op} at {now}"
        assert list(ours) == list(theirs)


def test_a_fresh_signer_and_a_long_lived_one_agree_across_midnight() -> None:
    midnight = 1_796_083_200.0  # 2026-12-01T00:00:00Z
    long_lived = SigV4Signer("http://127.0.0.1:8000", "gameday", "secret")
    for now in (midnight - 1.5, midnight - 0.2, midnight, midnight + 0.7, midnight + 86_400):
        fresh = SigV4Signer("http://127.0.0.1:8000", "gameday", "secret")
        assert long_lived.headers("GetItem", b"{}", now) == fresh.headers("GetItem", b"{}", now)


def test_the_router_verifies_what_the_signer_signs() -> None:
    signer = SigV4Signer("http://127.0.0.1:8000", "gameday", "secret")
    verifier = SigV4Verifier({"gameday": "secret"})
    now = datetime.datetime.now(datetime.UTC)
    body = b'{"TableName":"t","Key":{"k":{"S":"r1"}}}'
    headers = {**signer.headers("GetItem", body), "Host": "127.0.0.1:8000"}
    principal = verifier.verify("POST", "/", "", headers, body, now)
    assert principal.access_key_id == "gameday"
    tampered = body.replace(b"r1", b"r2")
    with pytest.raises(Exception, match="signature"):
        verifier.verify("POST", "/", "", headers, tampered, now)


@pytest.mark.parametrize(
    ("endpoint", "host", "path"),
    [
        ("http://127.0.0.1:80/", "127.0.0.1", "/"),
        ("https://H.example:443", "h.example", "/"),
        ("http://h:1/a/./b/../c", "h:1", "/a/c"),
        ("http://[::1]:8000/x//y/", "[::1]:8000", "/x/y/"),
    ],
)
def test_host_and_path_as_botocore_canonicalises_them(endpoint: str, host: str, path: str) -> None:
    assert host_header(endpoint) == host
    assert canonical_uri(urlsplit(endpoint).path) == path
