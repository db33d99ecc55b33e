"""TransactWriteItems and TransactGetItems: DynamoDB's request and response shapes.

Every item is validated the way its single-item operation validates it, before anything is
replicated, in DynamoDB's order and with its words:

1. the request's shape: members that must be there, enums, each named by its path
   (``transactItems.1.member.update.key``), all of them in one "N validation errors detected";
2. each item's own problems (tables, expressions and their placeholders, two items on one key,
   over 100 items or 4 MB of request): a ValidationException (or ResourceNotFound) for the whole
   request;
3. the data an item would write that DynamoDB checks per item (a key of the wrong type or over
   its size, an item over 400 KB, nesting over 32 levels): TransactionCanceledException with a
   ``ValidationError`` reason on the first such item and ``None`` on every other, as DynamoDB
   stops at the first.

The protocol that makes the items atomic across partitions is in ``txncoord.py``.

    await transact_write_items(ctx, {"TransactItems": [{"Put": {...}}, {"Update": {...}}],
                                     "ClientRequestToken": "transfer-17"})
    await transact_get_items(ctx, {"TransactItems": [{"Get": {"TableName": ..., "Key": ...}}]})
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cluster.dynamo import (
    apply_projection,
    normalize_item,
    parse_condition,
    parse_update,
    validate_update,
)
from cluster.dynamo.values import item_size, not_a_string
from cluster.storage.commands import (
    CheckCommand,
    Condition,
    DeleteCommand,
    PutCommand,
    TxnOp,
    UpdateCommand,
)

from . import validate as v
from .capacity import charge, read_units, write_units
from .context import RouterContext
from .errors import DynamoError
from .txncoord import Placed, TransactionCanceled, transact_get, transact_write

MAX_ITEMS = 100
MAX_BYTES = 4 * 1024 * 1024
MAX_TOKEN = 36
WRITE_KINDS = ("ConditionCheck", "Put", "Update", "Delete")
# The members each kind of item must carry, in the API model's order (the paths DynamoDB names).
REQUIRED = {
    "ConditionCheck": ("Key", "TableName", "ConditionExpression"),
    "Put": ("Item", "TableName"),
    "Delete": ("Key", "TableName"),
    "Update": ("Key", "UpdateExpression", "TableName"),
    "Get": ("Key", "TableName"),
}
ON_FAILURE = ("ALL_OLD", "NONE")
# A write's data errors that DynamoDB reports as the item's cancellation reason (Code
# ValidationError), not as a ValidationException: the start of each message.
ITEM_ERRORS = (
    f"{v.INVALID}: Type mismatch for key",
    f"{v.INVALID}: Size of hash key attribute",
    f"{v.INVALID}: Size of range key attribute",
    "Item size has exceeded the maximum allowed size",
    "Nesting Levels have exceeded supported limits",
)


def _items(request: dict[str, Any], kinds: tuple[str, ...]) -> list[Any]:
    items: list[Any] = v.field(request, "TransactItems", list, required=True)
    if not 1 <= len(items) <= MAX_ITEMS:
        bound = f"less than or equal to {MAX_ITEMS}" if items else "greater than or equal to 1"
        shown = "Value '[]'" if not items else "Value"
        raise DynamoError.validation(
            f"1 validation error detected: {shown} at 'transactItems' failed to satisfy "
            f"constraint: Member must have length {bound}"
        )
    _check_shapes(items, kinds)
    return items


def _check_shapes(items: list[Any], kinds: tuple[str, ...]) -> None:
    """Every item's missing required members and bad enums, all in one ValidationException."""
    errors: list[str] = []
    for number, entry in enumerate(items, start=1):
        if not isinstance(entry, dict):
            continue  # a SerializationException, raised when the item is placed
        for kind in kinds:
            spec = entry.get(kind)
            if not isinstance(spec, dict):
                continue
            path = f"transactItems.{number}.member.{_camel(kind)}"
            for name in REQUIRED[kind]:
                if spec.get(name) is None:
                    errors.append(
                        f"Value null at '{path}.{_camel(name)}' failed to satisfy constraint: "
                        "Member must not be null"
                    )
            mode = spec.get("ReturnValuesOnConditionCheckFailure")
            if mode is not None and not isinstance(mode, str):  # wrong JSON: before the rest
                raise DynamoError("SerializationException", not_a_string(mode).message)
            if mode is not None and mode not in ON_FAILURE:
                errors.append(
                    f"Value '{mode}' at '{path}.returnValuesOnConditionCheckFailure' failed to "
                    f"satisfy constraint: Member must satisfy enum value set: "
                    f"[{', '.join(ON_FAILURE)}]"
                )
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected"
        raise DynamoError.validation(f"{count}: {'; '.join(errors)}")


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _is_item_error(exc: DynamoError) -> bool:
    return exc.type == "ValidationException" and exc.message.startswith(ITEM_ERRORS)


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DynamoError("SerializationException", f"Unexpected value type for field {what}")
    return value


def _condition(spec: dict[str, Any], required: bool = False) -> Condition | None:
    text = v.field(spec, "ConditionExpression", str, required=required)
    if text is None:
        return None
    v.guarded(parse_condition, text)
    names, values = v.expression_inputs(spec)
    return Condition(text, names, values)


def _wants_old(spec: dict[str, Any]) -> bool:
    mode = v.choice(spec, "ReturnValuesOnConditionCheckFailure", ("NONE", "ALL_OLD"), "NONE")
    return mode == "ALL_OLD"


async def _place_write(ctx: RouterContext, index: int, entry: Any) -> Placed:
    entry = _as_dict(entry, "TransactItems")
    kinds = [k for k in WRITE_KINDS if entry.get(k) is not None]
    if len(kinds) != 1:
        raise DynamoError.validation(
            "TransactItems can only contain one of Check, Put, Update or Delete"
        )
    kind = kinds[0]
    spec = _as_dict(entry[kind], kind)
    layout = await ctx.table(v.table_name(spec))
    schema = layout.spec.key_schema
    tbl = layout.spec.name
    op: TxnOp
    if kind == "Put":
        item = v.item(spec, schema)
        v.placeholders(spec, ["ConditionExpression"])
        pk, sk = v.encoded_key(schema, item)
        op = PutCommand(tbl, pk, sk, item, _condition(spec))
    elif kind == "Delete":
        key = v.key(spec, schema)
        v.placeholders(spec, ["ConditionExpression"])
        pk, sk = v.encoded_key(schema, key)
        op = DeleteCommand(tbl, pk, sk, _condition(spec))
    elif kind == "ConditionCheck":
        key = v.key(spec, schema)
        v.placeholders(spec, ["ConditionExpression"])
        pk, sk = v.encoded_key(schema, key)
        op = CheckCommand(tbl, pk, sk, _condition(spec, required=True))
    else:
        key = v.key(spec, schema)
        text: str = v.field(spec, "UpdateExpression", str, required=True)
        v.placeholders(spec, ["UpdateExpression", "ConditionExpression"])
        names, values = v.expression_inputs(spec)
        values = normalize_item(values)
        update = v.guarded(parse_update, text)
        v.guarded(validate_update, update, names, values, schema.names())
        pk, sk = v.encoded_key(schema, key)
        op = UpdateCommand(
            tbl,
            pk,
            sk,
            key,
            text,
            names,
            values,
            _condition(spec),
            key_names=tuple(schema.names()),
        )
    wants_old = _wants_old(spec)
    return Placed(index, layout, layout.partition_for(pk), op, wants_old)


async def _place_writes(ctx: RouterContext, items: list[Any]) -> list[Placed]:
    """Every item placed, or the request's ValidationException, or (when only the data of
    some item is bad) TransactionCanceled naming the first such item."""
    placed: list[Placed] = []
    bad: tuple[int, str] | None = None
    for index, entry in enumerate(items):
        try:
            placed.append(await _place_write(ctx, index, entry))
        except DynamoError as exc:
            if not _is_item_error(exc):
                raise
            bad = bad or (index, exc.message)  # DynamoDB reports the first one only
    _no_duplicates(placed)
    if bad is not None:
        reasons: list[dict[str, Any]] = [{"Code": "None"} for _ in items]
        reasons[bad[0]] = {"Code": "ValidationError", "Message": bad[1]}
        raise TransactionCanceled(reasons)
    return placed


def _no_duplicates(placed: list[Placed]) -> None:
    seen: set[tuple[str, bytes, bytes]] = set()
    for p in placed:
        if p.key in seen:
            raise DynamoError.validation(
                "Transaction request cannot include multiple operations on one item"
            )
        seen.add(p.key)


def _digest(items: list[Any]) -> str:
    """What identifies a request for ClientRequestToken idempotency."""
    text = json.dumps(items, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


async def transact_write_items(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    items = _items(request, WRITE_KINDS)
    token: str | None = v.field(request, "ClientRequestToken", str)
    if token is not None and not 1 <= len(token) <= MAX_TOKEN:
        bound = f"less than or equal to {MAX_TOKEN}" if token else "greater than or equal to 1"
        raise DynamoError.validation(
            f"1 validation error detected: Value '{token}' at 'clientRequestToken' failed to "
            f"satisfy constraint: Member must have length {bound}"
        )
    if len(json.dumps(items)) > MAX_BYTES:  # the request's size, not its items' (DynamoDB's)
        raise DynamoError.validation("Transaction payload size cannot exceed 4 MB")
    placed = await _place_writes(ctx, items)
    for p in placed:
        await ctx.admit(p.layout, "write", 2)  # a transactional write costs two units
    sizes = await transact_write(ctx, placed, token, _digest(items))
    for i, p in enumerate(placed):
        if sizes is None:  # an earlier request with the token made the changes: only read
            charge(p.layout.spec.name, read_units(0, True))
        else:  # a transactional write costs twice a standard one (DynamoDB's rule)
            charge(p.layout.spec.name, 2 * write_units(sizes[i]))
    return {}


async def transact_get_items(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    items = _items(request, ("Get",))
    placed: list[Placed] = []
    projections: list[tuple[Any, dict[str, str]]] = []
    for index, entry in enumerate(items):
        entry = _as_dict(entry, "TransactItems")
        if entry.get("Get") is None or len([k for k in entry if entry[k] is not None]) != 1:
            raise DynamoError.validation("TransactItems can only contain a Get")
        spec = _as_dict(entry["Get"], "Get")
        layout = await ctx.table(v.table_name(spec))
        key = v.key(spec, layout.spec.key_schema)
        projection = v.projection(spec)
        projections.append((projection, v.field(spec, "ExpressionAttributeNames", dict) or {}))
        pk, sk = v.encoded_key(layout.spec.key_schema, key)
        op = CheckCommand(layout.spec.name, pk, sk)
        placed.append(Placed(index, layout, layout.partition_for(pk), op))
    _no_duplicates(placed)
    for p in placed:
        await ctx.admit(p.layout, "read_consistent", 2)
    found = await transact_get(ctx, placed)
    for p, item in zip(placed, found, strict=True):  # transactional reads cost twice too
        charge(p.layout.spec.name, 2 * read_units(item_size(item or {}), True))
    responses: list[dict[str, Any]] = []
    for item, (projection, names) in zip(found, projections, strict=True):
        if item is None:
            responses.append({})
        elif projection is None:
            responses.append({"Item": item})
        else:
            responses.append({"Item": v.guarded(apply_projection, projection, item, names)})
    return {"Responses": responses}
