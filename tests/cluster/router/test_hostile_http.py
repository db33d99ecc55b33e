"""A live router against hostile clients, over raw sockets: what no HTTP library would send.

Lone surrogates and invalid UTF-8 anywhere in a signed request, Content-Lengths that lie,
headers that trickle in (slowloris), idle connections, oversized bodies, requests refused on
their headers alone, mistyped members, malformed HTTP. Each gets a 4xx (or its connection
closed), never a 500, a traceback or a hang; every socket has a timeout, so a hang fails.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chaos.backends.local import LocalCluster
from tests.cluster.router.rawhttp import (
    RawRouter,
    amz_date,
    an_hour_ago,
    closed_by_peer,
    read_reply,
)
from tests.conftest import client_for

pytestmark = pytest.mark.slow

S = "\ud800"  # a lone surrogate: json.dumps writes it as the escape "\ud800"


@pytest.fixture
def raw(local_cluster: LocalCluster) -> RawRouter:
    return RawRouter.of(local_cluster)


@pytest.fixture
def table(local_cluster: LocalCluster) -> Iterator[str]:
    client = client_for(local_cluster)
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})
    yield name
    client.delete_table(TableName=name)


def _body(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode()  # ensure_ascii: a surrogate goes out as its escape


def test_lone_surrogates_anywhere_are_serialization_errors(raw: RawRouter, table: str) -> None:
    key = {"pk": {"S": "a"}}
    put = {"PutRequest": {"Item": {"pk": {"S": "b"}, "v": {"S": S}}}}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("PutItem", {"TableName": table, "Item": {**key, "v": {"S": S}}}),
        ("PutItem", {"TableName": table, "Item": {**key, S: {"S": "x"}}}),
        ("PutItem", {"TableName": table, "Item": {**key, "v": {"SS": ["ok", "\udfff"]}}}),
        ("PutItem", {"TableName": table, "Item": {**key, "v": {"M": {S: {"S": "x"}}}}}),
        ("PutItem", {"TableName": table, "Item": {**key, "v": {"L": [{"S": "x" + S}]}}}),
        ("PutItem", {"TableName": table, "Item": {"pk": {"S": S}}}),
        ("GetItem", {"TableName": table, "Key": {"pk": {"S": S}}}),
        ("GetItem", {"TableName": S + "abc", "Key": key}),
        (
            "UpdateItem",
            {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "SET #n = :v",
                "ExpressionAttributeNames": {"#n": "v"},
                "ExpressionAttributeValues": {":v": {"S": S}},
            },
        ),
        (
            "UpdateItem",
            {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "SET #n = :v",
                "ExpressionAttributeNames": {"#n": S},
                "ExpressionAttributeValues": {":v": {"S": "x"}},
            },
        ),
        ("DeleteItem", {"TableName": table, "Key": key, "ConditionExpression": f"{S} = {S}"}),
        ("BatchWriteItem", {"RequestItems": {table: [put]}}),
        ("BatchWriteItem", {"RequestItems": {S: [put]}}),
        ("BatchGetItem", {"RequestItems": {table: {"Keys": [{"pk": {"S": S}}]}}}),
        (
            "Query",
            {
                "TableName": table,
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"S": S}},
            },
        ),
        ("Scan", {"TableName": table, "FilterExpression": "v = :v", S: 1}),
        ("ListTables", {"ExclusiveStartTableName": S}),
    ]
    for operation, request in cases:
        reply = raw.call(operation, _body(request))
        assert (reply.status, reply.type) == (400, "SerializationException"), (operation, request)
        assert "surrogate" in reply.json["message"]
    # Nothing was written on the way.
    reply = raw.call("Scan", _body({"TableName": table}))
    assert reply.status == 200 and reply.json["Count"] == 0
    # A surrogate pair is a real character, and welcome.
    emoji = {"TableName": table, "Item": {**key, "v": {"S": "\ud83d\ude00"}}}
    assert raw.call("PutItem", _body(emoji)).status == 200


def test_invalid_utf8_and_json_constants_are_serialization_errors(
    raw: RawRouter, table: str
) -> None:
    cases = [
        b'{"TableName": "\xff\xfe"}',
        b'{"TableName": "\xed\xa0\x80abc"}',  # a surrogate encoded in UTF-8 (CESU)
        b'{"TableName": "\xc0\xafabc"}',  # an overlong encoding
        b'{"TableName": "' + table.encode() + b'", "Limit": NaN}',
        b'{"TableName": "' + table.encode() + b'", "Limit": Infinity}',
        b"\xef\xbb\xbf{}",  # a byte order mark
        "{}".encode("utf-16"),
    ]
    for body in cases:
        reply = raw.call("Scan", body)
        assert (reply.status, reply.type) == (400, "SerializationException"), body


def test_members_are_type_checked_like_dynamodb(raw: RawRouter, table: str) -> None:
    base = {"TableName": table, "Key": {"pk": {"S": "a"}}}
    wrong_type: list[tuple[str, dict[str, Any]]] = [
        ("GetItem", {**base, "ReturnConsumedCapacity": 5}),
        ("GetItem", {**base, "ReturnConsumedCapacity": ["TOTAL"]}),
        ("GetItem", {**base, "ConsistentRead": "true"}),
        ("GetItem", {**base, "ProjectionExpression": 1}),
        ("DeleteItem", {**base, "ReturnItemCollectionMetrics": True}),
        ("Scan", {"TableName": table, "Segment": "0"}),
        ("Scan", {"TableName": table, "Limit": True}),
        ("Query", {"TableName": table, "ScanIndexForward": 0}),
        ("BatchGetItem", {"RequestItems": [], "ReturnConsumedCapacity": "TOTAL"}),
        ("ListTables", {"Limit": "10"}),
        ("CreateTable", {"TableName": "x" * 3, "Tags": {}}),
    ]
    for operation, request in wrong_type:
        reply = raw.call(operation, _body(request))
        assert (reply.status, reply.type) == (400, "SerializationException"), request
    out_of_enum: list[tuple[str, dict[str, Any], str]] = [
        ("GetItem", {**base, "ReturnConsumedCapacity": "ALL"}, "returnConsumedCapacity"),
        ("PutItem", {"TableName": table, "Item": base["Key"], "ReturnValues": "X"}, "returnValues"),
        ("BatchWriteItem", {"RequestItems": {}, "ReturnItemCollectionMetrics": "Y"}, "return"),
        ("Scan", {"TableName": table, "Select": "all"}, "select"),
        ("Query", {"TableName": table, "ConditionalOperator": "XOR"}, "conditionalOperator"),
    ]
    for operation, request, member in out_of_enum:
        reply = raw.call(operation, _body(request))
        assert (reply.status, reply.type) == (400, "ValidationException"), request
        assert f"at '{member}" in reply.json["message"]
    for capacity in ("INDEXES", "TOTAL", "NONE"):
        assert (
            raw.call("GetItem", _body({**base, "ReturnConsumedCapacity": capacity})).status == 200
        )


def _send_head_only(raw: RawRouter, head: bytes) -> tuple[Any, bool]:
    """Send only ``head`` (its body never follows); the reply and whether the router then
    closed the connection."""
    with raw.connect() as sock:
        sock.sendall(head)
        reply = read_reply(sock)
        return reply, closed_by_peer(sock)


def test_refused_on_headers_before_the_body_is_read(raw: RawRouter) -> None:
    """A declared body that never comes: the headers alone decide these requests."""
    megabyte = 1024 * 1024
    hour_ago = {"X-Amz-Date": amz_date(an_hour_ago())}
    cases: list[tuple[bytes, int, str]] = [
        (raw.head("ListTables", b"{}", length=17 * megabyte), 400, "ValidationException"),
        (
            raw.head("ListTables", b"{}", length=megabyte, key="AKIDSTRANGER"),
            400,
            "UnrecognizedClientException",
        ),
        (
            raw.head("ListTables", b"{}", length=megabyte, override=hour_ago),
            400,
            "InvalidSignatureException",
        ),
        (
            raw.head("ListTables", b"{}", length=megabyte, service="s3"),
            400,
            "InvalidSignatureException",
        ),
        (
            raw.head("ListTables", b"{}", length=megabyte, override={"Authorization": ""}),
            400,
            "MissingAuthenticationTokenException",
        ),
    ]
    for head, status, type_ in cases:
        reply, closed = _send_head_only(raw, head)
        assert (reply.status, reply.type) == (status, type_), head[:300]
        assert closed, "the unread body must not be parsed as the next request"


def test_a_content_length_that_lies_times_out_with_408(raw: RawRouter) -> None:
    body = b'{"Limit": 5}'
    with raw.connect() as sock:
        sock.sendall(raw.head("ListTables", body, length=len(body) + 100) + body)
        reply = read_reply(sock)
        assert (reply.status, reply.type) == (408, "RequestTimeoutException")
        assert f"{len(body)} bytes received of the {len(body) + 100}" in reply.json["message"]
        assert closed_by_peer(sock)


def test_a_body_longer_than_its_length_is_a_bad_next_request(raw: RawRouter) -> None:
    body = b"{}"
    with raw.connect() as sock:
        sock.sendall(raw.head("ListTables", body) + body + b"GARBAGE\r\n\r\n")
        # The surplus is parsed as the next request and refused; aiohttp may refuse the whole
        # packet at once (one 400) or answer the good request first (200, then 400).
        first = read_reply(sock).status
        assert first == 400 or (first == 200 and read_reply(sock).status == 400)
        assert closed_by_peer(sock)


def test_slowloris_headers_are_cut_off(raw: RawRouter) -> None:
    """Headers trickling in a byte every 0.2 s: the router closes the connection."""
    with raw.connect(timeout=0.2) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: router\r\nX-Slow: ")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < 30:
            try:
                sock.sendall(b"a")
                closed = closed_by_peer(sock)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed, "a slowloris client held its connection for 30 s"


def test_idle_connections_are_closed(raw: RawRouter) -> None:
    with raw.connect(timeout=30) as sock:
        assert closed_by_peer(sock), "a connection that never sent a byte was kept 30 s"
    with raw.connect(timeout=30) as sock:
        sock.sendall(raw.head("ListTables", b"{}") + b"{}")
        assert read_reply(sock).status == 200
        assert closed_by_peer(sock), "an idle keep-alive connection was kept 30 s"


def test_malformed_http_is_a_400_and_one_quiet_log_line(
    raw: RawRouter, local_cluster: LocalCluster
) -> None:
    log = local_cluster.procs.log_file("rt-a")
    before = log.read_text() if log.exists() else ""
    garbage = [
        b"GARBAGE\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
        b"POST /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(300)) + b"\r\n",
    ]
    for data in garbage:
        with raw.connect() as sock:
            sock.sendall(data)
            reply = read_reply(sock)
            assert 400 <= reply.status < 500, data[:80]
    time.sleep(0.5)  # the log is written by another process
    added = log.read_text()[len(before) :] if log.exists() else ""
    assert "Traceback" not in added and " ERROR " not in added, added


def test_headers_from_nowhere_close_connection_without_5xx(raw: RawRouter) -> None:
    """A connection cut mid-body leaves the router serving the next client normally."""
    body = b'{"Limit": 5}'
    for _ in range(5):
        with raw.connect() as sock:
            sock.sendall(raw.head("ListTables", body, length=1000) + body[:3])
            sock.shutdown(socket.SHUT_RDWR)
    assert raw.call("ListTables", b"{}").status == 200
