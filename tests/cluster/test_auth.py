"""Internal authentication: proofs of the cluster key, on hellos and on HTTP requests.

The unit tests run against the module's process-wide keys, so each installs its own random
secret; the live test checks a running cluster refuses privileged calls without a proof.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from typing import Any

import pytest

from chaos.backends.local import LocalCluster
from cluster import auth
from cluster.config import new_secret
from cluster.storage.wire import encode_frame, read_frame


def test_a_hello_proves_the_key_only_over_its_own_connections_challenge() -> None:
    auth.install(new_secret())
    challenge = auth.challenge()
    frame = auth.hello("peer", challenge, node="sn-a1")
    assert auth.check_hello(frame, challenge)
    assert not auth.check_hello(frame, auth.challenge()), "replayed on another connection"
    assert not auth.check_hello({**frame, "node": "sn-b1"}, challenge), "another identity"
    assert not auth.check_hello({**frame, "hello": "client"}, challenge)
    assert not auth.check_hello({**frame, "auth": ["0" * 64]}, challenge)
    assert not auth.check_hello({"hello": "peer", "node": "sn-a1"}, challenge)


def test_an_http_proof_verifies_once_and_only_for_its_subject() -> None:
    auth.install(new_secret())
    headers = auth.http_headers("POST", "/admin/scrub")
    assert not auth.check_http("DELETE", "/admin/scrub", headers[auth.HEADER])
    assert auth.check_http(
        "POST", "/admin/scrub", auth.http_headers("POST", "/admin/scrub")[auth.HEADER]
    )


def test_forged_stale_and_garbled_proofs_are_refused() -> None:
    auth.install(new_secret())
    stamp, nonce, *macs = auth.http_headers("PUT", "/tables/t")[auth.HEADER].split(":")
    forged = ":".join([stamp, nonce, *("0" * len(m) for m in macs)])
    stale = ":".join([f"{time.time() - 3600:.3f}", "n" + nonce, *macs])
    for proof in [forged, stale, "", "garbage", "1:2:3", None, 5]:
        assert not auth.check_http("PUT", "/tables/t", proof)  # type: ignore[arg-type]


def _proof_at(subject: str, when: float) -> str:
    stamp, nonce = f"{when:.3f}", secrets.token_hex(12)
    return ":".join([stamp, nonce, *(auth._mac(k, subject, stamp, nonce) for k in auth._keys)])


def test_nonces_are_forgotten_by_age_and_a_forgotten_one_never_passes_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth.install(new_secret())
    monkeypatch.setattr(auth, "_SEEN_LIMIT", 3)
    monkeypatch.setattr(auth, "_seen", OrderedDict())
    monkeypatch.setattr(auth, "_horizon", 0.0)
    subject, base = "GET /map", time.time()
    for i in range(3):
        assert auth._check(subject, _proof_at(subject, base + i), now=base + i)
    # Two minutes on, proofs that old fail the skew check: their nonces are dropped by age.
    later = base + 120
    assert auth._check(subject, _proof_at(subject, later), now=later)
    assert len(auth._seen) == 1 and auth._horizon == 0.0
    # Past the limit the oldest are forgotten early, and proofs as old are refused from then on.
    proofs = [_proof_at(subject, later + 1 + i) for i in range(4)]
    for proof in proofs:
        assert auth._check(subject, proof, now=later + 5)
    assert len(auth._seen) == 3 and auth._horizon == pytest.approx(later + 1)
    assert not auth._check(subject, proofs[0], now=later + 5), "a forgotten nonce replayed"
    assert not auth._check(subject, proofs[3], now=later + 5), "a remembered nonce replayed"
    assert not auth._check(subject, _proof_at(subject, later + 1), now=later + 5)
    assert auth._check(subject, _proof_at(subject, later + 1.5), now=later + 5)


async def _rpc(address: str, proven: bool, request: dict[str, Any]) -> dict[str, Any] | None:
    """One request on a storage node's port; None when the node closes the connection. Without
    ``proven``, the hello is what anyone on the network can send (no proof, or a replayed one)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        challenge = (await asyncio.wait_for(read_frame(reader), 5))["challenge"]
        if proven:
            hello = auth.hello("client", challenge)
        else:  # a proof captured from another connection
            hello = auth.hello("client", auth.challenge())
        writer.write(encode_frame(hello) + encode_frame({"id": 1, **request}))
        try:
            return await asyncio.wait_for(read_frame(reader), 5)
        except asyncio.IncompleteReadError:
            return None
    finally:
        writer.close()


def _status(url: str, method: str, headers: dict[str, str], body: bytes | None = b"{}") -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_internal_endpoints_need_the_cluster_key(local_cluster: LocalCluster) -> None:
    node = local_cluster.config.process("sn-a1")
    for op in ("drop_group", "snapshot_dump", "status", "get"):
        started = time.monotonic()
        reply = asyncio.run(_rpc(node.listen, False, {"op": op, "group": "nope"}))
        assert reply is None, reply  # connection closed: no proof over its challenge
        assert time.monotonic() - started < 5
    # With the key (installed when the test opened the cluster), the op itself runs.
    reply = asyncio.run(_rpc(node.listen, True, {"op": "snapshot_dump", "group": "nope"}))
    assert reply is not None and reply.get("error") == "NoSuchGroup", reply

    # Raft peers, too: a peer hello without a proof is dropped before any message is read.
    host, _, port = node.listen.rpartition(":")

    async def fake_peer() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            await read_frame(reader)
            writer.write(encode_frame({"hello": "peer", "node": "sn-b1"}))
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()

    assert asyncio.run(fake_peer()) == b""  # closed

    md = local_cluster.config.process("md-a").listen
    gac = local_cluster.config.process("gac").listen
    for method, url in [
        ("GET", f"http://{node.admin}/replicas"),
        ("GET", f"http://{node.admin}/digest"),
        ("GET", f"http://{node.admin}/admin/events"),
        ("GET", f"http://{md}/map"),
        ("POST", f"http://{md}/lookup"),
        ("POST", f"http://{gac}/tokens"),
    ]:
        body = None if method == "GET" else b'{"tables": []}'
        assert _status(url, method, {}, body) == 403, url
        assert _status(url, method, auth.url_headers(method, url), body) != 403, url
    for open_url in [f"http://{node.admin}/health", f"http://{node.admin}/metrics"]:
        assert _status(open_url, "GET", {}, None) == 200  # probes and scrapers hold no key

    scrub = f"http://{node.admin}/admin/scrub?group=nope"
    assert _status(scrub, "POST", {}, b"") == 403
    assert _status(scrub, "POST", auth.http_headers("POST", "/admin/scrub"), b"") < 400

    gac = local_cluster.config.process("gac").listen
    quota = json.dumps({"mode": "PAY_PER_REQUEST"}).encode()
    json_type = {"Content-Type": "application/json"}
    assert _status(f"http://{gac}/tables/intruder", "PUT", json_type, quota) == 403
    assert _status(f"http://{gac}/tables/intruder", "DELETE", json_type) == 403
    signed = {**json_type, **auth.http_headers("PUT", "/tables/intruder")}
    assert _status(f"http://{gac}/tables/intruder", "PUT", signed, quota) == 200
    signed = {**json_type, **auth.http_headers("DELETE", "/tables/intruder")}
    assert _status(f"http://{gac}/tables/intruder", "DELETE", signed) == 200
