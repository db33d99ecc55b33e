"""SigV4 verification against requests signed by botocore's own signer (boto3's and the CLI's).

Requests are built the way botocore puts them on the wire: ``AWSRequest`` signed by
``SigV4Auth``, then prepared; the verifier sees the prepared URL's raw path and query, the
prepared headers plus the ``Host`` header the HTTP client adds, and the body bytes. ``now`` is
frozen at the signed ``X-Amz-Date`` unless a test moves it. Two end-to-end tests run a real
boto3 client and the real AWS CLI against a tiny aiohttp router on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError
from multidict import CIMultiDict

from cluster.router import sigv4
from cluster.router.sigv4 import (
    AuthError,
    Credentials,
    Principal,
    SigV4Verifier,
    canonical_query_string,
)
from cluster.sigv4core import canonical_uri, derive_signing_key

KEY_ID = "AKIDGAMEDAY"
SECRET = "gameday/secret+KEY=="
OTHER_KEY_ID = "AKIDOTHER"
OTHER_SECRET = "another-secret"
CREDS = {KEY_ID: SECRET, OTHER_KEY_ID: OTHER_SECRET}
ENDPOINT = "http://127.0.0.1:8000/"
REGION = "eu-west-1"
PUT_ITEM = json.dumps(
    {"TableName": "orders", "Item": {"pk": {"S": "k1"}, "v": {"N": "1"}}},
    separators=(",", ":"),
).encode()

MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(frozen=True)
class Wire:
    """One request as the router receives it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    now: datetime

    def with_header(self, name: str, value: str | None) -> Wire:
        headers = {k: v for k, v in self.headers.items() if k.lower() != name.lower()}
        if value is not None:
            headers[name] = value
        return replace(self, headers=headers)

    def auth(self) -> str:
        return self.headers["Authorization"]

    def with_auth(self, old: str, new: str) -> Wire:
        assert old in self.auth()
        return self.with_header("Authorization", self.auth().replace(old, new))


def sign(
    url: str = ENDPOINT,
    *,
    body: bytes = PUT_ITEM,
    method: str = "POST",
    region: str = REGION,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    service: str = "dynamodb",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Wire:
    """Sign with botocore's SigV4Auth and return what goes on the wire."""
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        params=params or {},
        headers=headers
        if headers is not None
        else {
            "X-Amz-Target": "DynamoDB_20120810.PutItem",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    SigV4Auth(BotoCredentials(key_id, secret), service, region).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    wire_headers = dict(prepared.headers.items())
    wire_headers.setdefault("Host", parts.netloc)  # added by the HTTP client, as botocore signs
    now = datetime.strptime(wire_headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    body_bytes = prepared.body or b""
    return Wire(prepared.method, parts.path, parts.query, wire_headers, body_bytes, now)


def verify(wire: Wire, verifier: SigV4Verifier | None = None) -> Principal:
    verifier = verifier or SigV4Verifier(CREDS)
    return verifier.verify(wire.method, wire.path, wire.query, wire.headers, wire.body, wire.now)


def rejected(wire: Wire, verifier: SigV4Verifier | None = None) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify(wire, verifier)
    assert info.value.status == 400
    return info.value


# -- success -------------------------------------------------------------------------------


def test_botocore_signed_put_item_verifies() -> None:
    assert verify(sign()) == Principal(access_key_id=KEY_ID, region=REGION)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "local", "gameday-az-a"])
def test_any_region_is_accepted_and_returned(region: str) -> None:
    assert verify(sign(region=region)).region == region


def test_each_configured_key_is_recognized() -> None:
    principal = verify(sign(key_id=OTHER_KEY_ID, secret=OTHER_SECRET))
    assert principal.access_key_id == OTHER_KEY_ID


def test_header_lookup_is_case_insensitive_for_dicts_and_multidicts() -> None:
    wire = sign()
    lowered = replace(wire, headers={k.lower(): v for k, v in wire.headers.items()})
    uppered = replace(wire, headers={k.upper(): v for k, v in wire.headers.items()})
    multi = replace(wire, headers=CIMultiDict(wire.headers))  # type: ignore[arg-type]
    for variant in (lowered, uppered, multi):
        assert verify(variant).access_key_id == KEY_ID


def test_empty_body_verifies() -> None:
    assert verify(sign(body=b"")).access_key_id == KEY_ID


def test_naive_now_is_taken_as_utc() -> None:
    wire = sign()
    assert verify(replace(wire, now=wire.now.replace(tzinfo=None))).region == REGION


def test_signing_keys_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    real = sigv4.derive_signing_key

    def counting(secret: str, date: str, region: str, service: str) -> bytes:
        calls.append((date, region, service))
        return real(secret, date, region, service)

    monkeypatch.setattr(sigv4, "derive_signing_key", counting)
    verifier = SigV4Verifier(CREDS)
    for _ in range(3):
        verify(sign(), verifier)
    verify(sign(region="us-west-2"), verifier)
    assert [region for _, region, _ in calls] == [REGION, "us-west-2"]


def test_from_credentials_and_secret_kept_out_of_repr() -> None:
    creds = Credentials(KEY_ID, SECRET)
    assert SECRET not in repr(creds)
    verifier = SigV4Verifier.from_credentials([creds])
    assert verify(sign(), verifier).access_key_id == KEY_ID


# -- tampering and wrong keys --------------------------------------------------------------


def test_tampered_body_is_an_invalid_signature() -> None:
    wire = sign()
    error = rejected(replace(wire, body=wire.body.replace(b'"1"', b'"2"')))
    assert (error.type, error.message) == ("InvalidSignatureException", MISMATCH)
    assert "canonical request:" in error.detail and "string to sign:" in error.detail


def test_tampered_signed_header_is_an_invalid_signature() -> None:
    wire = sign().with_header("X-Amz-Target", "DynamoDB_20120810.DeleteItem")
    assert rejected(wire).type == "InvalidSignatureException"


def test_unsigned_headers_may_change() -> None:
    wire = sign(
        headers={
            "X-Amz-Target": "DynamoDB_20120810.PutItem",
            "Content-Type": "application/x-amz-json-1.0",
            "User-Agent": "Boto3/1.34.0",
        }
    )
    assert "user-agent" not in wire.auth()  # botocore never signs the user agent
    assert verify(wire.with_header("User-Agent", "something else")).region == REGION
    assert verify(wire.with_header("X-Forwarded-For", "10.0.0.1")).region == REGION


def test_tampered_method_is_an_invalid_signature() -> None:
    assert rejected(replace(sign(), method="PUT")).type == "InvalidSignatureException"


def test_wrong_secret_is_an_invalid_signature() -> None:
    error = rejected(sign(secret="not-the-secret"))
    assert (error.type, error.message) == ("InvalidSignatureException", MISMATCH)


def test_unknown_access_key_is_unrecognized() -> None:
    error = rejected(sign(key_id="AKIDNOBODY"))
    assert error.type == "UnrecognizedClientException"
    assert error.message == "The security token included in the request is invalid."


def test_headers_alone_decide_everything_but_the_signature() -> None:
    """check_headers needs no body: a server refuses unknown keys, stale dates and wrong
    scopes before it reads one; check_body then checks the signature over the body."""
    verifier = SigV4Verifier(CREDS)
    stale = sign()
    for wire, expected in [
        (sign(key_id="AKIDNOBODY"), "UnrecognizedClientException"),
        (sign(service="s3"), "InvalidSignatureException"),
        (replace(stale, now=stale.now + timedelta(hours=1)), "InvalidSignatureException"),
    ]:
        with pytest.raises(AuthError) as info:
            verifier.check_headers(wire.method, wire.path, wire.query, wire.headers, wire.now)
        assert info.value.type == expected
    wire = sign()
    pending = verifier.check_headers(wire.method, wire.path, wire.query, wire.headers, wire.now)
    assert repr(pending.key) not in repr(pending)  # the signing key stays out of logs
    assert verifier.check_body(pending, wire.body) == Principal(KEY_ID, REGION)
    with pytest.raises(AuthError) as info:
        verifier.check_body(pending, wire.body + b" ")
    assert info.value.type == "InvalidSignatureException"


def test_signature_swapped_between_keys_is_rejected() -> None:
    mine, theirs = sign(), sign(key_id=OTHER_KEY_ID, secret=OTHER_SECRET)
    forged = mine.with_auth(KEY_ID + "/", OTHER_KEY_ID + "/")
    assert rejected(forged).type == "InvalidSignatureException"
    assert verify(theirs).access_key_id == OTHER_KEY_ID


def test_non_hex_signature_is_an_invalid_signature() -> None:
    wire = sign()
    signature = wire.auth().rsplit("Signature=", 1)[1]
    assert rejected(wire.with_auth(signature, "zz\u00e9" + signature[3:])).message == MISMATCH


# -- missing and malformed authorization -----------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "Bearer abc", "AWS AKID:sig"])
def test_missing_authorization_is_a_missing_token(value: str | None) -> None:
    error = rejected(sign().with_header("Authorization", value))
    assert error.type == "MissingAuthenticationTokenException"
    assert error.message == "Request is missing Authentication Token"


@pytest.mark.parametrize("part", ["Credential", "SignedHeaders", "Signature"])
def test_missing_authorization_part_is_an_incomplete_signature(part: str) -> None:
    wire = sign()
    params = [p.strip() for p in wire.auth().split(" ", 1)[1].split(",")]
    kept = ", ".join(p for p in params if not p.startswith(part + "="))
    broken = wire.with_header("Authorization", "AWS4-HMAC-SHA256 " + kept)
    error = rejected(broken)
    assert error.type == "IncompleteSignatureException"
    assert f"Authorization header requires '{part}' parameter." in error.message
    assert error.message.endswith("Authorization=" + broken.auth())


def test_token_without_equal_sign_is_an_incomplete_signature() -> None:
    wire = sign()
    broken = wire.with_auth("Credential=", "Credential= ")
    error = rejected(broken)
    assert error.type == "IncompleteSignatureException"
    assert "not a valid key=value pair (missing equal-sign)" in error.message
    assert f"'{KEY_ID}/" in error.message


def test_unsupported_algorithm_is_an_incomplete_signature() -> None:
    error = rejected(sign().with_auth("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA512 "))
    assert error.type == "IncompleteSignatureException"
    assert error.message == (
        "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now)."
    )


def test_credential_without_five_parts_is_an_incomplete_signature() -> None:
    error = rejected(sign().with_auth("/aws4_request", ""))
    assert error.type == "IncompleteSignatureException"
    assert error.message.startswith("Credential must have exactly 5 slash-delimited elements")
    assert f"got '{KEY_ID}/" in error.message


def test_host_must_be_signed() -> None:
    wire = sign()
    error = rejected(wire.with_auth("host;", ""))
    assert error.type == "InvalidSignatureException"
    assert error.message == "'Host' must be a 'SignedHeader' in the AWS Authorization."
    assert rejected(wire.with_auth("SignedHeaders=", "SignedHeaders=;")).message == MISMATCH


def test_signed_headers_list_is_bound_as_sent() -> None:
    wire = sign()
    signed = wire.auth().split("SignedHeaders=", 1)[1].split(",", 1)[0]
    reordered = ";".join(reversed(signed.split(";")))
    assert rejected(wire.with_auth(signed, reordered)).message == MISMATCH
    assert rejected(wire.with_auth(signed, signed.upper())).message == MISMATCH


def test_signed_header_absent_from_request_is_an_incomplete_signature() -> None:
    error = rejected(sign().with_header("X-Amz-Target", None))
    assert error.type == "IncompleteSignatureException"
    assert error.message == (
        "'x-amz-target' is named as a SignedHeader, but it does not exist in the HTTP request."
    )


def test_duplicate_authorization_headers_are_rejected() -> None:
    wire = sign()
    headers = CIMultiDict(wire.headers)
    headers.add("authorization", wire.auth())
    error = rejected(replace(wire, headers=headers))  # type: ignore[arg-type]
    assert error.type == "IncompleteSignatureException"


def test_scope_for_another_service_names_the_expected_one() -> None:
    error = rejected(sign(service="sts"))
    assert error.type == "InvalidSignatureException"
    assert error.message == "Credential should be scoped to correct service: 'dynamodb'."


def test_verifier_for_another_service() -> None:
    verifier = SigV4Verifier(CREDS, service="dynamodbstreams")
    assert verify(sign(service="dynamodbstreams"), verifier).region == REGION
    assert "'dynamodbstreams'" in rejected(sign(), verifier).message


def test_bad_terminator_and_scope_date_are_reported_together() -> None:
    wire = sign()
    scope_date = wire.headers["X-Amz-Date"][:8]
    broken = wire.with_auth(f"/{scope_date}/", "/19991231/").with_auth(
        "/aws4_request", "/aws5_request"
    )
    error = rejected(broken)
    assert error.type == "InvalidSignatureException"
    assert "valid terminator: 'aws4_request', not 'aws5_request'." in error.message
    assert (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        f"HTTP: '19991231' != '{scope_date}', from '{wire.headers['X-Amz-Date']}'."
    ) in error.message


def test_empty_region_is_rejected() -> None:
    error = rejected(sign().with_auth(f"/{REGION}/", "//"))
    assert error.type == "InvalidSignatureException"
    assert error.message == "Credential should be scoped to a valid region, not ''."


def test_checks_run_in_dynamodb_order() -> None:
    # Unknown key, expired date and a tampered body: the date is reported first.
    wire = sign(key_id="AKIDNOBODY")
    late = replace(wire, now=wire.now + timedelta(hours=1), body=b"{}")
    assert rejected(late).message.startswith("Signature expired:")


# -- dates -----------------------------------------------------------------------------------


def test_missing_date_is_an_incomplete_signature() -> None:
    error = rejected(sign().with_header("X-Amz-Date", None))
    assert error.type == "IncompleteSignatureException"
    assert (
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        in error.message
    )


@pytest.mark.parametrize("value", ["2024-01-01T00:00:00Z", "20241301T000000Z", "201", "soon"])
def test_garbled_date_is_an_incomplete_signature(value: str) -> None:
    error = rejected(sign().with_header("X-Amz-Date", value))
    assert error.type == "IncompleteSignatureException"
    assert error.message == (
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


def test_date_header_is_used_when_x_amz_date_is_absent() -> None:
    wire = sign().with_header("X-Amz-Date", None).with_header("Date", "Tue, 20 Dec 2022 08:48:18")
    assert "ISO-8601 'basic format'. Got 'Tue, 20 Dec 2022 08:48:18'" in rejected(wire).message


def test_expired_signature() -> None:
    wire = sign()
    signed_at = wire.headers["X-Amz-Date"]
    now = wire.now + timedelta(minutes=16)
    error = rejected(replace(wire, now=now))
    assert error.type == "InvalidSignatureException"
    assert error.message == (
        f"Signature expired: {signed_at} is now earlier than "
        f"{(now - timedelta(minutes=15)):%Y%m%dT%H%M%SZ} ({now:%Y%m%dT%H%M%SZ} - 15 min.)"
    )


def test_signature_from_the_future() -> None:
    wire = sign()
    now = wire.now - timedelta(minutes=16)
    error = rejected(replace(wire, now=now))
    assert error.type == "InvalidSignatureException"
    assert error.message.startswith(f"Signature not yet current: {wire.headers['X-Amz-Date']}")
    assert error.message.endswith(f"({now:%Y%m%dT%H%M%SZ} + 15 min.)")


def test_skew_window_edges() -> None:
    wire = sign()
    for offset in (timedelta(minutes=15), -timedelta(minutes=15), timedelta(minutes=14)):
        assert verify(replace(wire, now=wire.now + offset)).region == REGION
    strict = SigV4Verifier(CREDS, max_skew_seconds=60)
    error = rejected(replace(wire, now=wire.now + timedelta(seconds=61)), strict)
    assert error.message.endswith(" - 1 min.)")


def test_signed_date_cannot_be_moved() -> None:
    wire = sign()
    moved = (wire.now + timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    assert rejected(wire.with_header("X-Amz-Date", moved)).message == MISMATCH


# -- paths, queries, payload hash --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "",
        "/tables/my%20table/items",
        "/%C3%BCber/%E2%9C%93",  # unicode, percent-encoded on the wire as the serializer does
        "/a/./b/../c//d/",
        "/~user/x-y_z.txt",
        "/colon%3Aand%2Fslash",
        "/a+b/%2B",
    ],
)
def test_paths_signed_by_botocore_verify(path: str) -> None:
    wire = sign("http://127.0.0.1:8000" + path)
    assert verify(wire).region == REGION


def test_tampered_path_is_an_invalid_signature() -> None:
    wire = sign("http://127.0.0.1:8000/tables/a")
    assert rejected(replace(wire, path="/tables/b")).message == MISMATCH


@pytest.mark.parametrize(
    "params",
    [
        {"b": "x y", "a": "\u00fc+&=/", "empty": "", "Z": "1"},
        {"Param2": "value2", "Param1": "value1", "~t": "a.b-c_d~"},
    ],
)
def test_query_params_signed_by_botocore_verify(params: dict[str, str]) -> None:
    wire = sign(params=params)
    assert wire.query  # on the wire, form-encoded by botocore
    assert verify(wire).region == REGION


def test_query_in_url_signed_by_botocore_verifies() -> None:
    wire = sign("http://127.0.0.1:8000/path%20x?z=1&a=%20b&a=%20a&k=")
    assert verify(wire).region == REGION
    assert rejected(replace(wire, query="z=2&a=%20b&a=%20a&k=")).message == MISMATCH


def test_request_target_with_inline_query() -> None:
    wire = sign("http://127.0.0.1:8000/p", params={"q": "1 2"})
    target = replace(wire, path=f"{wire.path}?{wire.query}", query="")
    assert verify(target).region == REGION
    with pytest.raises(ValueError):
        verify(replace(wire, path=f"{wire.path}?{wire.query}"))


def test_content_sha256_header_must_match_the_body() -> None:
    digest = hashlib.sha256(PUT_ITEM).hexdigest()
    headers = {"X-Amz-Target": "DynamoDB_20120810.PutItem", "X-Amz-Content-SHA256": digest}
    assert verify(sign(headers=headers)).region == REGION
    for declared in ("UNSIGNED-PAYLOAD", "0" * 64):
        wire = sign(headers={**headers, "X-Amz-Content-SHA256": declared})
        error = rejected(wire)
        assert error.type == "InvalidSignatureException"
        assert "x-amz-content-sha256" in error.message


def test_header_whitespace_is_canonicalized() -> None:
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.PutItem",
        "Content-Type": "application/x-amz-json-1.0",
        "X-Custom": "  a   b\tc  ",
    }
    wire = sign(headers=headers)
    assert verify(wire).region == REGION
    assert verify(wire.with_header("X-Custom", "a b c")).region == REGION
    assert rejected(wire.with_header("X-Custom", "a bc")).message == MISMATCH


# -- AWS CLI -------------------------------------------------------------------------------------


def test_aws_cli_style_request() -> None:
    # What `aws dynamodb put-item` sends: botocore signs everything except the user agent.
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.PutItem",
        "Content-Type": "application/x-amz-json-1.0",
        "User-Agent": "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.5 md/arch#x86_64 "
        "lang/python#3.11.8 md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe "
        "md/distrib#ubuntu.22 md/prompt#off md/command#dynamodb.put-item",
        "amz-sdk-invocation-id": "6b8f2bfa-3a6c-4a8e-9d7e-9c0c4f3e2a11",
        "amz-sdk-request": "attempt=1; max=3",
        "Accept-Encoding": "identity",
    }
    wire = sign(headers=headers, region="us-east-1")
    auth = wire.auth()
    assert "amz-sdk-invocation-id;amz-sdk-request" in auth and "user-agent" not in auth
    assert verify(wire) == Principal(KEY_ID, "us-east-1")
    retried = wire.with_header("amz-sdk-request", "attempt=2; max=3")
    assert rejected(retried).message == MISMATCH


# -- published AWS test vectors ----------------------------------------------------------------

AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def test_signing_key_matches_the_aws_documented_example() -> None:
    key = derive_signing_key(AWS_EXAMPLE_SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ("", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        (
            "Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ],
)
def test_aws_sigv4_test_suite_vectors(query: str, signature: str) -> None:
    verifier = SigV4Verifier({"AKIDEXAMPLE": AWS_EXAMPLE_SECRET}, service="service")
    headers = {
        "Host": "example.amazonaws.com",
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": "AWS4-HMAC-SHA256 "
        "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}",
    }
    now = datetime(2015, 8, 30, 12, 40, tzinfo=UTC)
    principal = verifier.verify("GET", "/", query, headers, b"", now)
    assert principal == Principal("AKIDEXAMPLE", "us-east-1")


def test_canonical_forms() -> None:
    assert canonical_uri("") == "/"
    assert canonical_uri("/a/./b/../c//d/") == "/a/c/d/"
    assert canonical_uri("/..") == "/"
    assert canonical_uri("/my%20table") == "/my%2520table"
    assert canonical_query_string("b=2&a=x+y&a=%c3%bc&c") == "a=%C3%BC&a=x%20y&b=2&c="


def test_error_body_uses_dynamodb_namespace() -> None:
    body = rejected(sign(key_id="AKIDNOBODY")).as_body()
    assert body == {
        "__type": "com.amazon.coral.service#UnrecognizedClientException",
        "message": "The security token included in the request is invalid.",
    }


# -- end to end: boto3 and the AWS CLI against an aiohttp router --------------------------------


@dataclass
class Router:
    url: str
    seen: list[tuple[Principal, str, Any]]


@pytest.fixture
def router() -> Iterator[Router]:
    verifier = SigV4Verifier(CREDS)
    seen: list[tuple[Principal, str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        content_type = "application/x-amz-json-1.0"
        try:
            principal = verifier.verify(
                request.method, request.raw_path, "", request.headers, body, datetime.now(UTC)
            )
        except AuthError as exc:
            return web.json_response(exc.as_body(), status=exc.status, content_type=content_type)
        seen.append((principal, request.headers["X-Amz-Target"], json.loads(body)))
        return web.json_response({}, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Router(f"http://127.0.0.1:{port}", seen)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def _client(url: str, key_id: str, secret: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name="ap-southeast-2",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.mark.usefixtures("clean_aws_env")
def test_boto3_client_against_router(router: Router) -> None:
    item = {"pk": {"S": "k 1 \u00fc"}, "v": {"N": "1"}}
    _client(router.url, KEY_ID, SECRET).put_item(TableName="orders", Item=item)
    [(principal, target, body)] = router.seen
    assert principal == Principal(KEY_ID, "ap-southeast-2")
    assert target == "DynamoDB_20120810.PutItem"
    assert body == {"TableName": "orders", "Item": item}

    with pytest.raises(ClientError) as info:
        _client(router.url, KEY_ID, "wrong").put_item(TableName="orders", Item=item)
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert info.value.response["Error"]["Message"] == MISMATCH
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    with pytest.raises(ClientError) as info:
        _client(router.url, "AKIDNOBODY", SECRET).get_item(TableName="orders", Key=item)
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert len(router.seen) == 1


def test_encoded_paths_and_queries_through_aiohttp(router: Router) -> None:
    # aiohttp's request.raw_path hands the verifier the path and query exactly as sent. (A
    # literal "+" in a query means a space, as botocore's form-encoded params send it; see
    # test_query_params_signed_by_botocore_verify.)
    for target in ("/tables/my%20table/%C3%BCber/a+b/./c", "/x%2Fy?b=x%20y&a=%C3%BC&a=1&e="):
        wire = sign(router.url + target)
        request = urllib.request.Request(
            router.url + target, data=wire.body, headers=wire.headers, method=wire.method
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    assert [principal.region for principal, _, _ in router.seen] == [REGION, REGION]


@pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")
@pytest.mark.usefixtures("clean_aws_env")
def test_aws_cli_against_router(router: Router) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "eu-north-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    command = ["aws", "dynamodb", "put-item", "--endpoint-url", router.url]
    command += ["--table-name", "orders", "--item", '{"pk": {"S": "cli"}}']
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [(principal, target, body)] = router.seen
    assert principal == Principal(KEY_ID, "eu-north-1")
    assert target == "DynamoDB_20120810.PutItem"
    assert body == {"TableName": "orders", "Item": {"pk": {"S": "cli"}}}

    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "InvalidSignatureException" in done.stderr, done.stderr
