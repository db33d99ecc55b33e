"""Real clients other than boto3 against the session cluster: the AWS CLI and PynamoDB, used
unchanged, plus DynamoDB's unsigned health check (``GET /``).

The AWS CLI gets its endpoint and credentials from the command line and the environment only
(config and credentials files point at /dev/null): the user's ~/.aws is never read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pynamodb.attributes import (
    ListAttribute,
    NumberAttribute,
    NumberSetAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import PutError
from pynamodb.models import Model

from chaos.backends.base import DEFAULT_ACCESS_KEY
from chaos.backends.local import LocalCluster
from tests.cluster.router.test_api_boto3 import REGION, N, NewTable, S, unique

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

        owner = UnicodeAttribute(hash_key=True)
        seq = NumberAttribute(range_key=True)
        title = UnicodeAttribute(null=True)
        hits = NumberAttribute(default=0)
        labels = NumberSetAttribute(null=True)
        notes = ListAttribute(of=UnicodeAttribute, null=True)  # type: ignore[var-annotated]

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
    assert sorted((t.owner, t.seq) for t in thing.batch_get(keys)) == keys[:3]
    with thing.batch_write() as batch:
        for seq in range(5):
            batch.delete(thing("ann", seq))
    assert thing.count("ann", consistent_read=True) == 0


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
