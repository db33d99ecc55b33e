"""The DynamoDB data model and expression language, pure Python and free of I/O.

The request router uses it to validate requests and parse their expressions; the storage
node's state machine uses it to evaluate conditions and apply updates when a write is applied.

    from cluster.dynamo import apply_update, evaluate_condition, parse_condition, parse_update

    item = {"id": {"S": "a"}, "n": {"N": "1"}}
    if evaluate_condition(parse_condition("n < :max"), item, None, {":max": {"N": "5"}}):
        item = apply_update(parse_update("ADD n :one"), item, None, {":one": {"N": "1"}}, ["id"])
"""

from cluster.dynamo.evaluate import (
    apply_projection,
    apply_update,
    evaluate_condition,
    lookup,
    validate_update,
)
from cluster.dynamo.expressions import (
    check_placeholder_maps,
    check_placeholders_defined,
    check_placeholders_used,
    parse_condition,
    parse_projection,
    parse_update,
)
from cluster.dynamo.keycondition import parse_key_condition
from cluster.dynamo.nodes import (
    Condition,
    KeyCondition,
    Path,
    Projection,
    SortCondition,
    UpdateExpression,
    ValueRef,
)
from cluster.dynamo.values import (
    MAX_ITEM_BYTES,
    AttributeValue,
    Item,
    SerializationError,
    TypeMismatchError,
    ValidationError,
    add_numbers,
    check_item_size,
    compare_values,
    item_size,
    normalize_item,
    normalize_number,
    normalize_value,
    subtract_numbers,
    validate_item,
    validate_key_value,
    validate_value,
    values_equal,
)

__all__ = [
    "MAX_ITEM_BYTES",
    "AttributeValue",
    "Condition",
    "Item",
    "KeyCondition",
    "Path",
    "Projection",
    "SerializationError",
    "SortCondition",
    "TypeMismatchError",
    "UpdateExpression",
    "ValidationError",
    "ValueRef",
    "add_numbers",
    "apply_projection",
    "apply_update",
    "check_item_size",
    "check_placeholder_maps",
    "check_placeholders_defined",
    "check_placeholders_used",
    "compare_values",
    "evaluate_condition",
    "item_size",
    "lookup",
    "normalize_item",
    "normalize_number",
    "normalize_value",
    "parse_condition",
    "parse_key_condition",
    "parse_projection",
    "parse_update",
    "subtract_numbers",
    "validate_item",
    "validate_key_value",
    "validate_update",
    "validate_value",
    "values_equal",
]
