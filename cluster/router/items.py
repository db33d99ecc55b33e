"""Item operations: PutItem, GetItem, UpdateItem, DeleteItem, BatchWriteItem, BatchGetItem.

Each handler validates the whole request before anything is replicated, routes by the MD5 of the
partition key, and leaves conditions to the storage node's state machine, which evaluates them
at apply time against the committed state (so concurrent conditional writes stay linearizable).

    response = await put_item(ctx, {"TableName": "t", "Item": {...}})
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from cluster.dynamo import (
    Projection,
    UpdateExpression,
    apply_projection,
    normalize_item,
    parse_condition,
    parse_update,
    validate_update,
)
from cluster.dynamo.values import check_item_size, item_size
from cluster.metadata.partitionmap import Partition, TableLayout
from cluster.storage.commands import (
    ApplyResult,
    BatchWriteCommand,
    Condition,
    DeleteCommand,
    PutCommand,
    UpdateCommand,
)

from . import legacy, txnhooks
from . import validate as v
from .capacity import charge, read_units, write_units
from .context import RouterContext
from .errors import DynamoError

MAX_BATCH_WRITE = 25
MAX_BATCH_GET = 100


def _condition(
    request: dict[str, Any], names: dict[str, str], values: dict[str, Any]
) -> Condition | None:
    text = v.field(request, "ConditionExpression", str)
    if text is None:
        return None
    v.guarded(parse_condition, text)
    return Condition(text, names, values)


def _returns(request: dict[str, Any], allowed: tuple[str, ...]) -> str:
    """ReturnValues (checked against ``allowed``); ReturnValuesOnConditionCheckFailure too."""
    v.choice(request, "ReturnValuesOnConditionCheckFailure", ("NONE", "ALL_OLD"), "NONE")
    value = v.field(request, "ReturnValues", str)
    if value in ("UPDATED_OLD", "ALL_NEW", "UPDATED_NEW") and value not in allowed:
        # One of DynamoDB's values, but not one this operation returns (PutItem's ALL_NEW).
        raise DynamoError.validation("Return values set to invalid value")
    return v.choice(request, "ReturnValues", allowed, "NONE")


def _condition_and_returns(request: dict[str, Any]) -> tuple[Condition | None, str]:
    """A PutItem's or DeleteItem's ConditionExpression (with its placeholders checked) and
    ReturnValues (NONE or ALL_OLD)."""
    names, values = v.expression_inputs(request)
    v.placeholders(request, ["ConditionExpression"])
    return _condition(request, names, values), _returns(request, ("NONE", "ALL_OLD"))


def _outcome(result: ApplyResult, request: dict[str, Any]) -> None:
    """Raise the DynamoDB error a failed apply stands for."""
    if result.ok:
        return
    if result.error == "ConditionalCheckFailedException":
        wants_old = request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
        raise DynamoError.conditional_failed(result.old if wants_old and result.old else None)
    if result.error == "ValidationException":
        raise DynamoError.validation(result.message or "Invalid request")
    raise DynamoError.internal(result.message or "The write could not be applied")


async def _write(
    ctx: RouterContext, layout: TableLayout, pk: bytes, cmd: Any, size: int
) -> ApplyResult:
    partition = layout.partition_for(pk)
    await ctx.admit(layout, "write", size)
    return await txnhooks.write_item(ctx, partition, cmd)  # resolves transactions it meets


def _written(result: ApplyResult, index: int, known: int) -> int:
    """The size the ``index``-th item written by ``result`` is charged by: the larger of the
    item before and after, as the storage node measured it when it applied the write;
    ``known`` (what the request itself shows) when the node did not say."""
    return result.sizes[index] if index < len(result.sizes) else known


async def put_item(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    request = legacy.rewrite("PutItem", request)
    name = v.table_name(request)
    v.attribute_map(request, "Item")  # DynamoDB checks the request before it finds the table
    condition, returns = _condition_and_returns(request)
    layout = await ctx.table(name)
    item = v.item(request, layout.spec.key_schema, checked=True)  # attribute_map, above
    pk, sk = v.encoded_key(layout.spec.key_schema, item)
    cmd = PutCommand(layout.spec.name, pk, sk, item, condition, returns)
    result = await _write(ctx, layout, pk, cmd, len(repr(item)))
    # The node measured the write (old and new item); the request's item only if it did not.
    written = result.sizes[0] if result.sizes else item_size(item)
    charge(layout.spec.name, write_units(written))
    _outcome(result, request)
    return {"Attributes": result.old} if returns == "ALL_OLD" and result.old else {}


async def delete_item(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    request = legacy.rewrite("DeleteItem", request)
    name = v.table_name(request)
    v.attribute_map(request, "Key")
    condition, returns = _condition_and_returns(request)
    layout = await ctx.table(name)
    key = v.key(request, layout.spec.key_schema)
    pk, sk = v.encoded_key(layout.spec.key_schema, key)
    cmd = DeleteCommand(layout.spec.name, pk, sk, condition, returns)
    result = await _write(ctx, layout, pk, cmd, 1)
    charge(layout.spec.name, write_units(_written(result, 0, item_size(result.old or {}))))
    _outcome(result, request)
    return {"Attributes": result.old} if returns == "ALL_OLD" and result.old else {}


async def update_item(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    try:
        return await _update_item(ctx, legacy.rewrite("UpdateItem", request))
    except DynamoError as exc:
        raise legacy.update_error(request, exc) from None


async def _update_item(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    name = v.table_name(request)
    v.attribute_map(request, "Key")
    names, values = v.expression_inputs(request)
    update_text = v.field(request, "UpdateExpression", str)
    v.placeholders(request, ["UpdateExpression", "ConditionExpression"])
    layout = await ctx.table(name)
    schema = layout.spec.key_schema
    key = v.key(request, schema)
    values = normalize_item(values)  # SET n = :v stores :v's number as DynamoDB does: by value
    update: UpdateExpression | None = None
    if update_text is not None:
        update = v.guarded(parse_update, update_text)
        v.guarded(validate_update, update, names, values, schema.names())
    condition = _condition(request, names, values)
    returns = _returns(request, ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"))
    pk, sk = v.encoded_key(schema, key)
    cmd = UpdateCommand(
        layout.spec.name,
        pk,
        sk,
        key,
        update_text,
        names,
        values,
        condition,
        returns,
        key_names=tuple(schema.names()),
    )
    result = await _write(ctx, layout, pk, cmd, len(repr(values)))
    sizes = (item_size(result.old or {}), item_size(result.new or {}), item_size(key))
    charge(layout.spec.name, write_units(_written(result, 0, max(sizes))))
    _outcome(result, request)
    attributes = result.new if returns in ("ALL_NEW", "UPDATED_NEW") else result.old
    if attributes and update is not None and returns in ("UPDATED_OLD", "UPDATED_NEW"):
        # The node returns the top-level attributes the update touched; DynamoDB returns only
        # what was updated: SET m.a = :v gives {"m": {"M": {"a": ...}}}, not all of m.
        paths = Projection(tuple(action.path for action in update.actions))
        attributes = v.guarded(apply_projection, paths, attributes, names)
    return {"Attributes": attributes} if returns != "NONE" and attributes else {}


async def get_item(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    request = legacy.rewrite("GetItem", request)
    name = v.table_name(request)
    v.attribute_map(request, "Key")
    consistent = bool(v.field(request, "ConsistentRead", bool))
    projection = v.projection(request)
    layout = await ctx.table(name)
    key = v.key(request, layout.spec.key_schema)
    pk, sk = v.encoded_key(layout.spec.key_schema, key)
    item = await _get(ctx, layout, layout.partition_for(pk), pk, sk, consistent)
    if item is None:
        return {}
    return {"Item": v.project(item, projection, request)}


async def _get(
    ctx: RouterContext,
    layout: TableLayout,
    partition: Partition,
    pk: bytes,
    sk: bytes,
    consistent: bool,
) -> dict[str, Any] | None:
    reply = await ctx.read(layout, partition, "get", consistent, pk=pk, sk=sk)
    item: dict[str, Any] | None = reply.get("item")
    if consistent and "lock" in reply:  # a transaction holds it: its record decides
        item = await txnhooks.visible_item(
            ctx, partition, (layout.spec.name, pk, sk), item, reply["lock"]
        )
    charge(layout.spec.name, read_units(item_size(item or {}), consistent))
    return item


async def batch_write_item(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    request_items: dict[str, Any] = v.field(request, "RequestItems", dict, required=True)
    _check_request_items(request_items, MAX_BATCH_WRITE)
    total = sum(len(w) if isinstance(w, list) else 0 for w in request_items.values())
    if total > MAX_BATCH_WRITE:
        raise DynamoError.validation("Too many items requested for the BatchWriteItem call")
    # Every write's values on their own before any table is looked up, as DynamoDB does.
    for writes in request_items.values():
        for write in writes if isinstance(writes, list) else ():
            if isinstance(write, dict) and isinstance(write.get("PutRequest"), dict):
                v.attribute_map(write["PutRequest"], "Item")
                v.guarded(check_item_size, write["PutRequest"]["Item"])
            elif isinstance(write, dict) and isinstance(write.get("DeleteRequest"), dict):
                v.attribute_map(write["DeleteRequest"], "Key")
    # Validate everything first: a bad request writes nothing.
    plan: dict[tuple[str, str], list[tuple[dict[str, Any], PutCommand | DeleteCommand]]] = (
        defaultdict(list)
    )
    layouts: dict[str, TableLayout] = {}
    for table, writes in request_items.items():
        if not isinstance(writes, list):
            raise DynamoError.validation(f"RequestItems[{table}] must be a list of write requests")
        layout = layouts[table] = await _batch_table(ctx, table)
        schema = layout.spec.key_schema
        seen: set[tuple[bytes, bytes]] = set()
        for write in writes:
            if not isinstance(write, dict) or len(write) != 1:
                raise DynamoError.validation(
                    "Each write request must be a PutRequest or a DeleteRequest"
                )
            if "PutRequest" in write:
                item = v.item(_as_dict(write["PutRequest"]), schema)
                pk, sk = v.encoded_key(schema, item)
                cmd: PutCommand | DeleteCommand = PutCommand(table, pk, sk, item)
            elif "DeleteRequest" in write:
                key = v.key(_as_dict(write["DeleteRequest"]), schema)
                pk, sk = v.encoded_key(schema, key)
                cmd = DeleteCommand(table, pk, sk)
            else:
                raise DynamoError.validation(
                    "Each write request must be a PutRequest or a DeleteRequest"
                )
            if (pk, sk) in seen:
                raise DynamoError.validation("Provided list of item keys contains duplicates")
            seen.add((pk, sk))
            plan[(table, layout.partition_for(pk).id)].append((write, cmd))

    unprocessed: dict[str, list[dict[str, Any]]] = defaultdict(list)

    async def run(table: str, group: str) -> None:
        layout = layouts[table]
        partition = next(p for p in layout.partitions if p.id == group)
        writes = plan[(table, group)]
        try:
            await ctx.admit(layout, "write", len(writes))
            # Resolves the transactions it meets (TransactionConflictException while one runs).
            batch = BatchWriteCommand(tuple(c for _, c in writes))
            result = await txnhooks.write_batch(ctx, partition, batch)
            _outcome(result, request)
        except DynamoError as exc:
            if exc.status < 500 and exc.type not in _RETRYABLE:
                raise
            unprocessed[table].extend(w for w, _ in writes)
            return
        for i, (_, cmd) in enumerate(writes):  # each as its own PutItem or DeleteItem
            known = item_size(cmd.item) if isinstance(cmd, PutCommand) else 0
            charge(table, write_units(_written(result, i, known)))

    await asyncio.gather(*(run(t, g) for t, g in plan))
    return {"UnprocessedItems": dict(unprocessed)}


_RETRYABLE = {"ProvisionedThroughputExceededException", "ThrottlingException"}


async def batch_get_item(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    request_items: dict[str, Any] = v.field(request, "RequestItems", dict, required=True)
    _check_request_items(request_items, None)
    gets: list[tuple[str, TableLayout, dict[str, Any], bool, Any, dict[str, Any]]] = []
    for table, spec in request_items.items():
        layout = await _batch_table(ctx, table)
        spec = legacy.rewrite("BatchGetItem", _as_dict(spec))
        keys = v.field(spec, "Keys", list, required=True)
        consistent = bool(v.field(spec, "ConsistentRead", bool))
        projection = v.projection(spec)
        seen: set[tuple[bytes, bytes]] = set()
        for key in keys:
            key = v.key_map(_as_dict(key), layout.spec.key_schema)
            encoded = v.encoded_key(layout.spec.key_schema, key)
            if encoded in seen:
                raise DynamoError.validation("Provided list of item keys contains duplicates")
            seen.add(encoded)
            gets.append((table, layout, key, consistent, projection, spec))
    if not gets or len(gets) > MAX_BATCH_GET:
        raise DynamoError.validation(
            "Too many items requested for the BatchGetItem call"
            if gets
            else "The requestItems parameter must contain at least one key"
        )
    responses: dict[str, list[dict[str, Any]]] = {t: [] for t in request_items}
    unprocessed: dict[str, dict[str, Any]] = {}

    async def fetch(
        entry: tuple[str, TableLayout, dict[str, Any], bool, Any, dict[str, Any]],
    ) -> None:
        table, layout, key, consistent, projection, spec = entry
        pk, sk = v.encoded_key(layout.spec.key_schema, key)
        try:
            item = await _get(ctx, layout, layout.partition_for(pk), pk, sk, consistent)
        except DynamoError as exc:
            if exc.status < 500 and exc.type not in _RETRYABLE:
                raise
            keep = {k: val for k, val in spec.items() if k != "Keys"}
            unprocessed.setdefault(table, {**keep, "Keys": []})["Keys"].append(key)
            return
        if item is not None:
            responses[table].append(v.project(item, projection, spec))

    await asyncio.gather(*(fetch(g) for g in gets))
    return {"Responses": responses, "UnprocessedKeys": unprocessed}


def _check_request_items(request_items: dict[str, Any], most: int | None) -> None:
    """RequestItems as a whole, in DynamoDB's words: not empty, every table name 3-255 of
    [a-zA-Z0-9_.-], and (``most`` given) every table's list 1-``most`` long."""
    if not request_items:
        v.refuse(
            [
                "Value '{}' at 'requestItems' failed to satisfy constraint: Member must have "
                "length greater than or equal to 1"
            ]
        )
    shown = "{" + ", ".join(f"{t}=[...]" for t in request_items) + "}"  # Java's Map.toString
    at = f"Value '{shown}' at 'requestItems' failed to satisfy constraint"
    problems = []
    if any(v.name_problems(str(t), "t") for t in request_items):
        problems.append(
            f"{at}: Map keys must satisfy constraint: [Member must have length less than or "
            "equal to 255, Member must have length greater than or equal to 3, Member must "
            "satisfy regular expression pattern: [a-zA-Z0-9_.-]+]"
        )
    lengths = [len(w) if isinstance(w, list) else 0 for w in request_items.values()]
    if most is not None and any(not 1 <= n <= most for n in lengths):
        problems.append(
            f"{at}: Map value must satisfy constraint: [Member must have length less than or "
            f"equal to {most}, Member must have length greater than or equal to 1]"
        )
    v.refuse(problems)


async def _batch_table(ctx: RouterContext, table: str) -> TableLayout:
    """A batch's table; one that does not exist is DynamoDB's bare 'Requested resource not
    found' (the batch operations do not name the table)."""
    try:
        return await ctx.table(v.table_name({"TableName": table}))
    except DynamoError as exc:
        if exc.type == "ResourceNotFoundException":
            raise DynamoError.not_found() from None
        raise


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DynamoError("SerializationException", "Expected a JSON object")
    return value
