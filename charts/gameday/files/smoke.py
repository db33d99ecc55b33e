"""helm test: a signed DynamoDB round trip through every router of the release.

Standard library only (the signature is computed here, independently of the cluster's code):
CreateTable (an existing table is fine), then through each router a PutItem of a fresh value,
a strongly consistent GetItem that must return it and a DeleteItem; an unsigned request must be
refused. Every call is retried for a bounded time (the cluster may still be electing leaders).
Exit 0 when everything held, 1 with the reason otherwise.

Environment: GAMEDAY_ROUTERS (comma-separated host:port), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, GAMEDAY_SMOKE_SECONDS (default 90).
"""

import datetime
import hashlib
import hmac
import http.client
import json
import os
import sys
import time
import uuid

REGION = "us-east-1"
TABLE = "gameday-helm-test"
TIMEOUT = 5.0


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_headers(host: str, target: str, body: bytes, key_id: str, secret: str) -> dict:
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {
        "content-type": "application/x-amz-json-1.0",
        "host": host,
        "x-amz-date": amz_date,
        "x-amz-target": f"DynamoDB_20120810.{target}",
    }
    names = sorted(headers)
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            *(f"{n}:{headers[n]}" for n in names),
            "",
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{REGION}/dynamodb/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret).encode(), day)
    for part in (REGION, "dynamodb", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return headers


def call(router: str, target: str, payload: dict, creds: tuple | None) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    if creds is None:
        headers = {
            "content-type": "application/x-amz-json-1.0",
            "x-amz-target": f"DynamoDB_20120810.{target}",
        }
    else:
        headers = signed_headers(router, target, body, *creds)
    host, _, port = router.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, (json.loads(data) if data else {})


def until_ok(deadline: float, what: str, attempt) -> dict:
    """Run ``attempt()`` -> (ok, result, detail) until ok or the deadline; raise with the last."""
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            ok, result, last = attempt()
            if ok:
                return result
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(1.0)
    raise RuntimeError(f"{what}: {last}")


def main() -> int:
    routers = [r.strip() for r in os.environ["GAMEDAY_ROUTERS"].split(",") if r.strip()]
    creds = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    deadline = time.monotonic() + float(os.environ.get("GAMEDAY_SMOKE_SECONDS", "90"))
    table = {
        "TableName": TABLE,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }

    def create():
        status, body = call(routers[0], "CreateTable", table, creds)
        in_use = "ResourceInUseException" in str(body.get("__type", ""))
        return status == 200 or in_use, body, f"HTTP {status} {body}"

    until_ok(deadline, "CreateTable", create)

    for router in routers:
        status, _ = call(router, "ListTables", {}, None)
        if status == 200:
            print(f"FAIL {router}: an unsigned request was served", file=sys.stderr)
            return 1
        key = {"pk": {"S": f"smoke-{router}"}}
        value = uuid.uuid4().hex

        def put(router=router, key=key, value=value):
            item = {**key, "v": {"S": value}}
            status, body = call(router, "PutItem", {"TableName": TABLE, "Item": item}, creds)
            return status == 200, body, f"HTTP {status} {body}"

        def get(router=router, key=key):
            request = {"TableName": TABLE, "Key": key, "ConsistentRead": True}
            status, body = call(router, "GetItem", request, creds)
            return status == 200, body, f"HTTP {status} {body}"

        def delete(router=router, key=key):
            request = {"TableName": TABLE, "Key": key}
            status, body = call(router, "DeleteItem", request, creds)
            return status == 200, body, f"HTTP {status} {body}"

        until_ok(deadline, f"PutItem via {router}", put)
        got = until_ok(deadline, f"GetItem via {router}", get)
        if got.get("Item", {}).get("v", {}).get("S") != value:
            print(f"FAIL {router}: read {got} after writing {value}", file=sys.stderr)
            return 1
        until_ok(deadline, f"DeleteItem via {router}", delete)
        print(f"ok {router}: signed put, consistent get and delete; unsigned refused ({status})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, KeyError) as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        sys.exit(1)
