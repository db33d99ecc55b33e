"""Internal authentication: proofs of the cluster key, on hellos and on HTTP requests.

The unit tests run against the module's process-wide keys, so each installs its own random
secret; the live test checks a running cluster refuses privileged calls without a proof.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from chaos.backends.local import LocalCluster
from cluster import auth
from cluster.config import new_secret
from cluster.storage.wire import encode_frame, read_frame


def test_a_proof_verifies_once_and_only_for_its_subject() -> None:
    auth.install(new_secret())
    frame = auth.hello("client")
    assert auth.check_hello(frame)
    assert not auth.check_hello(frame), "a replayed hello is refused"
    assert not auth.check_hello({**auth.hello("client"), "hello": "peer"})
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
    assert not auth.check_hello({"hello": "client"})


async def _rpc(address: str, hello: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(encode_frame(hello) + encode_frame({"id": 1, **request}))
        return await asyncio.wait_for(read_frame(reader), 10)
    finally:
        writer.close()


def _status(url: str, method: str, headers: dict[str, str], body: bytes = b"{}") -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_privileged_calls_need_the_cluster_key(local_cluster: LocalCluster) -> None:
    node = local_cluster.config.process("sn-a1")
    bare = {"hello": "client"}  # what anyone on the network can send
    for op in ("drop_group", "snapshot_dump", "create_group", "change_membership"):
        reply = asyncio.run(_rpc(node.listen, bare, {"op": op, "group": "nope"}))
        assert reply["error"] == "Unauthorized", reply
    assert "error" not in asyncio.run(_rpc(node.listen, bare, {"op": "status"}))
    # With the key (installed when the test opened the cluster), the op itself runs.
    reply = asyncio.run(
        _rpc(node.listen, auth.hello("client"), {"op": "snapshot_dump", "group": "nope"})
    )
    assert reply.get("error") != "Unauthorized", reply

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
