"""Hypothesis strategies for fuzzing a router: DynamoDB requests of every operation, and raw
HTTP/1.1 framing.

Requests mix well-formed members (so a request gets deep into the operation: real table, keys
of the right types, expressions built from real tokens) with wrong types, broken attribute
values, lone surrogates and arbitrary JSON, member by member, as typed in
``cluster.router.shapes.MEMBERS``. Framing mixes request lines, header sets (lying, repeated
and malformed lengths, chunked bodies) and bodies.

    request = data.draw(requests(table="fuzz-t"))      # (operation, JSON-able dict)
    wire = data.draw(http_messages(head_for))          # bytes for a raw socket
"""

from __future__ import annotations

import base64
import string
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from cluster.router.shapes import MEMBERS

SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
PK, SK = "pk", "sk"  # the fuzz table's key: pk (S, HASH), sk (N, RANGE)

# Text: mostly plain, with a sprinkling of characters that JSON and expressions care about (lone
# surrogates are put in whole requests by ``_poison``, so that most requests have none).
plain = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8)
texts = st.one_of(
    *[plain] * 6,
    st.text(max_size=12),
    st.text(alphabet=string.ascii_letters + "#:._-[]() ", max_size=12),
    st.sampled_from(["", " ", "pk", "sk", "v", "#n", ":v", "\x00", "\u2028", "\U0001f600"]),
)
numbers = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e126", "1e-131", "-0", "0.0000", "1e400", "NaN", "abc", "", " 1", "1_0"]),
)
binaries = st.one_of(
    st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["not base64!", "", "===", "QQ"]),
)
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def _attribute_values() -> st.SearchStrategy[Any]:
    valid = st.one_of(
        plain.map(lambda t: {"S": t}),
        st.integers(-1000, 1000).map(lambda n: {"N": str(n)}),
        st.binary(min_size=1, max_size=8).map(lambda b: {"B": base64.b64encode(b).decode()}),
        st.booleans().map(lambda b: {"BOOL": b}),
        st.just({"NULL": True}),
        st.lists(plain, min_size=1, max_size=3, unique=True).map(lambda s: {"SS": s}),
        st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True).map(
            lambda s: {"NS": [str(n) for n in s]}
        ),
    )
    odd = st.one_of(
        texts.map(lambda t: {"S": t}),
        numbers.map(lambda n: {"N": n}),
        binaries.map(lambda b: {"B": b}),
        st.just({"NULL": False}),
        st.lists(texts, max_size=3).map(lambda s: {"SS": s}),
        st.lists(numbers, max_size=3).map(lambda s: {"NS": s}),
        st.lists(binaries, max_size=3).map(lambda s: {"BS": s}),
        st.dictionaries(st.sampled_from(["S", "N", "X", "L", "M", "SS"]), any_json, max_size=2),
        any_json,
    )
    return st.recursive(
        st.one_of(*[valid] * 4, odd),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: {"L": items}),
            st.dictionaries(texts, inner, max_size=3).map(lambda m: {"M": m}),
        ),
        max_leaves=6,
    )


attribute_values = _attribute_values()


def keys(valid_bias: bool = True) -> st.SearchStrategy[Any]:
    """Keys of the fuzz table: mostly right, sometimes wrong types, extra or missing parts."""
    good = st.fixed_dictionaries(
        {
            PK: st.sampled_from(["a", "b", "c"]).map(lambda t: {"S": t}),
            SK: st.integers(-5, 5).map(lambda n: {"N": str(n)}),
        }
    )
    bad = st.dictionaries(st.sampled_from([PK, SK, "v"]), attribute_values, max_size=3)
    return st.one_of(good, good, bad, any_json) if valid_bias else st.one_of(good, bad)


def items() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(keys(), st.dictionaries(plain | texts, attribute_values, max_size=4)).map(
            lambda kv: {**kv[1], **kv[0]} if isinstance(kv[0], dict) else kv[0]
        ),
        any_json,
    )


TOKENS = [
    "SET", "REMOVE", "ADD", "DELETE", "AND", "OR", "NOT", "BETWEEN", "IN", "=", "<>", "<", "<=",
    ">", ">=", "+", "-", ",", "(", ")", "[0]", "[99999999999]", ".", "#n", "#m", ":v", ":w",
    "pk", "sk", "v", "v.w", "a[1]", "attribute_exists(", "attribute_not_exists(",
    "attribute_type(", "begins_with(", "contains(", "size(", "if_not_exists(", "list_append(",
]  # fmt: skip
expressions = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=10).map(" ".join),
    st.sampled_from(
        [
            "SET v = :v",
            "SET #n = if_not_exists(#n, :v) + :w",
            "REMOVE v, #n[0]",
            "attribute_exists(pk) AND v = :v",
            f"{PK} = :v AND {SK} BETWEEN :v AND :w",
            f"{PK} = :v AND begins_with({SK}, :w)",
            "v, #n, a[1].b",
            "NOT " * 50 + "attribute_exists(v)",
            "(" * 200 + "v = :v" + ")" * 200,
        ]
    ),
    texts,
)
names_maps = st.dictionaries(st.sampled_from(["#n", "#m", "n", "#"]), texts | any_json, max_size=3)
values_maps = st.dictionaries(st.sampled_from([":v", ":w", "v", ":"]), attribute_values, max_size=3)


# Members an operation needs: present in 9 of 10 requests, so most get past the first check.
REQUIRED = {
    "PutItem": ["TableName", "Item"],
    "DeleteItem": ["TableName", "Key"],
    "UpdateItem": ["TableName", "Key", "UpdateExpression"],
    "GetItem": ["TableName", "Key"],
    "Query": ["TableName", "KeyConditionExpression", "ExpressionAttributeValues"],
    "Scan": ["TableName"],
    "BatchWriteItem": ["RequestItems"],
    "BatchGetItem": ["RequestItems"],
    "DescribeTable": ["TableName"],
    "ListTables": [],
}


LEGACY = {
    "Expected",
    "ConditionalOperator",
    "AttributesToGet",
    "AttributeUpdates",
    "KeyConditions",
    "QueryFilter",
    "ScanFilter",
}


def table_names(table: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        *[st.just(table)] * 5,
        st.sampled_from(["no-such-table", "ab", "x" * 256, "bad/name", ""]),
        texts,
    )


def _member(name: str, kind: Any, table: str) -> st.SearchStrategy[Any]:
    """A value for one top-level member: mostly well-typed, sometimes anything."""
    typed: st.SearchStrategy[Any]
    if isinstance(kind, tuple):
        typed = st.one_of(*[st.sampled_from(kind)] * 3, texts)
    elif name == "TableName":
        typed = table_names(table)
    elif name in ("Item",):
        typed = items()
    elif name in ("Key", "ExclusiveStartKey"):
        typed = keys()
    elif name == "ExpressionAttributeNames":
        typed = names_maps
    elif name == "ExpressionAttributeValues":
        typed = values_maps
    elif name.endswith("Expression"):
        typed = expressions
    elif name == "RequestItems":
        typed = _request_items(table)
    elif kind is bool:
        typed = st.booleans()
    elif kind is int:
        typed = st.one_of(st.integers(-2, 200), st.integers())
    elif kind is str:
        typed = texts
    elif kind is list:
        typed = st.lists(any_json, max_size=3)
    else:
        typed = st.dictionaries(texts, any_json, max_size=3)
    return st.one_of(*[typed] * 6, any_json)


def _request_items(table: str) -> st.SearchStrategy[Any]:
    write = st.one_of(
        items().map(lambda i: {"PutRequest": {"Item": i}}),
        keys().map(lambda k: {"DeleteRequest": {"Key": k}}),
        st.dictionaries(st.sampled_from(["PutRequest", "DeleteRequest", "X"]), any_json),
    )
    get = st.fixed_dictionaries(
        {"Keys": st.lists(keys(), max_size=4) | any_json},
        optional={
            "ConsistentRead": st.booleans() | any_json,
            "ProjectionExpression": expressions,
            "ExpressionAttributeNames": names_maps,
        },
    )
    return st.dictionaries(
        table_names(table), st.lists(write, max_size=4) | get | any_json, max_size=2
    )


@st.composite
def requests(draw: st.DrawFn, table: str) -> tuple[str, dict[str, Any]]:
    """(operation, request) for any operation except the control plane's destructive ones,
    which ``table_requests`` covers with their own table names."""
    operation = draw(st.sampled_from(sorted(REQUIRED)))
    members = MEMBERS[operation]
    required = [name for name in REQUIRED[operation] if draw(st.integers(0, 9)) < 9]
    optional = sorted(set(members) - set(REQUIRED[operation]) - LEGACY)
    chosen = draw(st.lists(st.sampled_from(optional), unique=True, max_size=4)) if optional else []
    legacy = sorted(set(members) & LEGACY)
    if legacy and draw(st.integers(0, 19)) == 19:
        chosen.append(draw(st.sampled_from(legacy)))
    request: dict[str, Any] = {}
    for name in [*required, *chosen]:
        request[name] = draw(_member(name, members[name], table))
    if draw(st.integers(0, 19)) == 19:  # an unknown member
        request[draw(texts)] = draw(any_json)
    if draw(st.integers(0, 9)) == 9:
        _poison(draw, request)
    return operation, request


def _poison(draw: st.DrawFn, request: dict[str, Any]) -> None:
    """Put a lone surrogate into one string of ``request``: a key or a value, at any depth."""
    spots: list[tuple[Any, Any, bool]] = []  # (container, key or index, is a dict key)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in list(node.items()):
                spots.append((node, k, True))
                if isinstance(v, str):
                    spots.append((node, k, False))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, str):
                    spots.append((node, i, False))
                walk(v)

    walk(request)
    if not spots:
        request["TableName"] = draw(st.sampled_from(SURROGATES))
        return
    container, where, is_key = draw(st.sampled_from(spots))
    surrogate = draw(st.sampled_from(SURROGATES))
    if is_key:
        container[where + surrogate] = container.pop(where)
    else:
        container[where] = container[where] + surrogate


@st.composite
def table_requests(draw: st.DrawFn, names: list[str]) -> tuple[str, dict[str, Any]]:
    """CreateTable and DeleteTable, only ever on ``names`` (or invalid names)."""
    operation = draw(st.sampled_from(["CreateTable", "DeleteTable"]))
    name = draw(st.sampled_from(names) | st.sampled_from(["", "x", "a\ud800b"]) | any_json)
    request: dict[str, Any] = {"TableName": name}
    if operation == "CreateTable":
        attribute = st.fixed_dictionaries(
            {
                "AttributeName": st.sampled_from([PK, SK]) | texts,
                "AttributeType": st.sampled_from("SNBX"),
            }
        )
        element = st.fixed_dictionaries(
            {
                "AttributeName": st.sampled_from([PK, SK]) | texts,
                "KeyType": st.sampled_from(["HASH", "RANGE", "X"]),
            }
        )
        request["KeySchema"] = draw(st.lists(element | any_json, max_size=3) | any_json)
        request["AttributeDefinitions"] = draw(
            st.lists(attribute | any_json, max_size=3) | any_json
        )
        request["BillingMode"] = draw(_member("BillingMode", MEMBERS[operation]["BillingMode"], ""))
        if draw(st.booleans()):
            request["ProvisionedThroughput"] = draw(
                st.fixed_dictionaries(
                    {
                        "ReadCapacityUnits": st.integers(-1, 10) | any_json,
                        "WriteCapacityUnits": st.integers(-1, 10),
                    }
                )
                | any_json
            )
    return operation, request


# --- HTTP framing ----------------------------------------------------------------------------

METHODS = [b"POST", b"GET", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"BREW", b"P\x00ST", b""]
PATHS = [b"/", b"/health", b"/metrics", b"//", b"/../..", b"*", b"/%00", b"/?a=b&c", b"/ /", b""]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 extra", b"HTTX/1.1", b""]
LENGTHS = [b"0", b"2", b"5", b"100", b"-1", b"abc", b"1 2", b"99999999999999999999", b"+5", b""]


def _header_lines() -> st.SearchStrategy[list[bytes]]:
    known = st.one_of(
        st.sampled_from(LENGTHS).map(lambda v: b"Content-Length: " + v),
        st.sampled_from([b"chunked", b"gzip, chunked", b"identity", b"chunked, chunked", b"x"]).map(
            lambda v: b"Transfer-Encoding: " + v
        ),
        st.sampled_from([b"gzip", b"deflate", b"br", b"x"]).map(
            lambda v: b"Content-Encoding: " + v
        ),
        st.sampled_from([b"close", b"keep-alive", b"upgrade"]).map(lambda v: b"Connection: " + v),
        st.sampled_from([b"websocket", b"h2c"]).map(lambda v: b"Upgrade: " + v),
        st.just(b"Expect: 100-continue"),
        st.just(b"X-Amz-Target: DynamoDB_20120810.ListTables"),
        st.just(b"Authorization: AWS4-HMAC-SHA256 Credential=x/y"),
        st.binary(max_size=40),
        st.binary(max_size=20).map(lambda v: b"X-Fuzz: " + v),
        st.just(b"X-Big: " + b"a" * 9000),
    )
    return st.lists(known, max_size=6)


def _chunked(body: bytes) -> st.SearchStrategy[bytes]:
    good = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return st.one_of(
        st.just(good),
        st.just(b"zz\r\n" + body),
        st.just(b"%x\r\n%s" % (len(body) + 10, body)),
        st.just(b"ffffffffffffffffff\r\n"),
        st.binary(max_size=30),
    )


@st.composite
def http_messages(draw: st.DrawFn, signed_head: Callable[[bytes], bytes]) -> bytes:
    """A raw message: either a validly signed head with mangled framing after it, or a head
    assembled from parts; then a body (plain, chunked or arbitrary), maybe pipelined twice."""
    body = draw(st.sampled_from([b"{}", b'{"Limit": 5}', b"", b"[1]"]) | st.binary(max_size=40))
    if draw(st.booleans()):
        head = signed_head(body)
        extra = draw(_header_lines())
        if extra:
            head = head[:-2] + b"".join(line + b"\r\n" for line in extra) + b"\r\n"
    else:
        line = b" ".join(
            [
                draw(st.sampled_from(METHODS)),
                draw(st.sampled_from(PATHS)),
                draw(st.sampled_from(VERSIONS)),
            ]
        )
        headers = [b"Host: r", *draw(_header_lines())]
        head = line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    tail = draw(st.just(body) | _chunked(body) | st.binary(max_size=40))
    message = head + tail
    return message + message if draw(st.integers(0, 7)) == 0 else message
