"""Request validation shared by the router's operations: fields, table names, keys, limits.

Every problem becomes a ``DynamoError`` (ValidationException) with a message that names the
field, so a malformed request never reaches the storage layer and never crashes the router.

    name = table_name(request)                           # "orders", or ValidationException
    pk, sk = encoded_key(layout.spec.key_schema, item)   # key bytes for routing and storage
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from cluster.dynamo import (
    SerializationError,
    ValidationError,
    apply_projection,
    check_placeholder_maps,
    check_placeholders_defined,
    check_placeholders_used,
    normalize_item,
    parse_condition,
    parse_projection,
    parse_update,
    validate_item,
    validate_key_value,
)
from cluster.dynamo.checks import check_condition_operands, check_projection
from cluster.dynamo.values import check_item_size, decode_binary, not_a_string
from cluster.metadata.partitionmap import KeySchema
from cluster.storage.itemstore import encode_key_value

from .errors import DynamoError

TABLE_NAME = re.compile(r"^[a-zA-Z0-9_.-]{3,255}$")
INVALID = "One or more parameter values were invalid"
KEY_TYPES = ("S", "N", "B")
MAX_KEY_BYTES = {"hash": 2048, "range": 1024}


def field(request: Mapping[str, Any], name: str, kind: type, required: bool = False) -> Any:
    """``request[name]`` checked to be a ``kind``; None when absent and optional."""
    value = request.get(name)
    if value is None:
        if required:
            raise DynamoError.validation(
                f"1 validation error detected: Value null at '{_camel(name)}' failed to satisfy "
                "constraint: Member must not be null"
            )
        return None
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise DynamoError("SerializationException", f"Unexpected value type for field {name}")
    return value


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_.-]*$")
# Operations on a table as a whole word a missing or mis-sized name by hand, as DynamoDB does
# (its "paramater" spelling included); item operations list each broken constraint.
_MISSING_NAME = {
    "DescribeTable": "The paramater 'tableName' is required but was not present in the request",
    "DeleteTable": "The paramater 'tableName' is required but was not present in the request",
    "UpdateTimeToLive": "The parameter 'TableName' is required but was not present in the request",
    "DescribeTimeToLive": (
        "The parameter 'TableName' is required but was not present in the request"
    ),
    "UpdateTable": "The parameter 'TableName' is required but was not present in the request",
}


def table_name(request: Mapping[str, Any], operation: str | None = None) -> str:
    """The request's TableName: 3-255 characters of [a-zA-Z0-9_.-], refused in the words the
    ``operation`` (DescribeTable, DeleteTable, the Time to Live pair) or any other uses."""
    whole_table = operation in _MISSING_NAME
    if whole_table and request.get("TableName") is None:
        raise DynamoError.validation(_MISSING_NAME[str(operation)])
    name: str = field(request, "TableName", str, required=True)
    if whole_table and not 3 <= len(name) <= 255:
        raise DynamoError.validation(
            "TableName must be at least 3 characters long and at most 255 characters long"
        )
    refuse(name_problems(name, "tableName"))
    return name


def name_problems(name: str, at: str) -> list[str]:
    """What is wrong with a table name member (``at``: 'tableName'), in DynamoDB's words and
    order: the character pattern, then the length."""
    broken = []
    if not _NAME_PATTERN.match(name) or not name:
        broken.append("Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
    if len(name) < 3:
        broken.append("Member must have length greater than or equal to 3")
    elif len(name) > 255:
        broken.append("Member must have length less than or equal to 255")
    return [f"Value '{name}' at '{at}' failed to satisfy constraint: {b}" for b in broken]


def refuse(problems: list[str]) -> None:
    """One ValidationException listing every problem, as DynamoDB words several: 'N validation
    errors detected: A; B'."""
    if problems:
        count = f"{len(problems)} validation error{'s' if len(problems) > 1 else ''} detected"
        raise DynamoError.validation(f"{count}: {'; '.join(problems)}")


def choice(request: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = field(request, name, str) or default
    if value not in allowed:
        raise DynamoError.validation(
            f"1 validation error detected: Value '{value}' at '{_camel(name)}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return str(value)


def limit(request: Mapping[str, Any]) -> int | None:
    value: int | None = field(request, "Limit", int)
    if value is not None and value < 1:
        raise DynamoError.validation(
            f"1 validation error detected: Value '{value}' at 'limit' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1"
        )
    return value


def attribute_map(request: Mapping[str, Any], name: str) -> None:
    """Check the request's ``Item`` or ``Key`` on its own: present, a map, every value well
    formed. DynamoDB does this before it looks the table up, so a malformed key sent to a
    table that does not exist is a ValidationException, not a ResourceNotFoundException."""
    guarded(validate_item, field(request, name, dict, required=True))


def item(request: Mapping[str, Any], schema: KeySchema, *, checked: bool = False) -> dict[str, Any]:
    """The request's ``Item``, validated, with its numbers in canonical text (as stored).
    ``checked``: ``attribute_map(request, "Item")`` already validated its values."""
    value: dict[str, Any] = field(request, "Item", dict, required=True)
    if not checked:
        guarded(validate_item, value)
    for name in schema.names():
        if name not in value:
            raise DynamoError.validation(
                f"One or more parameter values were invalid: Missing the key {name} in the item"
            )
    check_key_types(schema, value)
    guarded(check_item_size, value)
    return normalize_item(value)


def key(request: Mapping[str, Any], schema: KeySchema, name: str = "Key") -> dict[str, Any]:
    """A ``Key`` map holding exactly the table's key attributes with the right types."""
    value: dict[str, Any] = field(request, name, dict, required=True)
    return key_map(value, schema)


def key_map(value: Mapping[str, Any], schema: KeySchema) -> dict[str, Any]:
    if set(value) != set(schema.names()):
        raise DynamoError.validation("The provided key element does not match the schema")
    check_key_types(schema, value)
    return normalize_item(value)  # a number key comes back as stored: "5", not "5.00"


def check_key_types(schema: KeySchema, value: Mapping[str, Any]) -> None:
    for role, name, expected in schema.parts():
        if name not in value:
            continue  # callers check presence; this checks the types of what is there
        av = value[name]
        try:
            validate_key_value(av, name, expected)
        except SerializationError as exc:  # {"N": 1}: the JSON itself is wrong
            raise DynamoError("SerializationException", exc.message) from None
        except ValidationError as exc:
            prefixed = (
                exc.message
                if exc.message.startswith("One or more parameter values")
                else f"{INVALID}: {exc.message}"
            )
            raise DynamoError.validation(prefixed) from None
        raw = next(iter(av.values())) if isinstance(av, dict) and av else ""
        size = len(decode_binary(raw)) if "B" in av else len(str(raw).encode())
        if size > MAX_KEY_BYTES[role]:
            raise DynamoError.validation(
                f"{INVALID}: Size of {role} key attribute "
                f"{name} exceeds the limit of {MAX_KEY_BYTES[role]} bytes"
            )


def encoded_key(schema: KeySchema, value: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(pk, sk) bytes as the store orders them; sk is b"" for tables without a sort key."""
    pk = encode_key_value(value[schema.hash_name])
    sk = encode_key_value(value[schema.range_name]) if schema.range_name else b""
    return pk, sk


def key_of(schema: KeySchema, full_item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: full_item[name] for name in schema.names() if name in full_item}


def guarded(fn: Any, *args: Any) -> Any:
    """Call into the expression engine, turning its ValidationError into ours."""
    try:
        return fn(*args)
    except SerializationError as exc:
        raise DynamoError("SerializationException", exc.message) from None
    except ValidationError as exc:
        raise DynamoError.validation(exc.message) from None


def expression_inputs(request: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    names = field(request, "ExpressionAttributeNames", dict)
    values = field(request, "ExpressionAttributeValues", dict)
    return (names or {}), (values or {})


_PARSERS: dict[str, Callable[[str], Any]] = {
    "ConditionExpression": lambda text: parse_condition(text, "ConditionExpression"),
    "FilterExpression": lambda text: parse_condition(text, "FilterExpression"),
    "KeyConditionExpression": lambda text: parse_condition(text, "KeyConditionExpression"),
    "UpdateExpression": parse_update,
    "ProjectionExpression": parse_projection,
}


# Problems with a function's operands, which DynamoDB reports only after an expression's
# undefined placeholders (syntax, function names and reserved words come before them).
_AFTER_PLACEHOLDERS = (
    "Incorrect number of operands",
    "Incorrect operand type",
    "requires a document path",
)


def placeholders(request: Mapping[str, Any], expressions: list[str]) -> None:
    """Check the request's expressions, named by field (``["ConditionExpression"]``), in
    DynamoDB's order: each must be a string if present; the placeholder maps (as sent: absent
    is not empty) must not be empty and hold well-formed keys and values; each expression must
    parse (syntax errors before undefined or unused placeholders); then undefined and unused
    placeholders; then the constants the expressions use (operand types, BETWEEN bounds) and
    the projection's paths. Every problem is a ValidationException."""
    texts: list[str | None] = [field(request, name, str) for name in expressions]
    names = field(request, "ExpressionAttributeNames", dict)
    values = field(request, "ExpressionAttributeValues", dict)
    if names is None and values is None and all(text is None for text in texts):
        return  # nothing to check (most requests): what follows would find nothing
    for entry in (names or {}).values():
        if not isinstance(entry, str):  # the JSON is wrong: before any check of meaning
            raise DynamoError("SerializationException", not_a_string(entry).message)
    guarded(check_placeholder_maps, names, values, texts)
    asts = {}
    for name, text in zip(expressions, texts, strict=True):
        if text is None:
            continue
        try:
            asts[name] = guarded(_PARSERS[name], text)
        except DynamoError as exc:
            if any(problem in exc.message for problem in _AFTER_PLACEHOLDERS):
                # DynamoDB reports this expression's undefined placeholders before these.
                guarded(check_placeholders_defined, names, values, text, name)
            raise
    guarded(check_placeholders_used, names, values, texts, expressions)
    for name, ast in asts.items():
        if name == "ProjectionExpression":
            guarded(check_projection, ast, names)
        elif name != "UpdateExpression":
            guarded(check_condition_operands, ast, values, name)


def projection(request: dict[str, Any], check_placeholders: bool = True) -> Any:
    """The parsed ProjectionExpression; for a request whose only expression it is, also check
    the placeholders (requests with more expressions check them all together)."""
    text = field(request, "ProjectionExpression", str)
    if check_placeholders:
        placeholders(request, ["ProjectionExpression"])
    return None if text is None else guarded(parse_projection, text)


def project(item: dict[str, Any], parsed: Any, request: dict[str, Any]) -> dict[str, Any]:
    """``item`` cut down to the ``projection(request)`` parsed before (None: all of it)."""
    if parsed is None:
        return item
    names = request.get("ExpressionAttributeNames") or {}
    projected: dict[str, Any] = guarded(apply_projection, parsed, item, names)
    return projected
