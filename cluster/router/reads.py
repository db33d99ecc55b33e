"""Query and Scan, with DynamoDB's paging: Limit counts items evaluated (before the filter),
pages stop at 1 MB, and LastEvaluatedKey resumes exactly where the page ended.

A Query reads one partition (its key's); a Scan walks the table's partitions in order, each in
(partition key, sort key) byte order, so a LastEvaluatedKey names both where and what to resume.

    page = await query(ctx, {"TableName": "t", "KeyConditionExpression": "pk = :p", ...})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cluster.dynamo import (
    evaluate_condition,
    parse_condition,
    parse_key_condition,
)
from cluster.dynamo.checks import check_filter_keys
from cluster.dynamo.values import item_size
from cluster.metadata.partitionmap import (
    HASH_SPACE,
    Partition,
    TableLayout,
    partition_key_hash,
)
from cluster.storage.itemstore import encode_key_value, prefix_upper_bound

from . import legacy
from . import validate as v
from .capacity import charge, read_units
from .context import RouterContext
from .errors import DynamoError

PAGE_BYTES = 1024 * 1024
NODE_PAGE = 500  # items fetched from a node per round trip when the client set no Limit

Bound = list[Any] | None  # [sk bytes, inclusive] as the node RPC takes it


def _select(request: dict[str, Any]) -> str:
    allowed = ("ALL_ATTRIBUTES", "COUNT", "SPECIFIC_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES")
    select = v.choice(request, "Select", allowed, "ALL_ATTRIBUTES")
    if select == "ALL_PROJECTED_ATTRIBUTES":
        raise DynamoError.validation("ALL_PROJECTED_ATTRIBUTES can be used only with an index")
    if select == "SPECIFIC_ATTRIBUTES" and "ProjectionExpression" not in request:
        raise DynamoError.validation(
            "SPECIFIC_ATTRIBUTES requires a ProjectionExpression (or AttributesToGet)"
        )
    if select == "COUNT" and "ProjectionExpression" in request:
        raise DynamoError.validation("Cannot specify a ProjectionExpression when Select is COUNT")
    return select


def _filter(request: dict[str, Any]) -> Any:
    text = v.field(request, "FilterExpression", str)
    return None if text is None else v.guarded(parse_condition, text, "FilterExpression")


class _Page:
    """Collects evaluated items until Limit or 1 MB, applying filter and projection."""

    def __init__(self, request: dict[str, Any], limit: int | None, select: str) -> None:
        self.request = request
        self.limit = limit
        self.count_only = select == "COUNT"
        self.filter = _filter(request)
        self.projection = v.projection(request, check_placeholders=False)
        self.names, self.values = v.expression_inputs(request)
        self.items: list[dict[str, Any]] = []
        self.count = 0
        self.scanned = 0
        self.bytes = 0
        self.last: dict[str, Any] | None = None

    def full(self) -> bool:
        return (self.limit is not None and self.scanned >= self.limit) or self.bytes >= PAGE_BYTES

    def room(self) -> int:
        return (
            NODE_PAGE if self.limit is None else max(1, min(NODE_PAGE, self.limit - self.scanned))
        )

    def add(self, item: dict[str, Any], key: dict[str, Any]) -> None:
        self.scanned += 1
        self.bytes += item_size(item)
        self.last = key
        if self.filter is not None and not v.guarded(
            evaluate_condition, self.filter, item, self.names, self.values
        ):
            return
        self.count += 1
        if not self.count_only:
            self.items.append(v.project(item, self.projection, self.request))

    def finish(self, layout: TableLayout, consistent: bool, more: bool) -> dict[str, Any]:
        """Charge the table the read units of what was read, and answer with the page."""
        charge(layout.spec.name, read_units(self.bytes, consistent))
        body: dict[str, Any] = {"Count": self.count, "ScannedCount": self.scanned}
        if not self.count_only:
            body["Items"] = self.items
        if more and self.last is not None:
            body["LastEvaluatedKey"] = self.last
        return body


def _no_index(request: dict[str, Any]) -> None:
    """No table here has secondary indexes (CreateTable refuses them), so an IndexName gets
    DynamoDB's answer for an index the table does not have."""
    index = v.field(request, "IndexName", str)
    if index is not None:
        raise DynamoError.validation(f"The table does not have the specified index: {index}")


async def query(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    filter_label = "Filter Expression" if request.get("QueryFilter") is None else "QueryFilter"
    sent = request
    request = legacy.rewrite("Query", request)
    name = v.table_name(request)
    text = v.field(request, "KeyConditionExpression", str)
    if text is None:
        raise DynamoError.validation(
            "Either the KeyConditions or KeyConditionExpression parameter must be specified in "
            "the request."
        )
    names, values = v.expression_inputs(request)
    # The request's own values and expressions are checked before the table is looked up, as
    # DynamoDB does.
    _check_start_values(request)
    v.placeholders(request, ["ProjectionExpression", "FilterExpression", "KeyConditionExpression"])
    layout = await ctx.table(name)
    _no_index(request)
    schema = layout.spec.key_schema
    legacy.check_key_attributes(sent, schema.hash_name, schema.range_name)
    condition = v.guarded(
        parse_key_condition, text, names, values, schema.hash_name, schema.range_name
    )
    filter_text = v.field(request, "FilterExpression", str)
    if filter_text is not None:
        filter_ast = v.guarded(parse_condition, filter_text, "FilterExpression")
        v.guarded(check_filter_keys, filter_ast, names, schema.names(), filter_label)
    _check_operand(schema.hash_name, schema.hash_type, condition.partition_value, schema)
    pk = encode_key_value(condition.partition_value)
    lo, hi = _sort_bounds(condition.sort, schema)
    forward = v.field(request, "ScanIndexForward", bool)
    forward = True if forward is None else forward
    consistent = bool(v.field(request, "ConsistentRead", bool))
    page = _Page(request, v.limit(request), _select(request))
    start = _start_key(request, layout)
    start_after = start[1] if start else None
    if start is not None and start[0] != pk:
        raise DynamoError.validation("The provided starting key does not match the partition key")
    partition = layout.partition_for(pk)
    more = True
    while more and not page.full():
        reply = await ctx.read(
            layout,
            partition,
            "query",
            consistent,
            pk=pk,
            lo=lo,
            hi=hi,
            forward=forward,
            limit=page.room(),
            start_after=start_after,
        )
        rows = reply["items"]
        more = bool(reply["more"])
        for sk, item in rows:
            page.add(item, v.key_of(schema, item))
            start_after = sk
            if page.full():  # stopped by Limit or 1 MB: DynamoDB gives the key even if no
                more = True  # item follows (an empty last page), it does not look ahead
                break
    return page.finish(layout, consistent, more)


def _check_operand(name: str, expected: str | None, value: Any, schema: Any) -> None:
    """A key condition's value: of another type than the key's, DynamoDB's words are its
    own (both for KeyConditions and a KeyConditionExpression); then the key's other rules."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) != expected:
        raise DynamoError.validation(
            f"{v.INVALID}: Condition parameter type does not match schema type"
        )
    v.check_key_types(schema, {name: value})


def _sort_bounds(sort: Any, schema: Any) -> tuple[Bound, Bound]:
    if sort is None:
        return None, None
    for value in sort.values:
        _check_operand(schema.range_name, schema.range_type, value, schema)
    encoded = [encode_key_value(value) for value in sort.values]
    match sort.op:
        case "=":
            return [encoded[0], True], [encoded[0], True]
        case "<":
            return None, [encoded[0], False]
        case "<=":
            return None, [encoded[0], True]
        case ">":
            return [encoded[0], False], None
        case ">=":
            return [encoded[0], True], None
        case "BETWEEN":
            return [encoded[0], True], [encoded[1], True]
        case "begins_with":
            if "N" in sort.values[0]:
                raise DynamoError.validation(
                    "Invalid KeyConditionExpression: Incorrect operand type for operator or "
                    "function; operator or function: begins_with, operand type: N"
                )
            upper = prefix_upper_bound(encoded[0])
            return [encoded[0], True], (None if upper is None else [upper, False])
    raise DynamoError.validation(f"Unsupported key condition operator {sort.op}")


def _start_key(request: dict[str, Any], layout: TableLayout) -> tuple[bytes, bytes] | None:
    start = v.field(request, "ExclusiveStartKey", dict)
    if start is None:
        return None
    try:
        return v.encoded_key(layout.spec.key_schema, v.key_map(start, layout.spec.key_schema))
    except DynamoError as exc:
        raise _bad_start(exc) from None


def _check_start_values(request: dict[str, Any]) -> None:
    """ExclusiveStartKey's values on their own, before the table is looked up."""
    if v.field(request, "ExclusiveStartKey", dict) is None:
        return
    try:
        v.attribute_map(request, "ExclusiveStartKey")
    except DynamoError as exc:
        raise _bad_start(exc) from None


def _bad_start(exc: DynamoError) -> DynamoError:
    """DynamoDB prefixes what is wrong with the key: 'The provided starting key is invalid: The
    provided key element does not match the schema'."""
    if exc.type != "ValidationException":
        return exc
    return DynamoError.validation(f"The provided starting key is invalid: {exc.message}")


async def scan(ctx: RouterContext, request: dict[str, Any]) -> dict[str, Any]:
    request = legacy.rewrite("Scan", request)
    segment = _segment(request)
    name = v.table_name(request)
    _check_start_values(request)
    v.placeholders(request, ["FilterExpression", "ProjectionExpression"])
    layout = await ctx.table(name)
    _no_index(request)
    consistent = bool(v.field(request, "ConsistentRead", bool))
    page = _Page(request, v.limit(request), _select(request))
    start = _start_key(request, layout)
    partitions: list[Partition] = [
        p for p in layout.partitions if segment is None or segment.overlaps(p)
    ]
    cursor: list[bytes] | None = None
    if start is not None:
        first = layout.partition_for(start[0])
        partitions = partitions[partitions.index(first) :]
        cursor = [start[0], start[1]]
    more = False
    for partition in partitions:
        part_more = True
        while part_more and not page.full():
            reply = await ctx.read(
                layout, partition, "scan", consistent, start_after=cursor, limit=page.room()
            )
            rows = reply["items"]
            part_more = bool(reply["more"])
            for pk, sk, item in rows:
                cursor = [pk, sk]
                if segment is not None and not segment.holds(pk):
                    continue  # another segment's item
                page.add(item, v.key_of(layout.spec.key_schema, item))
                if page.full():
                    break
        cursor = None
        if page.full():
            more = True  # as Query: a page stopped by Limit or 1 MB always has a key
            break
    return page.finish(layout, consistent, more)


@dataclass(frozen=True, slots=True)
class _Segment:
    """One segment of a parallel Scan: the items whose partition-key hash falls in its share
    of the hash space, so segments split the table evenly and each reads only the partitions
    its hash range overlaps."""

    lo: int  # inclusive
    hi: int  # exclusive

    def overlaps(self, partition: Partition) -> bool:
        return partition.hash_lo < self.hi and self.lo <= partition.hash_hi

    def holds(self, pk: bytes) -> bool:
        return self.lo <= partition_key_hash(pk) < self.hi


def _segment(request: dict[str, Any]) -> _Segment | None:
    segment = v.field(request, "Segment", int)
    total = v.field(request, "TotalSegments", int)
    if segment is None and total is None:
        return None
    for name, value, low, high in (
        ("segment", segment, 0, 999_999),
        ("totalSegments", total, 1, 1_000_000),
    ):
        if value is not None and not low <= value <= high:
            bound = (
                f"greater than or equal to {low}"
                if value < low
                else f"less than or equal to {high}"
            )
            raise DynamoError.validation(
                f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
                f"constraint: Member must have value {bound}"
            )
    if total is None:
        raise DynamoError.validation(
            "The TotalSegments parameter is required but was not present in the request when "
            "Segment parameter is present"
        )
    if segment is None:
        raise DynamoError.validation(
            "The Segment parameter is required but was not present in the request when "
            "parameter TotalSegments is present"
        )
    if segment >= total:
        raise DynamoError.validation(
            "The Segment parameter is zero-based and must be less than parameter TotalSegments: "
            f"Segment: {segment} is not less than TotalSegments: {total}"
        )
    return _Segment(segment * HASH_SPACE // total, (segment + 1) * HASH_SPACE // total)
