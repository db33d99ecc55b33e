"""Tags, Time to Live and deletion protection in DynamoDB's words, through boto3 against the session
cluster.

The messages are the ones DynamoDB answers (TagResource's 'The Tag Key provided is invalid',
'Atleast one Tag ...', UpdateTimeToLive's 'TimeToLive is active on a different AttributeName');
a refused tag request changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.router.test_api_boto3 import Client, NewTable, expect_error, unique

pytestmark = pytest.mark.slow


def _message(err: Any) -> str:
    return str(err.response["Error"]["Message"])


def _tags(raw: Client, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.list_tags_of_resource(ResourceArn=arn)["Tags"]}


def test_tag_resource_refusals(raw: Client, new_table: NewTable) -> None:
    name = new_table("tagmsg")
    arn = raw.describe_table(TableName=name)["Table"]["TableArn"]
    raw.tag_resource(ResourceArn=arn, Tags=[{"Key": "keep", "Value": "1"}])
    refused = [
        ([], "Atleast one Tag needs to be provided as Input."),
        ([{"Key": "k" * 129, "Value": "v"}], f"The Tag Key provided is invalid, Key: {'k' * 129}"),
        ([{"Key": "", "Value": "v"}], "The Tag Key provided is invalid, Key: "),
        ([{"Key": "bad#char", "Value": "v"}], "The Tag Key provided is invalid, Key: bad#char"),
        ([{"Key": "k", "Value": "100%"}], "The Tag Value provided is invalid, Value: 100%"),
        (
            [{"Key": "k", "Value": "v" * 257}],
            f"The Tag Value provided is invalid, Value: {'v' * 257}",
        ),
        ([{"Key": "k"}], "The Tag Value provided is invalid, Value: null"),
        ([{"Value": "v"}], "The Tag Key provided is invalid, Key: null"),
        ([{"Key": "AWS:x", "Value": "v"}], "Tag Key cannot be prefixed with aws:, Key: AWS:x"),
        (
            [{"Key": "ok", "Value": "1"}, {"Key": "d", "Value": "1"}, {"Key": "d", "Value": "2"}],
            "Duplicate Tag Keys provided as input: Duplicate Tag Key found d",
        ),
        (
            [{"Key": f"k{i}", "Value": ""} for i in range(50)],
            "Number of Tags exceed the current limit for the provided ResourceArn",
        ),
    ]
    for tags, message in refused:
        err = expect_error("ValidationException", raw.tag_resource, ResourceArn=arn, Tags=tags)
        assert _message(err) == message, tags
    assert _tags(raw, arn) == {"keep": "1"}  # all or nothing: no refused request changed it
    # Letters of any script, spaces, + - = . _ : / @ and an empty value are fine.
    fine = {"ключ 表": "café", "a+b-c=d.e_f:g/h@i": "", "myaws:x": "v"}
    raw.tag_resource(ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in fine.items()])
    assert _tags(raw, arn) == {"keep": "1", **fine}


def test_untag_and_missing_resource_refusals(raw: Client, new_table: NewTable) -> None:
    name = new_table("untagmsg")
    arn = raw.describe_table(TableName=name)["Table"]["TableArn"]
    for keys, message in [
        ([], "Atleast one Tag Key needs to be provided as Input."),
        (["aws:foo"], "Tag Key cannot be prefixed with aws:, Key: aws:foo"),
        (["k" * 129], f"The Tag Key provided is invalid, Key: {'k' * 129}"),
        (
            [f"k{i}" for i in range(51)],
            "Number of Tags exceed the current limit for the provided ResourceArn",
        ),
    ]:
        err = expect_error("ValidationException", raw.untag_resource, ResourceArn=arn, TagKeys=keys)
        assert _message(err) == message
    missing = arn.rsplit("/", 1)[0] + "/" + unique("gone")
    for call, extra in [
        (raw.tag_resource, {"Tags": [{"Key": "k", "Value": "v"}]}),
        (raw.untag_resource, {"TagKeys": ["k"]}),
        (raw.list_tags_of_resource, {}),
    ]:
        err = expect_error("ResourceNotFoundException", call, ResourceArn=missing, **extra)
        assert _message(err) == f"Requested resource not found: ResourceArn: {missing} not found"


def test_update_time_to_live_refusals(raw: Client, new_table: NewTable) -> None:
    name = new_table("ttlmsg")
    ttl = raw.update_time_to_live
    for spec, message in [
        ({"Enabled": True}, "Value null at 'timeToLiveSpecification.attributeName'"),
        ({"AttributeName": "e"}, "Value null at 'timeToLiveSpecification.enabled'"),
        (
            {"Enabled": True, "AttributeName": "x" * 256},
            "Member must have length less than or equal to 255",
        ),
        (
            {"Enabled": True, "AttributeName": ""},
            "Member must have length greater than or equal to 1",
        ),
        ({"Enabled": False, "AttributeName": "e"}, "TimeToLive is already disabled"),
    ]:
        err = expect_error("ValidationException", ttl, TableName=name, TimeToLiveSpecification=spec)
        assert message in _message(err), spec
    ttl(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "e"})
    different = "TimeToLive is active on a different AttributeName: current AttributeName is e"
    for spec, message in [
        ({"Enabled": True, "AttributeName": "e"}, "TimeToLive is already enabled"),
        ({"Enabled": True, "AttributeName": "f"}, different),
        ({"Enabled": False, "AttributeName": "f"}, different),
    ]:
        err = expect_error("ValidationException", ttl, TableName=name, TimeToLiveSpecification=spec)
        assert _message(err) == message, spec
    described = raw.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": "e"}


def test_deletion_protection_and_table_class(raw: Client, new_table: NewTable) -> None:
    name = new_table("protect", DeletionProtectionEnabled=True)
    described = raw.describe_table(TableName=name)["Table"]
    assert described["DeletionProtectionEnabled"] is True
    assert described["TableClassSummary"] == {"TableClass": "STANDARD"}
    err = expect_error("ValidationException", raw.delete_table, TableName=name)
    assert _message(err) == (
        "Resource cannot be deleted as it is currently protected against deletion. Disable "
        "deletion protection first."
    )
    assert raw.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"
    raw.put_item(TableName=name, Item={"pk": {"S": "still here"}})
    updated = raw.update_table(
        TableName=name, TableClass="STANDARD_INFREQUENT_ACCESS", DeletionProtectionEnabled=False
    )["TableDescription"]
    assert updated["TableClassSummary"] == {"TableClass": "STANDARD_INFREQUENT_ACCESS"}
    assert updated["DeletionProtectionEnabled"] is False
    described = raw.describe_table(TableName=name)["Table"]
    assert described["TableClassSummary"] == {"TableClass": "STANDARD_INFREQUENT_ACCESS"}
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert raw.delete_table(TableName=name)["TableDescription"]["TableStatus"] == "DELETING"
