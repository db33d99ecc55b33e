"""The DynamoDB requests each workload operation sends, and how to read their answers. Pure.

Items of the hash-key workloads are ``{"k": key, "v": value}`` (plus ``"ver"``, a version number,
for read-modify-write, and an optional padding attribute ``"p"``); items of the query workload
are ``{"pk": pk, "sk": n, "v": value}``. Values are unique strings, so a history can tell
writes apart.

    call = cas("gameday-register", "r3", expected="h-41-u0-6", new="h-41-u0-7")
    call.operation            # "UpdateItem"
    call.params               # {"TableName": ..., "ConditionExpression": "#v = :expected", ...}
    read_value({"Item": {"k": {"S": "r3"}, "v": {"S": "h-41-u0-7"}}})   # "h-41-u0-7"
"""

from __future__ import annotations

from typing import Any, NamedTuple

from workloads.catalog import HASH_KEY, QUERY_HASH_KEY, QUERY_RANGE_KEY, VALUE_ATTR, VERSION_ATTR

PADDING_ATTR = "p"


class Call(NamedTuple):
    """One request: its operation and parameters (a named tuple: built for every request, and
    a frozen dataclass's ``__init__`` costs more)."""

    operation: str
    params: dict[str, Any]


def _key(key: str) -> dict[str, Any]:
    return {HASH_KEY: {"S": key}}


def get_item(table: str, key: str, consistent: bool) -> Call:
    return Call("GetItem", {"TableName": table, "Key": _key(key), "ConsistentRead": consistent})


def put_item(table: str, key: str, value: str, padding: str = "") -> Call:
    item: dict[str, Any] = {**_key(key), VALUE_ATTR: {"S": value}}
    if padding:
        item[PADDING_ATTR] = {"S": padding}
    return Call("PutItem", {"TableName": table, "Item": item})


def update_value(table: str, key: str, value: str) -> Call:
    """Unconditional UpdateItem setting ``v`` (YCSB's update)."""
    return Call(
        "UpdateItem",
        {
            "TableName": table,
            "Key": _key(key),
            "UpdateExpression": "SET #v = :v",
            "ExpressionAttributeNames": {"#v": VALUE_ATTR},
            "ExpressionAttributeValues": {":v": {"S": value}},
        },
    )


def cas(table: str, key: str, expected: str, new: str) -> Call:
    """Compare-and-set on ``v``: applied only if ``v`` currently equals ``expected``."""
    return Call(
        "UpdateItem",
        {
            "TableName": table,
            "Key": _key(key),
            "UpdateExpression": "SET #v = :new",
            "ConditionExpression": "#v = :expected",
            "ExpressionAttributeNames": {"#v": VALUE_ATTR},
            "ExpressionAttributeValues": {":new": {"S": new}, ":expected": {"S": expected}},
        },
    )


def versioned_update(table: str, key: str, version: int | None, value: str) -> Call:
    """Set ``v`` and bump ``ver``, only if ``ver`` is still ``version`` (None: item absent)."""
    names = {"#v": VALUE_ATTR, "#ver": VERSION_ATTR}
    if version is None:
        return Call(
            "UpdateItem",
            {
                "TableName": table,
                "Key": _key(key),
                "UpdateExpression": "SET #v = :v, #ver = :one",
                "ConditionExpression": "attribute_not_exists(#ver)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {":v": {"S": value}, ":one": {"N": "1"}},
            },
        )
    return Call(
        "UpdateItem",
        {
            "TableName": table,
            "Key": _key(key),
            "UpdateExpression": "SET #v = :v, #ver = #ver + :one",
            "ConditionExpression": "#ver = :ver",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {
                ":v": {"S": value},
                ":one": {"N": "1"},
                ":ver": {"N": str(version)},
            },
        },
    )


def _sorted_key(pk: str, sk: int) -> dict[str, Any]:
    return {QUERY_HASH_KEY: {"S": pk}, QUERY_RANGE_KEY: {"N": str(sk)}}


def put_sorted(table: str, pk: str, sk: int, value: str) -> Call:
    return Call(
        "PutItem", {"TableName": table, "Item": {**_sorted_key(pk, sk), VALUE_ATTR: {"S": value}}}
    )


def delete_sorted(table: str, pk: str, sk: int) -> Call:
    return Call("DeleteItem", {"TableName": table, "Key": _sorted_key(pk, sk)})


def query_range(table: str, pk: str, lo: int, hi: int, consistent: bool = True) -> Call:
    """Items of ``pk`` with ``lo <= sk <= hi``, ascending (one page; the ranges are small)."""
    return Call(
        "Query",
        {
            "TableName": table,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": QUERY_HASH_KEY, "#sk": QUERY_RANGE_KEY},
            "ExpressionAttributeValues": {
                ":pk": {"S": pk},
                ":lo": {"N": str(lo)},
                ":hi": {"N": str(hi)},
            },
            "ConsistentRead": consistent,
        },
    )


def sorted_key_name(pk: str, sk: int) -> str:
    """The history key of a query-workload item: ``"q2#17"``."""
    return f"{pk}#{sk}"


def item_value(item: dict[str, Any] | None) -> Any:
    """The register value of a DynamoDB item: its ``v`` string, or None without item or ``v``."""
    if not item:
        return None
    attr = item.get(VALUE_ATTR)
    if not isinstance(attr, dict):
        return None
    return attr.get("S", attr.get("N"))


def read_value(body: dict[str, Any]) -> Any:
    """GetItem answer -> the register value (None when the item is absent)."""
    return item_value(body.get("Item"))


def read_version(body: dict[str, Any]) -> int | None:
    item = body.get("Item") or {}
    attr = item.get(VERSION_ATTR)
    return int(attr["N"]) if isinstance(attr, dict) and "N" in attr else None


def query_items(body: dict[str, Any]) -> list[list[Any]]:
    """Query answer -> ``[[sk, v], ...]`` in sort-key order."""
    rows = [
        [int(item[QUERY_RANGE_KEY]["N"]), item_value(item)]
        for item in body.get("Items", [])
        if QUERY_RANGE_KEY in item
    ]
    return sorted(rows, key=lambda row: row[0])
