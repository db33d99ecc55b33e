"""Table settings and account facts: UpdateTable, tags, Time to Live, DescribeEndpoints,
DescribeLimits.

Settings live in the table's spec in the replicated partition map (``TableSpec``); a change
rewrites the spec (read, modify, write the newest map; concurrent changes to one table's
settings: the last write wins, as it would for two UpdateTable calls in DynamoDB). None of it
moves a partition. Expiry of items whose Time to Live has passed is ``cluster.router.ttl``'s.

    await update_table(ctx, {"TableName": "t", "BillingMode": "PAY_PER_REQUEST"})
    await tag_resource(ctx, {"ResourceArn": arn, "Tags": [{"Key": "team", "Value": "sre"}]})
    await update_time_to_live(ctx, {"TableName": "t", "TimeToLiveSpecification":
                                    {"Enabled": True, "AttributeName": "expires"}})
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cluster.metadata.partitionmap import TableLayout, TableSpec, next_version
from cluster.metadata.store import MetadataUnavailable

from . import validate as v
from .context import RouterContext
from .errors import DynamoError
from .tables import (
    MAX_TAGS,
    TAG_LIMIT,
    capacity_units,
    check_tag_key,
    describe,
    merge_tags,
    pay_per_request_since,
)

_ARN = re.compile(r"^arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/(?P<name>[a-zA-Z0-9_.-]{3,255})$")
LIMITS = {
    "AccountMaxReadCapacityUnits": 80000,
    "AccountMaxWriteCapacityUnits": 80000,
    "TableMaxReadCapacityUnits": 40000,
    "TableMaxWriteCapacityUnits": 40000,
}


async def change_spec(
    ctx: RouterContext, name: str, change: Callable[[TableSpec], TableSpec]
) -> TableLayout:
    """Rewrite an ACTIVE table's spec with ``change`` in the partition map; the new layout."""
    try:
        current = await ctx.metadata.read_map()
        layout = current.tables.get(name)
        if layout is None:
            raise DynamoError.not_found(name)
        if layout.spec.status != "ACTIVE":
            raise DynamoError.in_use(
                f"Attempt to change a resource which is still in use: Table is being "
                f"{'created' if layout.spec.status == 'CREATING' else 'deleted'}: {name}"
            )
        changed = TableLayout(change(layout.spec), layout.partitions)
        version = next_version(current.version)
        if not await ctx.metadata.update(changed, version):
            raise DynamoError.not_found(name)  # deleted (or created again) since it was read
    except MetadataUnavailable as exc:
        raise DynamoError.unavailable(str(exc)) from None
    ctx.resolver.learn(name, changed, version)
    return changed


# --- UpdateTable -----------------------------------------------------------------------------


async def update_table(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name = v.table_name(request, "UpdateTable")
    for member in ("GlobalSecondaryIndexUpdates", "ReplicaUpdates", "StreamSpecification"):
        if request.get(member):
            raise DynamoError.validation(f"{member} is not supported by this cluster")
    mode = v.field(request, "BillingMode", str)
    throughput = v.field(request, "ProvisionedThroughput", dict)
    settings = ("TableClass", "DeletionProtectionEnabled", "SSESpecification")
    if mode is None and throughput is None and not any(k in request for k in settings):
        raise DynamoError.validation(
            "At least one of ProvisionedThroughput, BillingMode, UpdateStreamEnabled, "
            "GlobalSecondaryIndexUpdates or SSESpecification or ReplicaUpdates is required"
        )
    asked = None if throughput is None else capacity_units(throughput)  # before the lookup
    layout = await ctx.table(name, active=False)
    if layout.spec.status != "ACTIVE":
        raise DynamoError.in_use(f"Attempt to change a resource which is still in use: {name}")
    target = mode or layout.spec.billing_mode
    if target == "PAY_PER_REQUEST":
        if throughput is not None:
            raise DynamoError.validation(
                "One or more parameter values were invalid: Neither ReadCapacityUnits nor "
                "WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST"
            )
        rcu, wcu = 0, 0
    elif asked is None:
        if layout.spec.billing_mode == "PROVISIONED":
            rcu, wcu = layout.spec.read_capacity, layout.spec.write_capacity
        else:
            raise DynamoError.validation(
                "One or more parameter values were invalid: ProvisionedThroughput must be "
                "specified when BillingMode is PROVISIONED"
            )
    else:
        rcu, wcu = asked
        spec = layout.spec
        if mode is None and (rcu, wcu) == (spec.read_capacity, spec.write_capacity):
            raise DynamoError.validation(
                "The provisioned throughput for the table will not change. The requested value "
                "equals the current value. Current ReadCapacityUnits provisioned for the table: "
                f"{rcu}. Requested ReadCapacityUnits: {rcu}. Current WriteCapacityUnits "
                f"provisioned for the table: {wcu}. Requested WriteCapacityUnits: {wcu}. Refer "
                "to the Amazon DynamoDB Developer Guide for current limits and how to request "
                "higher limits."
            )
    now = time.time()
    table_class = v.field(request, "TableClass", str)
    protect = v.field(request, "DeletionProtectionEnabled", bool)
    sse = v.field(request, "SSESpecification", dict)
    sse_enabled = None if sse is None else v.field(sse, "Enabled", bool)

    def apply(spec: TableSpec) -> TableSpec:
        # billing_changed_at: when the table last became on-demand by UpdateTable, kept when it
        # goes back to PROVISIONED (DescribeTable's LastUpdateToPayPerRequestDateTime).
        if target == "PAY_PER_REQUEST" and spec.billing_mode != target:
            changed = now
        else:
            changed = pay_per_request_since(spec)
        return replace(
            spec,
            billing_mode=target,
            read_capacity=rcu,
            write_capacity=wcu,
            billing_changed_at=changed,
            table_class=table_class or spec.table_class,
            deletion_protection=spec.deletion_protection if protect is None else protect,
            sse=spec.sse if sse_enabled is None else sse_enabled,
        )

    updated = await change_spec(ctx, name, apply)
    ctx.registered.discard(name)
    await ctx.register_capacity(updated)  # GAC's buckets follow the new capacity
    return {"TableDescription": describe(updated)}


# --- tags ------------------------------------------------------------------------------------


def _arn_table(request: dict[str, Any]) -> tuple[str, str]:
    """(table name, ARN) of the request's ResourceArn."""
    arn: str = v.field(request, "ResourceArn", str, required=True)
    match = _ARN.match(arn)
    if match is None:
        raise DynamoError.validation(
            f"Invalid TableArn: Invalid ResourceArn provided as input {arn}"
        )
    return match["name"], arn


def _arn_not_found(arn: str) -> DynamoError:
    return DynamoError(
        "ResourceNotFoundException", f"Requested resource not found: ResourceArn: {arn} not found"
    )


async def _change_tags(
    ctx: RouterContext, name: str, arn: str, change: Callable[[TableSpec], TableSpec]
) -> None:
    try:
        await change_spec(ctx, name, change)
    except DynamoError as exc:
        if exc.type == "ResourceNotFoundException":
            raise _arn_not_found(arn) from None
        raise


async def tag_resource(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name, arn = _arn_table(request)
    tags = v.field(request, "Tags", list, required=True)
    if not tags:
        raise DynamoError.validation("Atleast one Tag needs to be provided as Input.")
    merge_tags((), tags)  # refuse a bad tag before touching the map
    await _change_tags(ctx, name, arn, lambda s: replace(s, tags=merge_tags(s.tags, tags)))
    return {}


async def untag_resource(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name, arn = _arn_table(request)
    keys = v.field(request, "TagKeys", list, required=True)
    if not keys:
        raise DynamoError.validation("Atleast one Tag Key needs to be provided as Input.")
    gone = {check_tag_key(k) for k in keys}
    if len(keys) > MAX_TAGS:
        raise DynamoError.validation(TAG_LIMIT)
    await _change_tags(
        ctx, name, arn, lambda s: replace(s, tags=tuple(t for t in s.tags if t[0] not in gone))
    )
    return {}


async def list_tags_of_resource(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name, arn = _arn_table(request)
    try:
        layout = await ctx.table(name, active=False)
    except DynamoError as exc:
        if exc.type == "ResourceNotFoundException":
            raise _arn_not_found(arn) from None
        raise
    return {"Tags": [{"Key": k, "Value": value} for k, value in layout.spec.tags]}


# --- Time to Live ----------------------------------------------------------------------------


def ttl_description(spec: TableSpec) -> dict[str, Any]:
    if spec.ttl_attribute is None:
        return {"TimeToLiveStatus": "DISABLED"}
    return {"TimeToLiveStatus": "ENABLED", "AttributeName": spec.ttl_attribute}


async def describe_time_to_live(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    layout = await ctx.table(v.table_name(request, "DescribeTimeToLive"), active=False)
    return {"TimeToLiveDescription": ttl_description(layout.spec)}


async def update_time_to_live(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name = v.table_name(request, "UpdateTimeToLive")
    spec = v.field(request, "TimeToLiveSpecification", dict, required=True)
    missing = [m for m in ("Enabled", "AttributeName") if spec.get(m) is None]
    if missing:  # both missing: DynamoDB lists both, Enabled first
        raise DynamoError.validation(
            f"{len(missing)} validation error{'s' if len(missing) > 1 else ''} detected: "
            + "; ".join(
                f"Value null at 'timeToLiveSpecification.{m[0].lower()}{m[1:]}' failed to "
                "satisfy constraint: Member must not be null"
                for m in missing
            )
        )
    enabled = v.field(spec, "Enabled", bool)
    attribute: str = v.field(spec, "AttributeName", str)
    if not 1 <= len(attribute) <= 255:
        bound = "less than or equal to 255" if attribute else "greater than or equal to 1"
        raise DynamoError.validation(
            f"1 validation error detected: Value '{attribute}' at "
            "'timeToLiveSpecification.attributeName' failed to satisfy constraint: Member must "
            f"have length {bound}"
        )
    layout = await ctx.table(name, active=False)
    current = layout.spec.ttl_attribute
    if current is not None and current != attribute:
        raise DynamoError.validation(
            f"TimeToLive is active on a different AttributeName: current AttributeName is {current}"
        )
    if enabled and current is not None:
        raise DynamoError.validation("TimeToLive is already enabled")
    if not enabled and current is None:
        raise DynamoError.validation("TimeToLive is already disabled")
    await change_spec(ctx, name, lambda s: replace(s, ttl_attribute=attribute if enabled else None))
    return {"TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": attribute}}


# --- account-wide facts ----------------------------------------------------------------------


async def describe_endpoints(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    address = ctx.config.process(ctx.router_id).listen
    return {"Endpoints": [{"Address": address, "CachePeriodInMinutes": 1440}]}


async def describe_limits(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    return dict(LIMITS)
