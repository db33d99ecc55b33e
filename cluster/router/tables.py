"""Table operations (the control plane): CreateTable, DescribeTable, ListTables, DeleteTable.

CreateTable places the partitions (3 replicas on 3 AZs), records the table as CREATING in the
replicated metadata group (a conditional write: two routers cannot both create it), and starts
its build (tablebuild.py: the replication groups created on their storage nodes, each elects a
leader, then the table is marked ACTIVE). DeleteTable leaves a tombstone so the map's version
only grows, and drops the table's groups; the name is not used again before enough nodes
dropped them (tabledrain.py).

    description = await create_table(ctx, {"TableName": "t", "KeySchema": [...], ...})
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import unicodedata
import uuid
from dataclasses import replace
from typing import Any, cast

from cluster.dynamo.values import item_size
from cluster.metadata.partitionmap import (
    BillingMode,
    KeySchema,
    KeyType,
    Partition,
    TableLayout,
    TableSpec,
    build_layout,
    next_version,
)
from cluster.metadata.store import Drain, MetadataUnavailable, TableExists
from cluster.topology import parse_topology

from . import validate as v
from .context import RouterContext
from .errors import DynamoError
from .tablebuild import ANSWER_WAIT, resume_stale, start_build, wait_built
from .tabledrain import drain_once, in_use_message, new_drain

ACCOUNT = "000000000000"
REGION = "local"

_UNSUPPORTED = (
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
)
COUNT_LIMIT = 100_000  # items counted per partition for DescribeTable's ItemCount
MAX_TAGS = 50
COUNT_SECONDS = 3.0  # the longest DescribeTable spends counting items


def _key_schema(request: dict[str, Any]) -> KeySchema:
    schema = v.field(request, "KeySchema", list, required=True)
    definitions = v.field(request, "AttributeDefinitions", list, required=True)
    broken = []
    for i, d in enumerate(definitions, 1):
        d = d if isinstance(d, dict) else {}
        for member in ("AttributeName", "AttributeType"):
            at = f"at 'attributeDefinitions.{i}.member.{member[0].lower()}{member[1:]}'"
            if d.get(member) is None:
                broken.append(
                    f"Value null {at} failed to satisfy constraint: Member must not be null"
                )
            elif member == "AttributeType" and d[member] not in v.KEY_TYPES:
                broken.append(
                    f"Value '{d[member]}' {at} failed to satisfy constraint: Member must satisfy "
                    "enum value set: [B, N, S]"
                )
    if broken:
        count = f"{len(broken)} validation error{'s' if len(broken) > 1 else ''} detected"
        raise DynamoError.validation(f"{count}: {'; '.join(broken)}")
    types: dict[str, str] = {}
    for d in definitions:
        if str(d["AttributeName"]) in types:
            raise DynamoError.validation(
                "Cannot have two attributes with the same name: "
                f"{d['AttributeName']} appears twice in AttributeDefinitions"
            )
        types[str(d["AttributeName"])] = str(d["AttributeType"])
    roles = [(e.get("KeyType"), e.get("AttributeName")) for e in schema if isinstance(e, dict)]
    if len(roles) != len(schema) or not 1 <= len(roles) <= 2:
        raise DynamoError.validation(
            "Invalid KeySchema: it must hold one HASH key, optionally followed by one RANGE key"
        )
    names = [str(name) for _, name in roles]
    # DynamoDB's order: a two-element schema naming an undefined attribute, one name twice,
    # then the key types; a one-element schema's undefined name is reported with both lists.
    if len(names) == 2 and (len(types) < 2 or any(name not in types for name in names)):
        raise DynamoError.validation(
            "Invalid KeySchema: Some index key attribute have no definition"
        )
    if len(names) == 2 and names[0] == names[1]:
        raise DynamoError.validation(
            "Both the Hash Key and the Range Key element in the KeySchema have the same name"
        )
    if roles[0][0] != "HASH":
        raise DynamoError.validation(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type"
        )
    if len(roles) == 2 and roles[1][0] != "RANGE":
        raise DynamoError.validation(
            "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type"
        )
    undefined = [name for name in names if name not in types]
    if undefined:
        raise DynamoError.validation(
            "One or more parameter values were invalid: Some index key attributes are not "
            f"defined in AttributeDefinitions. Keys: [{', '.join(undefined)}], "
            f"AttributeDefinitions: [{', '.join(types)}]"
        )
    if set(names) != set(types):
        raise DynamoError.validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does "
            "not exactly match number of attributes defined in AttributeDefinitions"
        )
    hash_name = names[0]
    range_name = names[1] if len(names) == 2 else None
    range_type = cast(KeyType, types[range_name]) if range_name else None
    return KeySchema(hash_name, cast(KeyType, types[hash_name]), range_name, range_type)


def _capacity(request: dict[str, Any]) -> tuple[str, int, int]:
    mode = v.choice(request, "BillingMode", ("PROVISIONED", "PAY_PER_REQUEST"), "PROVISIONED")
    throughput = v.field(request, "ProvisionedThroughput", dict)
    if mode == "PAY_PER_REQUEST":
        if throughput:
            raise DynamoError.validation(
                "One or more parameter values were invalid: Neither ReadCapacityUnits nor "
                "WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST"
            )
        return mode, 0, 0
    if throughput is None:
        raise DynamoError.validation(
            "One or more parameter values were invalid: ReadCapacityUnits and "
            "WriteCapacityUnits must both be specified when BillingMode is PROVISIONED"
        )
    rcu, wcu = capacity_units(throughput)
    return mode, rcu, wcu


MAX_UNITS = 1_000_000_000_000  # the most ProvisionedThroughput DynamoDB takes at all


def capacity_units(throughput: dict[str, Any]) -> tuple[int, int]:
    """(ReadCapacityUnits, WriteCapacityUnits) of a ProvisionedThroughput, validated as
    DynamoDB does: every missing or non-positive member listed (WriteCapacityUnits first),
    then a value past the bound named (ReadCapacityUnits first)."""
    read = v.field(throughput, "ReadCapacityUnits", int)
    write = v.field(throughput, "WriteCapacityUnits", int)
    broken = []
    for name, value in (("writeCapacityUnits", write), ("readCapacityUnits", read)):
        at = f"at 'provisionedThroughput.{name}' failed to satisfy constraint"
        if value is None:
            broken.append(f"Value null {at}: Member must not be null")
        elif value < 1:
            broken.append(
                f"Value '{value}' {at}: Member must have value greater than or equal to 1"
            )
    if broken:
        count = f"{len(broken)} validation error{'s' if len(broken) > 1 else ''} detected"
        raise DynamoError.validation(f"{count}: {'; '.join(broken)}")
    for name, value in (("ReadCapacityUnits", read), ("WriteCapacityUnits", write)):
        if value > MAX_UNITS:
            raise DynamoError.validation(f"Given value {value} for {name} is out of bounds")
    return read, write


_TAG_PUNCTUATION = frozenset("_.:/=+-@")
TAG_LIMIT = "Number of Tags exceed the current limit for the provided ResourceArn"


def _tag_text(text: str, longest: int, shortest: int) -> bool:
    """Tag keys and values: Unicode letters, numbers and spaces, and ``_ . : / = + - @``."""
    return shortest <= len(text) <= longest and all(
        ch in _TAG_PUNCTUATION or unicodedata.category(ch)[0] in "LNZ" for ch in text
    )


def check_tag_key(key: Any) -> str:
    """A tag key as TagResource and UntagResource take it, refused in DynamoDB's words."""
    if not isinstance(key, str) or not _tag_text(key, 128, 1):
        shown = key if isinstance(key, str) else "null"
        raise DynamoError.validation(f"The Tag Key provided is invalid, Key: {shown}")
    if key[:4].lower() == "aws:":
        raise DynamoError.validation(f"Tag Key cannot be prefixed with aws:, Key: {key}")
    return key


def _check_tag(tag: Any) -> tuple[str, str]:
    tag = tag if isinstance(tag, dict) else {}
    key = check_tag_key(tag.get("Key"))
    value = tag.get("Value")
    if not isinstance(value, str) or not _tag_text(value, 256, 0):
        shown = value if isinstance(value, str) else "null"
        raise DynamoError.validation(f"The Tag Value provided is invalid, Value: {shown}")
    return key, value


def merge_tags(
    old: tuple[tuple[str, str], ...], tags: list[Any], creating: bool = False
) -> tuple[tuple[str, str], ...]:
    """``old`` with ``tags`` set on it (a key already there takes the new value). A request
    may name a key once, and the table may end with at most 50 tags; nothing is applied when
    any tag is refused."""
    merged = dict(old)
    seen: set[str] = set()
    for tag in tags:
        key, value = _check_tag(tag)
        if key in seen:
            raise DynamoError.validation(
                f"Duplicate Tag Keys provided as input: Duplicate Tag Key found {key}"
            )
        seen.add(key)
        merged[key] = value
    if len(merged) > MAX_TAGS:
        raise DynamoError.validation(
            f"One or more parameter values were invalid: The number of tags exceeds the limit "
            f"of {MAX_TAGS}"
            if creating
            else TAG_LIMIT
        )
    return tuple(merged.items())


def table_arn(name: str) -> str:
    """The table's ARN (one local account and region: nothing else is served here)."""
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


def describe(layout: TableLayout, count: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """DescribeTable's ``Table``; ``count`` is (ItemCount, TableSizeBytes)."""
    spec = layout.spec
    schema = spec.key_schema
    key_schema = [{"AttributeName": schema.hash_name, "KeyType": "HASH"}]
    definitions = [{"AttributeName": schema.hash_name, "AttributeType": schema.hash_type}]
    if schema.range_name and schema.range_type:
        key_schema.append({"AttributeName": schema.range_name, "KeyType": "RANGE"})
        definitions.append({"AttributeName": schema.range_name, "AttributeType": schema.range_type})
    body: dict[str, Any] = {
        "TableName": spec.name,
        "TableStatus": spec.status,
        "KeySchema": key_schema,
        "AttributeDefinitions": definitions,
        "CreationDateTime": spec.created_at,
        "TableArn": table_arn(spec.name),
        # Tables created before TableIds were recorded get one derived from their name.
        "TableId": spec.table_id or str(uuid.uuid5(uuid.NAMESPACE_URL, spec.name)),
        "ItemCount": count[0],
        "TableSizeBytes": count[1],
        "BillingModeSummary": {"BillingMode": spec.billing_mode},
        "ProvisionedThroughput": {
            "ReadCapacityUnits": spec.read_capacity,
            "WriteCapacityUnits": spec.write_capacity,
            "NumberOfDecreasesToday": 0,
        },
        "TableClassSummary": {"TableClass": spec.table_class},
        "DeletionProtectionEnabled": spec.deletion_protection,
    }
    on_demand_since = pay_per_request_since(spec)
    if on_demand_since:
        body["BillingModeSummary"]["LastUpdateToPayPerRequestDateTime"] = on_demand_since
    if spec.sse:
        body["SSEDescription"] = {"Status": "ENABLED", "SSEType": "KMS"}
    return body


def pay_per_request_since(spec: TableSpec) -> float:
    """When the table last became PAY_PER_REQUEST: by UpdateTable, else at creation if it was
    created so (0.0: never)."""
    if spec.billing_changed_at:
        return spec.billing_changed_at
    return spec.created_at if spec.billing_mode == "PAY_PER_REQUEST" else 0.0


async def count_items(ctx: RouterContext, layout: TableLayout) -> tuple[int, int]:
    """(ItemCount, TableSizeBytes) from an eventually consistent walk of every partition,
    bounded (DynamoDB itself refreshes these only every few hours): a partition past
    COUNT_LIMIT items is counted that far, and a partition that does not answer counts 0."""

    async def one(partition: Partition) -> tuple[int, int]:
        items = size = 0
        cursor: list[bytes] | None = None
        while items < COUNT_LIMIT:
            try:
                reply = await ctx.storage.read(
                    partition,
                    "scan",
                    False,
                    ctx.request_budget,
                    tbl=layout.spec.name,
                    start_after=cursor,
                    limit=500,
                )
            except DynamoError:
                break
            for pk, sk, item in reply["items"]:
                items += 1
                size += item_size(item)
                cursor = [pk, sk]
            if not reply["more"]:
                break
        return items, size

    try:
        async with asyncio.timeout(COUNT_SECONDS):
            counts = await asyncio.gather(*(one(p) for p in layout.partitions))
    except TimeoutError:  # a description without counts beats no description
        return 0, 0
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


async def create_table(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name = v.table_name(request)
    for field in _UNSUPPORTED:
        if request.get(field):
            raise DynamoError.validation(f"{field} is not supported by this cluster")
    schema = _key_schema(request)
    mode, rcu, wcu = _capacity(request)
    sse = v.field(request, "SSESpecification", dict) or {}
    sse_enabled = v.field(sse, "Enabled", bool)
    tags = merge_tags((), v.field(request, "Tags", list) or [], creating=True)
    topology = parse_topology(ctx.config.topology)
    spec = TableSpec(
        name,
        schema,
        cast(BillingMode, mode),
        rcu,
        wcu,
        ctx.config.default_partitions,
        time.time(),
        "CREATING",
        table_id=str(uuid.uuid4()),
        tags=tags,
        sse=bool(sse_enabled),
        table_class=v.field(request, "TableClass", str) or "STANDARD",
        deletion_protection=bool(v.field(request, "DeletionProtectionEnabled", bool)),
    )
    in_use = DynamoError.in_use(f"Table already exists: {name}")
    for attempt in range(1, 4):
        try:
            current = await ctx.metadata.read_map()
            if attempt > 1 and name in current.tables:
                raise in_use
            # The map's version is the highest of its items', tombstones included: above that
            # of any table of this name deleted before (the create checks it: store.py).
            version = next_version(current.version)
            layout = build_layout(
                topology, replace(spec, incarnation=version), current.replicas_per_node()
            )
            await ctx.metadata.create(layout, version)
            break
        except TableExists:
            # The deleted table of this name is still being dropped (tabledrain.py): no
            # retry helps now; the client's does, later.
            drain = await _drain_of(ctx, name)
            if drain is not None and drain.holding():
                raise DynamoError.in_use(in_use_message(drain)) from None
            # Taken; or deleted after our read by a DeleteTable of a version not below ours
            # (another router's clock ahead): read again, for a version above its.
            if attempt == 3:
                raise in_use from None
        except MetadataUnavailable as exc:
            raise DynamoError.unavailable(str(exc)) from None
    # The build goes on if this request ends first (the client timed out, or the wait below
    # did): a failed attempt no longer leaves the table CREATING for ever (tablebuild.py).
    await wait_built(start_build(ctx, layout), ANSWER_WAIT)
    # DynamoDB answers CreateTable with the table CREATING (clients wait for ACTIVE through
    # DescribeTable); here it is usually usable already, which such a client cannot tell.
    return {"TableDescription": describe(layout)}


async def _drain_of(ctx: RouterContext, name: str) -> Drain | None:
    try:
        return await ctx.metadata.drain_of(name)
    except MetadataUnavailable as exc:
        raise DynamoError.unavailable(str(exc)) from None


async def _held(ctx: RouterContext, name: str) -> bool:
    """Is ``name`` a deleted table's whose drain still holds it (DELETING, tabledrain.py)?"""
    drain = await _drain_of(ctx, name)
    return drain is not None and drain.holding() > 0


def _deleting(name: str) -> dict[str, Any]:
    """The description of a deleted table whose name is still held: DELETING."""
    return {"TableName": name, "TableStatus": "DELETING", "TableArn": table_arn(name),
            "ItemCount": 0, "TableSizeBytes": 0}  # fmt: skip


async def describe_table(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name = v.table_name(request, "DescribeTable")
    try:
        layout = await ctx.table(name, active=False)
    except DynamoError as exc:
        if exc.type != "ResourceNotFoundException":
            raise
        # Deleted, but the name is not free yet (tabledrain.py): DELETING, as DynamoDB says
        # until CreateTable may reuse the name (the table_not_exists waiter goes on waiting).
        if not await _held(ctx, name):
            raise
        return {"Table": _deleting(name)}
    resume_stale(ctx, layout)  # a creation its router abandoned (tablebuild.py)
    count = await count_items(ctx, layout) if layout.spec.status == "ACTIVE" else (0, 0)
    return {"Table": describe(layout, count)}


async def list_tables(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    limit = v.field(request, "Limit", int)
    limit = 100 if limit is None else limit
    start = v.field(request, "ExclusiveStartTableName", str)
    problems = []
    if not 1 <= limit <= 100:
        bound = "greater than or equal to 1" if limit < 1 else "less than or equal to 100"
        problems.append(
            f"Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value "
            f"{bound}"
        )
    if start is not None:
        problems += v.name_problems(start, "exclusiveStartTableName")
    v.refuse(problems)
    try:
        current = await ctx.metadata.read_map()
    except MetadataUnavailable as exc:
        raise DynamoError.unavailable(str(exc)) from None
    # A deleted table whose drain still holds its name (DescribeTable: DELETING) is not listed:
    # DynamoDB lists a DELETING table, but its ListTables is eventually consistent, so a
    # just-deleted table may be missing there too and no client can wait on it (the waiters
    # use DescribeTable); here the name may stay held for hours (nodes down), and listing it
    # would have a "delete every listed table" cleanup fail (DeleteTable: not found) for a
    # name it can do nothing about, at the cost of one more metadata read per ListTables.
    names = [n for n in sorted(current.tables) if start is None or n > start]
    body: dict[str, Any] = {"TableNames": names[:limit]}
    if len(names) > limit:
        body["LastEvaluatedTableName"] = names[limit - 1]
    return body


async def delete_table(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name = v.table_name(request, "DeleteTable")
    for _ in range(3):  # bounded: another router changed the table between read and write
        try:
            current = await ctx.metadata.read_map()
        except MetadataUnavailable as exc:
            raise DynamoError.unavailable(str(exc)) from None
        layout = current.tables.get(name)
        if layout is None:
            # Deleted, the name still held (DescribeTable: DELETING): DynamoDB's DeleteTable of
            # a table already DELETING returns no error (its API reference), so neither does
            # this: the table's description, DELETING. A cleanup that deletes and waits, or a
            # client retrying a DeleteTable whose answer it lost, sees what DescribeTable says.
            if await _held(ctx, name):
                return {"TableDescription": _deleting(name)}
            raise DynamoError.not_found(name)
        if layout.spec.deletion_protection:
            raise DynamoError.validation(
                "Resource cannot be deleted as it is currently protected against deletion. "
                "Disable deletion protection first."
            )
        version = next_version(current.version)
        drain = new_drain(ctx, layout, version)
        try:
            # Only over the table just read: were it deleted and created again meanwhile
            # (another router, its clock ahead), this tombstone would replace the newer
            # table's item at a version maybe below its incarnation, and the next CreateTable
            # could get a lower incarnation than replicas the nodes still hold.
            if await ctx.metadata.delete(name, version, layout.spec.table_id, drain):
                break
        except MetadataUnavailable as exc:
            raise DynamoError.unavailable(str(exc)) from None
    else:
        raise DynamoError.unavailable(f"table {name} kept changing; DeleteTable not done")
    deleting = TableLayout(replace(layout.spec, status="DELETING"), layout.partitions)
    ctx.resolver.learn(name, None, version)
    # The first attempt at the drops, here: with every node up the name is free again when
    # this answers. What it missed, every router's TableDrains retries (tabledrain.py); the
    # name stays taken until no group of this table can commit any more.
    with contextlib.suppress(MetadataUnavailable):
        await drain_once(ctx, drain)
    return {"TableDescription": describe(deleting)}
