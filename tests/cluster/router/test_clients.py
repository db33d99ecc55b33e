"""Real clients other than boto3 against the session cluster: the AWS CLI and PynamoDB, used
unchanged, plus DynamoDB's unsigned health check (``GET /``).

The AWS CLI gets its endpoint and credentials from the command line and the environment only
(config and credentials files point at /dev/null): the user's ~/.aws is never read.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    NumberAttribute,
    NumberSetAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import TableConnection
from pynamodb.exceptions import PutError, QueryError, TableError, UpdateError
from pynamodb.models import Model

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster
from tests.cluster.router.test_api_boto3 import REGION, Client, N, NewTable, S, unique

pytestmark = pytest.mark.slow

AWS = str(Path(sys.executable).with_name("aws"))  # the venv's AWS CLI (test extra)


def test_get_root_is_an_unsigned_health_check(local_cluster: LocalCluster) -> None:
    endpoint = local_cluster.endpoints()["rt-a"]
    with urllib.request.urlopen(endpoint + "/", timeout=10) as reply:
        assert reply.status == 200
        body = reply.read().decode()
    assert body == f"healthy: {endpoint.removeprefix('http://')}"


class AwsCli:
    def __init__(self, cluster: LocalCluster) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": cluster.config.credentials[DEFAULT_ACCESS_KEY],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_PAGER": "",
        }
        self.endpoint = ["--endpoint-url", cluster.endpoints()["rt-a"], "--output", "json"]

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [AWS, "dynamodb", *args, *self.endpoint],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def __call__(self, *args: str) -> Any:
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else None


@pytest.fixture(scope="module")
def aws(local_cluster: LocalCluster) -> AwsCli:
    return AwsCli(local_cluster)


def test_aws_cli_items_and_legacy_parameters(aws: AwsCli, new_table: NewTable) -> None:
    name = new_table("cli", ("pk", "S"), ("n", "N"))
    item = {"pk": S("from-cli"), "n": N(1), "l": {"L": [S("x"), {"BOOL": True}]}}
    aws("put-item", "--table-name", name, "--item", json.dumps(item))
    got = aws(
        "get-item",
        "--table-name",
        name,
        "--key",
        json.dumps({"pk": S("from-cli"), "n": N(1)}),
        "--consistent-read",
    )
    assert got["Item"] == item
    # Legacy parameters, as older scripts pass them.
    failed = aws.run(
        "put-item",
        "--table-name",
        name,
        "--item",
        json.dumps(item),
        "--expected",
        json.dumps({"pk": {"Exists": False}}),
        ok=False,
    )
    assert failed.returncode != 0 and "ConditionalCheckFailedException" in failed.stderr
    aws(
        "update-item",
        "--table-name",
        name,
        "--key",
        json.dumps({"pk": S("from-cli"), "n": N(2)}),
        "--attribute-updates",
        json.dumps({"c": {"Action": "ADD", "Value": N(5)}}),
    )
    got = aws(
        "query",
        "--table-name",
        name,
        "--key-conditions",
        json.dumps(
            {
                "pk": {"ComparisonOperator": "EQ", "AttributeValueList": [S("from-cli")]},
                "n": {"ComparisonOperator": "GE", "AttributeValueList": [N(2)]},
            }
        ),
        "--attributes-to-get",
        "n",
        "c",
        "--consistent-read",
    )
    assert got["Items"] == [{"n": N(2), "c": N(5)}]
    got = aws(
        "scan",
        "--table-name",
        name,
        "--scan-filter",
        json.dumps({"l": {"ComparisonOperator": "NOT_NULL"}}),
        "--consistent-read",
    )
    assert got["Count"] == 1 and got["ScannedCount"] == 2


@pytest.fixture(scope="module")
def thing(local_cluster: LocalCluster) -> Any:
    class Thing(Model):
        class Meta:
            table_name = unique("pynamo")
            host = local_cluster.endpoints()["rt-a"]
            region = REGION
            aws_access_key_id = DEFAULT_ACCESS_KEY
            aws_secret_access_key = local_cluster.config.credentials[DEFAULT_ACCESS_KEY]
            billing_mode = "PAY_PER_REQUEST"
            max_retry_attempts = 2
            tags: ClassVar[dict[str, str]] = {"team": "sre"}

        owner = UnicodeAttribute(hash_key=True)
        seq = NumberAttribute(range_key=True)
        title = UnicodeAttribute(null=True)
        hits = NumberAttribute(default=0)
        labels = NumberSetAttribute(null=True)
        notes = ListAttribute(of=UnicodeAttribute, null=True)  # type: ignore[var-annotated]
        status = UnicodeAttribute(null=True)  # a reserved word: PynamoDB uses placeholders
        expires = TTLAttribute(null=True)  # create_table turns Time to Live on

    Thing.create_table(wait=True)
    yield Thing
    Thing.delete_table()


def test_pynamodb_model_round_trip(thing: Any) -> None:
    assert thing.exists()
    for seq in range(5):
        thing("ann", seq, title=f"t{seq}", labels={seq, 10}).save()
    thing("bob", 1, title="other").save()
    got = thing.get("ann", 3, consistent_read=True)
    assert (got.title, got.hits, got.labels) == ("t3", 0, {3, 10})
    # Conditional save: refused when the condition fails.
    with pytest.raises(PutError):
        thing("ann", 3, title="again").save(condition=thing.owner.does_not_exist())
    got.update(
        actions=[
            thing.hits.add(2),
            thing.notes.set(["a"]),
            thing.labels.delete({10}),
            thing.title.remove(),
        ]
    )
    got.refresh(consistent_read=True)
    assert (got.title, got.hits, got.labels, got.notes) == (None, 2, {3}, ["a"])
    page = list(
        thing.query(
            "ann",
            thing.seq.between(1, 3),
            filter_condition=thing.hits == 0,
            consistent_read=True,
            scan_index_forward=False,
        )
    )
    assert [t.seq for t in page] == [2, 1]
    assert thing.count("ann", consistent_read=True) == 5
    scanned = list(thing.scan(thing.title.startswith("t"), consistent_read=True))
    assert sorted(t.seq for t in scanned) == [0, 1, 2, 4]
    keys = [("ann", 0), ("ann", 4), ("bob", 1), ("zed", 9)]
    # Consistent: an eventual read right after the saves may miss one (it reaches a follower
    # that has not applied it yet: a router prefers one replica per partition for them).
    got_keys = thing.batch_get(keys, consistent_read=True)
    assert sorted((t.owner, t.seq) for t in got_keys) == keys[:3]
    with thing.batch_write() as batch:
        for seq in range(5):
            batch.delete(thing("ann", seq))
    assert thing.count("ann", consistent_read=True) == 0


def test_pynamodb_time_to_live_expires_items(thing: Any) -> None:
    # create_table sent UpdateTimeToLive for the TTLAttribute (PynamoDB has no
    # DescribeTimeToLive: boto3 describes it below); sent again, DynamoDB refuses it.
    with pytest.raises(TableError) as err:
        thing.update_ttl(ignore_update_ttl_errors=False)
    assert err.value.cause_response_message == "TimeToLive is already enabled"
    thing("ttl", 1, expires=timedelta(minutes=-1)).save()
    thing("ttl", 2, expires=timedelta(hours=1)).save()
    # Routers sweep every 2 s (cluster/router/ttl.py), rereading TTL settings every 6 s.
    deadline = time.monotonic() + 180  # a bound for a sweeper that never runs, not its pace
    while thing.count("ttl", consistent_read=True) > 1:
        assert time.monotonic() < deadline, "the expired item was not deleted within 180 s"
        time.sleep(0.5)
    assert [t.seq for t in thing.query("ttl", consistent_read=True)] == [2]
    thing("ttl", 2).delete()


def test_binary_key_sizes_through_the_cli_and_pynamodb(
    aws: AwsCli, new_table: NewTable, local_cluster: LocalCluster
) -> None:
    """Key size limits count a binary key's raw bytes, not its base64 text."""
    name = new_table("bin", ("pk", "B"), ("sk", "B"))
    # The AWS CLI v1 sends a B value's text as raw UTF-8 bytes, base64-encoding them itself (v2
    # expects base64 unless cli_binary_format is raw-in-base64-out). "é" is 2 bytes: 1024 of
    # them are the 2048-byte hash key limit exactly, 2732 characters of base64 on the wire.
    at_limit = {"pk": {"B": "é" * 1024}, "sk": {"B": "é" * 512}}
    aws("put-item", "--table-name", name, "--item", json.dumps(at_limit))
    got = aws("get-item", "--table-name", name, "--key", json.dumps(at_limit), "--consistent-read")
    assert base64.b64decode(got["Item"]["pk"]["B"]) == "é".encode() * 1024
    prefix = "One or more parameter values were invalid: Size of "
    for item, message in [
        (
            {"pk": {"B": "é" * 1024 + "x"}, "sk": {"B": "r"}},
            "hash key attribute pk exceeds the limit of 2048 bytes",
        ),
        (
            {"pk": {"B": "h"}, "sk": {"B": "é" * 512 + "x"}},
            "range key attribute sk exceeds the limit of 1024 bytes",
        ),
    ]:
        failed = aws.run("put-item", "--table-name", name, "--item", json.dumps(item), ok=False)
        assert "(ValidationException)" in failed.stderr, failed.stderr
        assert prefix + message in failed.stderr, failed.stderr

    class Blob(Model):
        class Meta:
            table_name = name
            host = local_cluster.endpoints()["rt-a"]
            region = REGION
            aws_access_key_id = DEFAULT_ACCESS_KEY
            aws_secret_access_key = local_cluster.config.credentials[DEFAULT_ACCESS_KEY]
            max_retry_attempts = 2

        pk = BinaryAttribute(hash_key=True, legacy_encoding=False)
        sk = BinaryAttribute(range_key=True, legacy_encoding=False)

    Blob(b"\xff" * 2048, b"\x00" * 1024).save()
    assert Blob.get(b"\xff" * 2048, b"\x00" * 1024, consistent_read=True).sk == b"\x00" * 1024
    with pytest.raises(PutError) as err:
        Blob(b"\xff" * 2049, b"r").save()
    assert err.value.cause_response_message == prefix + (
        "hash key attribute pk exceeds the limit of 2048 bytes"
    )


def test_aws_cli_table_settings(aws: AwsCli, new_table: NewTable) -> None:
    name = new_table("clis")
    arn = aws("describe-table", "--table-name", name)["Table"]["TableArn"]
    aws("tag-resource", "--resource-arn", arn, "--tags", "Key=owner,Value=sre")
    assert aws("list-tags-of-resource", "--resource-arn", arn)["Tags"] == [
        {"Key": "owner", "Value": "sre"}
    ]
    spec = aws(
        "update-time-to-live",
        "--table-name",
        name,
        "--time-to-live-specification",
        "Enabled=true,AttributeName=expires",
    )
    assert spec["TimeToLiveSpecification"] == {"Enabled": True, "AttributeName": "expires"}
    assert aws("describe-time-to-live", "--table-name", name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires",
    }
    again = aws.run(
        "update-time-to-live",
        "--table-name",
        name,
        "--time-to-live-specification",
        "Enabled=true,AttributeName=expires",
        ok=False,
    )
    assert "(ValidationException)" in again.stderr, again.stderr
    assert "TimeToLive is already enabled" in again.stderr, again.stderr
    aws(
        "update-time-to-live",
        "--table-name",
        name,
        "--time-to-live-specification",
        "Enabled=false,AttributeName=expires",
    )
    assert aws("describe-time-to-live", "--table-name", name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "DISABLED"
    }
    table = aws(
        "update-table",
        "--table-name",
        name,
        "--billing-mode",
        "PROVISIONED",
        "--provisioned-throughput",
        "ReadCapacityUnits=3,WriteCapacityUnits=4",
    )["TableDescription"]
    assert table["BillingModeSummary"]["BillingMode"] == "PROVISIONED"
    aws("put-item", "--table-name", name, "--item", json.dumps({"pk": S("x")}))
    got = aws(
        "scan",
        "--table-name",
        name,
        "--segment",
        "0",
        "--total-segments",
        "1",
        "--return-consumed-capacity",
        "TOTAL",
    )
    assert got["Count"] == 1 and got["ConsumedCapacity"]["CapacityUnits"] == 0.5
    assert aws("describe-limits")["AccountMaxReadCapacityUnits"] == 80000


def test_pynamodb_table_settings_capacity_and_validation(thing: Any, ddb: Client) -> None:
    table = thing.describe_table()
    assert uuid.UUID(table["TableId"]).version == 4
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    name = thing.Meta.table_name
    # Meta.tags went out with CreateTable, the TTLAttribute as UpdateTimeToLive.
    assert ddb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"] == [
        {"Key": "team", "Value": "sre"}
    ]
    assert ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires",
    }
    # Reserved words as attribute names, through PynamoDB's placeholders.
    thing("cy", 1, status="active").save(condition=thing.status.does_not_exist())
    got = thing.get("cy", 1, consistent_read=True, attributes_to_get=["status"])
    assert (got.status, got.title) == ("active", None)
    conn = TableConnection(
        name,
        host=thing.Meta.host,
        region=REGION,
        aws_access_key_id=thing.Meta.aws_access_key_id,
        aws_secret_access_key=thing.Meta.aws_secret_access_key,
    )
    conn.describe_table()  # loads the key schema the connection needs
    # UpdateTable: PynamoDB sends throughput alone, which an on-demand table refuses.
    with pytest.raises(TableError, match="Neither ReadCapacityUnits nor WriteCapacityUnits can"):
        conn.update_table(read_capacity_units=5, write_capacity_units=5)
    # A REMOVE-only update of a missing item creates no item (so DynamoDB returns no
    # Attributes, which Model.update's ALL_NEW cannot take: the connection call it is).
    conn.update_item("ghost", "1", actions=[thing.title.remove()])
    assert thing.count("ghost", consistent_read=True) == 0
    # The connection passes raw AttributeValues through with botocore's parameter validation
    # off, so PynamoDB (unlike boto3 and the AWS CLI) can send {"N": 123}.
    with pytest.raises(PutError) as bad:
        conn.put_item("cy", "2", attributes={"hits": {"N": 123}})
    assert bad.value.cause_response_code == "SerializationException"
    # DynamoDB's validation reaches PynamoDB as its errors, with DynamoDB's words.
    with pytest.raises(QueryError, match="BETWEEN operator requires upper bound"):
        list(thing.query("cy", thing.seq.between(5, 1)))
    with pytest.raises(
        UpdateError,
        match="ExpressionAttributeValues contains invalid value: The "
        "parameter cannot be converted to a numeric value",
    ):
        thing("cy", 1).update(actions=[thing.hits.add("text")])  # type: ignore[arg-type]
    # Parallel Scan and ReturnConsumedCapacity (PynamoDB asks TOTAL on every data call).
    seen = []
    for segment in range(3):
        page = conn.scan(
            segment=segment,
            total_segments=3,
            consistent_read=True,
            return_consumed_capacity="INDEXES",
        )
        seen += [(i["owner"]["S"], i["seq"]["N"]) for i in page["Items"]]
        assert page["ConsumedCapacity"]["Table"]["CapacityUnits"] >= 1.0
    assert sorted(seen) == sorted((t.owner, str(t.seq)) for t in thing.scan(consistent_read=True))
    assert ("cy", "1") in seen


def test_aws_cli_capacity_validation_and_remaining_legacy(aws: AwsCli) -> None:
    name = unique("cli3")
    created = aws(
        "create-table",
        "--table-name",
        name,
        "--attribute-definitions",
        "AttributeName=pk,AttributeType=S",
        "AttributeName=sk,AttributeType=N",
        "--key-schema",
        "AttributeName=pk,KeyType=HASH",
        "AttributeName=sk,KeyType=RANGE",
        "--billing-mode",
        "PAY_PER_REQUEST",
        "--sse-specification",
        "Enabled=false",
        "--tags",
        "Key=a,Value=1",
        "Key=b,Value=2",
    )["TableDescription"]
    try:
        assert uuid.UUID(created["TableId"]).version == 4
        aws("wait", "table-exists", "--table-name", name)
        arn = created["TableArn"]
        aws("untag-resource", "--resource-arn", arn, "--tag-keys", "a")
        assert aws("list-tags-of-resource", "--resource-arn", arn)["Tags"] == [
            {"Key": "b", "Value": "2"}
        ]
        assert aws("describe-endpoints")["Endpoints"][0]["CachePeriodInMinutes"] == 1440
        _cli_capacity_and_legacy(aws, name)
        _cli_validation(aws, name)
        table = aws("describe-table", "--table-name", name)["Table"]
        assert table["ItemCount"] == 3
        assert table["TableSizeBytes"] > 0
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    finally:
        aws("delete-table", "--table-name", name)


def _cli_capacity_and_legacy(aws: AwsCli, name: str) -> None:
    items = [{"pk": S("p"), "sk": N(i), "tag": S("blue"), "w": N(i)} for i in range(3)]
    items[1]["tag"] = S("red")
    put = aws(
        "put-item",
        "--table-name",
        name,
        "--item",
        json.dumps(items[0]),
        "--return-consumed-capacity",
        "INDEXES",
        "--return-item-collection-metrics",  # accepted; metrics exist only with an LSI
        "SIZE",
    )
    assert "ItemCollectionMetrics" not in put
    assert put["ConsumedCapacity"] == {
        "TableName": name,
        "CapacityUnits": 1.0,
        "Table": {"CapacityUnits": 1.0},
    }
    wrote = aws(
        "batch-write-item",
        "--request-items",
        json.dumps({name: [{"PutRequest": {"Item": i}} for i in items[1:]]}),
        "--return-consumed-capacity",
        "TOTAL",
    )
    assert wrote["ConsumedCapacity"] == [{"TableName": name, "CapacityUnits": 2.0}]
    keys = [{"pk": S("p"), "sk": N(i)} for i in (0, 1, 9)]
    got = aws(
        "batch-get-item",
        "--request-items",
        json.dumps({name: {"Keys": keys, "AttributesToGet": ["sk"], "ConsistentRead": True}}),
        "--return-consumed-capacity",
        "TOTAL",
    )
    assert sorted(i["sk"]["N"] for i in got["Responses"][name]) == ["0", "1"]
    assert all(set(i) == {"sk"} for i in got["Responses"][name])
    assert got["ConsumedCapacity"] == [{"TableName": name, "CapacityUnits": 3.0}]
    # QueryFilter with ConditionalOperator OR, as older scripts pass them.
    queried = aws(
        "query",
        "--table-name",
        name,
        "--key-conditions",
        json.dumps({"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [S("p")]}}),
        "--query-filter",
        json.dumps(
            {
                "tag": {"ComparisonOperator": "EQ", "AttributeValueList": [S("blue")]},
                "w": {"ComparisonOperator": "GT", "AttributeValueList": [N(5)]},
            }
        ),
        "--conditional-operator",
        "OR",
        "--consistent-read",
        "--return-consumed-capacity",
        "TOTAL",
    )
    assert [i["sk"]["N"] for i in queried["Items"]] == ["0", "2"]
    assert queried["ConsumedCapacity"]["CapacityUnits"] == 1.0


def _cli_validation(aws: AwsCli, name: str) -> None:
    key = json.dumps({"pk": S("p"), "sk": N(0)})
    values = json.dumps({":v": N(1)})
    for args, message in [
        (
            ["update-item", "--key", key, "--update-expression", "SET status = :v"],
            "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: "
            "status",
        ),
        (
            ["scan", "--filter-expression", "((tag = :v))"],
            "Invalid FilterExpression: The expression has redundant parentheses;",
        ),
        (
            [
                "query",
                "--key-condition-expression",
                "pk = :v",
                "--filter-expression",
                "sk > :v",
            ],
            "Filter Expression can only contain non-primary key attributes: Primary key "
            "attribute: sk",
        ),
        (
            ["query", "--index-name", "byTag", "--key-condition-expression", "pk = :v"],
            "The table does not have the specified index: byTag",
        ),
        (
            [
                "query",
                "--key-conditions",
                json.dumps({"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [S("p")]}}),
                "--query-filter",
                json.dumps({"sk": {"ComparisonOperator": "GT", "AttributeValueList": [N(0)]}}),
            ],
            "QueryFilter can only contain non-primary key attributes: Primary key attribute: sk",
        ),
    ]:
        legacy = "--query-filter" in args
        failed = aws.run(
            *args,
            "--table-name",
            name,
            *([] if legacy else ["--expression-attribute-values", values]),
            ok=False,
        )
        assert failed.returncode != 0 and "(ValidationException)" in failed.stderr, failed.stderr
        assert message in failed.stderr, failed.stderr
    _cli_exact_validation(aws, name, key)
    # A REMOVE-only update of a missing item creates nothing.
    ghost = json.dumps({"pk": S("ghost"), "sk": N(1)})
    aws("update-item", "--table-name", name, "--key", ghost, "--update-expression", "REMOVE tag")
    assert aws("get-item", "--table-name", name, "--key", ghost, "--consistent-read") is None


def _cli_exact_validation(aws: AwsCli, name: str, key: str) -> None:
    """DynamoDB's validation, exactly, as the AWS CLI shows it (constants type-checked at
    parse time, syntax errors first, names starting with ``_``, projection paths)."""

    def values(**v: Any) -> list[str]:
        return ["--expression-attribute-values", json.dumps({f":{k}": x for k, x in v.items()})]

    def invalid(kind: str) -> str:
        return f"Invalid {kind}: Incorrect operand type for operator or function; "

    cases: list[tuple[list[str], str]] = [
        (
            ["scan", "--filter-expression", "begins_with(tag, :v)", *values(v=N(1))],
            invalid("FilterExpression") + "operator or function: begins_with, operand type: N",
        ),
        (
            ["scan", "--filter-expression", "tag < :l", *values(l={"L": []})],
            invalid("FilterExpression") + "operator: <, operand type: LIST",
        ),
        (  # the syntax error comes before the undefined value
            ["scan", "--filter-expression", "w = = :undefined"],
            'Invalid FilterExpression: Syntax error; token: "=", near: "= = :undefined"',
        ),
        (
            ["scan", "--filter-expression", "pk = :v AND __kind = :v", *values(v=N(1))],
            'Invalid FilterExpression: Syntax error; token: "_", near: "AND __"',
        ),
        (
            [
                "put-item",
                "--item",
                key,
                "--condition-expression",
                "w BETWEEN :hi AND :lo",
                *values(hi=N(5), lo=N(1)),
            ],
            "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be "
            "greater than or equal to lower bound; lower bound operand: AttributeValue: {N:5}, "
            "upper bound operand: AttributeValue: {N:1}",
        ),
        (
            ["update-item", "--key", key, "--update-expression", "ADD m :m", *values(m={"M": {}})],
            invalid("UpdateExpression") + "operator: ADD, operand type: MAP, typeSet: "
            "ALLOWED_FOR_ADD_OPERAND",
        ),
        (  # legacy and expression parameters never mix
            [
                "delete-item",
                "--key",
                key,
                "--expected",
                json.dumps({"tag": {"Exists": True}}),
                "--condition-expression",
                "attribute_exists(tag)",
            ],
            "Can not use both expression and non-expression parameters in the same request: "
            "Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
        ),
        (
            ["get-item", "--key", key, "--projection-expression", "a, a.b"],
            "Invalid ProjectionExpression: Two document paths overlap with each other; must "
            "remove or rewrite one of these paths; path one: [a], path two: [a, b]",
        ),
        (
            ["get-item", "--key", key, "--projection-expression", "a[0], a.b"],
            "Invalid ProjectionExpression: Two document paths conflict with each other; must "
            "remove or rewrite one of these paths; path one: [a, [0]], path two: [a, b]",
        ),
        (
            ["get-item", "--key", key, "--projection-expression", "a" + ".b" * 32],
            "Invalid ProjectionExpression: The document path has too many nesting levels; "
            "nesting levels: 33",
        ),
    ]
    for args, message in cases:
        failed = aws.run(*args, "--table-name", name, ok=False)
        assert failed.returncode != 0 and "(ValidationException)" in failed.stderr, failed.stderr
        assert message in failed.stderr, (args, failed.stderr)
    # size() takes a name placeholder (a reserved word here); list indexes past the end
    # append in index order.
    listed = json.dumps({"pk": S("list"), "sk": N(1), "status": S("ok"), "l": {"L": [N(0)]}})
    aws(
        "put-item",
        "--table-name",
        name,
        "--item",
        listed,
        "--condition-expression",
        "attribute_not_exists(#s) OR size(#s) < :n",
        "--expression-attribute-names",
        json.dumps({"#s": "status"}),
        *values(n=N(1)),
    )
    new = aws(
        "update-item",
        "--table-name",
        name,
        "--key",
        json.dumps({"pk": S("list"), "sk": N(1)}),
        "--update-expression",
        "SET l[9] = :nine, l[5] = :five, l[7] = :seven",
        *values(nine=N(9), five=N(5), seven=N(7)),
        "--return-values",
        "ALL_NEW",
    )["Attributes"]
    assert new["l"] == {"L": [N(0), N(5), N(7), N(9)]}
    aws("delete-item", "--table-name", name, "--key", json.dumps({"pk": S("list"), "sk": N(1)}))
