"""DynamoDB's legacy (pre-expression) parameters, rewritten into expressions.

Applications written before expressions existed (and libraries such as PynamoDB's older
paths, the AWS CLI's examples, many tutorials) send ``Expected``, ``AttributeUpdates``,
``AttributesToGet``, ``KeyConditions``, ``QueryFilter``, ``ScanFilter`` and
``ConditionalOperator``. DynamoDB evaluates them exactly as the equivalent expressions, so
``rewrite`` validates them with DynamoDB's messages and turns the request into its expression
form (``ConditionExpression``, ``UpdateExpression``, ``ProjectionExpression``,
``KeyConditionExpression``, ``FilterExpression``) with generated ``#name`` / ``:value``
placeholders. Everything after it (parsing, the storage node's evaluation) sees expressions
only, so there is one evaluator.

Mixing the two styles in one request is refused as DynamoDB refuses it.

    request = rewrite("PutItem", {"TableName": "t", "Item": {...},
                                  "Expected": {"v": {"Value": {"N": "1"}}}})
    request["ConditionExpression"]   # -> "#l0 = :l0"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.dynamo import SerializationError, ValidationError, validate_value
from cluster.dynamo.values import TypeMismatchError, compare_values, type_of

from .errors import DynamoError

INVALID = "One or more parameter values were invalid"

# Per operation: (legacy parameters, expression parameters), each in the order DynamoDB
# names them in its "Can not use both ..." message.
STYLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "PutItem": (("Expected", "ConditionalOperator"), ("ConditionExpression",)),
    "DeleteItem": (("Expected", "ConditionalOperator"), ("ConditionExpression",)),
    "UpdateItem": (
        ("AttributeUpdates", "Expected", "ConditionalOperator"),
        ("UpdateExpression", "ConditionExpression"),
    ),
    "GetItem": (("AttributesToGet",), ("ProjectionExpression",)),
    "BatchGetItem": (("AttributesToGet",), ("ProjectionExpression",)),
    "Query": (
        ("AttributesToGet", "QueryFilter", "ConditionalOperator", "KeyConditions"),
        ("ProjectionExpression", "FilterExpression", "KeyConditionExpression"),
    ),
    "Scan": (
        ("AttributesToGet", "ScanFilter", "ConditionalOperator"),
        ("ProjectionExpression", "FilterExpression"),
    ),
}

# How many values each ComparisonOperator takes ((low, high) inclusive) and of which types.
_SCALARS = ("S", "N", "B")
_ARITY: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("EQ", "NE", "LE", "LT", "GE", "GT"), (1, 1)),
    **dict.fromkeys(("NOT_NULL", "NULL"), (0, 0)),
    **dict.fromkeys(("CONTAINS", "NOT_CONTAINS", "BEGINS_WITH"), (1, 1)),
    "IN": (1, 10_000),
    "BETWEEN": (2, 2),
}
_TYPES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("LE", "LT", "GE", "GT", "CONTAINS", "NOT_CONTAINS"), _SCALARS),
    "BEGINS_WITH": ("S", "B"),
    "IN": _SCALARS,
    "BETWEEN": _SCALARS,
}
_COMPARATORS = {"EQ": "=", "NE": "<>", "LE": "<=", "LT": "<", "GE": ">=", "GT": ">"}
_KEY_OPERATORS = frozenset({"EQ", "LE", "LT", "GE", "GT", "BEGINS_WITH", "BETWEEN"})


def _invalid(message: str) -> DynamoError:
    return DynamoError.validation(f"{INVALID}: {message}")


def _present(request: Mapping[str, Any], name: str) -> bool:
    return request.get(name) is not None


def check_styles(operation: str, request: Mapping[str, Any]) -> bool:
    """Refuse a request that mixes the styles; True when it uses a legacy parameter."""
    legacy, expressions = STYLES[operation]
    used_expressions = [e for e in expressions if _present(request, e)]
    used_legacy = [p for p in legacy if _present(request, p)]
    if used_expressions and used_legacy:
        if (
            operation == "Query"
            and "KeyConditionExpression" not in used_expressions
            and used_legacy == ["KeyConditions"]
        ):
            return True  # KeyConditions with a FilterExpression: DynamoDB accepts that
        raise DynamoError.validation(
            "Can not use both expression and non-expression parameters in the same request: "
            f"Non-expression parameters: {{{', '.join(used_legacy)}}} "
            f"Expression parameters: {{{', '.join(used_expressions)}}}"
        )
    if not used_expressions:
        if _present(request, "ExpressionAttributeNames"):
            raise DynamoError.validation(
                "ExpressionAttributeNames can only be specified when using expressions"
            )
        with_values = [e for e in expressions if e != "ProjectionExpression"]
        if with_values and _present(request, "ExpressionAttributeValues"):
            verb = "are" if len(with_values) > 1 else "is"
            raise DynamoError.validation(
                "ExpressionAttributeValues can only be specified when using expressions: "
                f"{' and '.join(with_values)} {verb} null"
            )
    return bool(used_legacy)


class _Placeholders:
    """Generated ``#lN`` / ``:lN`` placeholders that do not collide with the request's own."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        self.names: dict[str, str] = dict(request.get("ExpressionAttributeNames") or {})
        self.values: dict[str, Any] = dict(request.get("ExpressionAttributeValues") or {})
        self.generated: dict[str, str] = {}  # attribute -> its generated #name
        self.count = 0

    def _fresh(self, sigil: str, taken: Mapping[str, Any]) -> str:
        while f"{sigil}l{self.count}" in taken:
            self.count += 1
        token = f"{sigil}l{self.count}"
        self.count += 1
        return token

    def name(self, attribute: str) -> str:
        token = self.generated.get(attribute)
        if token is None:
            token = self.generated[attribute] = self._fresh("#", self.names)
            self.names[token] = attribute
        return token

    def value(self, av: Any) -> str:
        token = self._fresh(":", self.values)
        self.values[token] = av
        return token


def rewrite(operation: str, request: dict[str, Any]) -> dict[str, Any]:
    """The request in expression form (the same dict when it uses no legacy parameter)."""
    if not check_styles(operation, request):
        return request
    out = dict(request)
    marks = _Placeholders(request)
    legacy, _ = STYLES[operation]
    for name in legacy:
        out.pop(name, None)
    operator = _conditional_operator(request)
    if (
        "Expected" in legacy
        and _present(request, "ConditionalOperator")
        and not request.get("Expected")
    ):
        raise DynamoError.validation(
            "ConditionalOperator cannot be used without Expected or with an empty Expected"
        )
    if _present(request, "Expected"):
        condition = _expected(_map(request, "Expected"), operator, marks)
        if condition:
            out["ConditionExpression"] = condition
    if _present(request, "AttributeUpdates"):
        update = _attribute_updates(_map(request, "AttributeUpdates"), marks)
        if update:
            out["UpdateExpression"] = update
    if _present(request, "AttributesToGet"):
        out["ProjectionExpression"] = _attributes_to_get(request, marks)
    if _present(request, "KeyConditions"):
        out["KeyConditionExpression"] = _key_conditions(_map(request, "KeyConditions"), marks)
    for name in ("QueryFilter", "ScanFilter"):
        if _present(request, name):
            text = _filter(_map(request, name), operator, marks, name)
            if text:
                out["FilterExpression"] = text
    if marks.names:
        out["ExpressionAttributeNames"] = marks.names
    if marks.values:
        out["ExpressionAttributeValues"] = marks.values
    return out


def check_key_attributes(
    request: Mapping[str, Any], hash_name: str, range_name: str | None
) -> None:
    """KeyConditions naming a non-key attribute beside the partition key and without the sort
    key: DynamoDB reports the sort key as missed (a KeyConditionExpression does not)."""
    conditions = request.get("KeyConditions")
    if not isinstance(conditions, dict) or range_name is None:
        return
    if hash_name in conditions and range_name not in conditions and len(conditions) > 1:
        raise DynamoError.validation(f"Query condition missed key schema element: {range_name}")


def update_error(request: Mapping[str, Any], exc: DynamoError) -> DynamoError:
    """The error an UpdateItem met while applying, worded for the request's style: an
    AttributeUpdates ADD or DELETE whose value does not fit the attribute's type is a "Type
    mismatch" in DynamoDB, where the same update as an expression has an operand of an
    incorrect type."""
    if _present(request, "AttributeUpdates") and exc.message == _OPERAND_TYPE:
        return _invalid("Type mismatch for attribute to update")
    return exc


_OPERAND_TYPE = "An operand in the update expression has an incorrect data type"


def _map(request: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = request[name]
    if not isinstance(value, dict):
        raise DynamoError("SerializationException", f"Unexpected value type for field {name}")
    for entry in value.values():
        if not isinstance(entry, dict):
            raise DynamoError("SerializationException", f"Unexpected value type in {name}")
    return value


def _conditional_operator(request: Mapping[str, Any]) -> str:
    operator = request.get("ConditionalOperator") or "AND"
    if operator not in ("AND", "OR"):
        raise DynamoError.validation(
            f"1 validation error detected: Value '{operator}' at 'conditionalOperator' failed "
            "to satisfy constraint: Member must satisfy enum value set: [AND, OR]"
        )
    return str(operator)


def _check_value(av: Any) -> None:
    try:
        validate_value(av)
    except SerializationError as exc:
        raise DynamoError("SerializationException", exc.message) from None
    except ValidationError as exc:
        raise DynamoError.validation(exc.message) from None


def _join(terms: list[str], operator: str) -> str:
    return f" {operator} ".join(f"({t})" if len(terms) > 1 else t for t in terms)


# --- conditions: Expected, QueryFilter, ScanFilter, KeyConditions --------------------------


def _expected(expected: dict[str, Any], operator: str, marks: _Placeholders) -> str:
    terms = []
    for attribute, condition in expected.items():
        if "AttributeValueList" in condition and "Value" in condition:
            raise _invalid(
                "Value and AttributeValueList cannot be used together for Attribute: " + attribute
            )
        if "ComparisonOperator" in condition:
            if "Exists" in condition:
                raise _invalid(
                    "Exists and ComparisonOperator cannot be used together for Attribute: "
                    + attribute
                )
            op = condition["ComparisonOperator"]
            values = condition.get("AttributeValueList")
            if values is None and "Value" in condition:
                values = [condition["Value"]]
            if values is None and op not in ("NULL", "NOT_NULL"):
                raise _invalid(
                    f"Value or AttributeValueList must be used with ComparisonOperator: {op} "
                    f"for Attribute: {attribute}"
                )
            where = f"expected.{attribute}"
            terms.append(_comparison(attribute, op, values or [], marks, where))
            continue
        if "AttributeValueList" in condition:
            raise _invalid(
                "AttributeValueList can only be used with a ComparisonOperator for Attribute: "
                + attribute
            )
        exists = condition.get("Exists")
        value = condition.get("Value")
        if exists is False:
            if value is not None:
                raise _invalid(
                    f"Value cannot be used when Exists is false for Attribute: {attribute}"
                )
            terms.append(f"attribute_not_exists({marks.name(attribute)})")
            continue
        if value is None:
            shown = "null" if exists is None else "true"
            raise _invalid(
                f"Value must be provided when Exists is {shown} for Attribute: {attribute}"
            )
        _check_value(value)
        terms.append(f"{marks.name(attribute)} = {marks.value(value)}")
    return _join(terms, operator)


def _filter(conditions: dict[str, Any], operator: str, marks: _Placeholders, field: str) -> str:
    terms = []
    for attribute, condition in conditions.items():
        op = condition.get("ComparisonOperator")
        where = f"{field[:1].lower()}{field[1:]}.{attribute}"
        if op is None:
            raise DynamoError.validation(
                f"1 validation error detected: Value null at '{where}.member.comparisonOperator' "
                "failed to satisfy constraint: Member must not be null"
            )
        values = condition.get("AttributeValueList") or []
        terms.append(_comparison(attribute, op, values, marks, where))
    return _join(terms, operator)


def _comparison(attribute: str, op: Any, values: Any, marks: _Placeholders, where: str) -> str:
    """One legacy condition as an expression, after DynamoDB's checks of its values; ``where``
    names the map it is in for messages (``expected``, ``scanFilter.x``, ...)."""
    if op not in _ARITY:
        raise DynamoError.validation(
            f"1 validation error detected: Value '{op}' at '{where}.member.comparisonOperator' "
            "failed to satisfy constraint: Member must satisfy enum value set: "
            "[IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, "
            "CONTAINS]"
        )
    if not isinstance(values, list):
        raise DynamoError("SerializationException", "Expected list or null")
    for av in values:
        _check_value(av)
    low, high = _ARITY[op]
    if not low <= len(values) <= high:
        raise _invalid(f"Invalid number of argument(s) for the {op} ComparisonOperator")
    if values and any(type_of(av) != type_of(values[0]) for av in values):
        raise _invalid("AttributeValues inside AttributeValueList must be of same type")
    allowed = _TYPES.get(op)
    for av in values:
        if allowed is not None and type_of(av) not in allowed:
            raise _invalid(
                f"ComparisonOperator {op} is not valid for {type_of(av)} AttributeValue type"
            )
    if op == "BETWEEN":
        try:
            inverted = compare_values(values[0], values[1]) > 0
        except TypeMismatchError:
            inverted = False
        if inverted:
            raise DynamoError.validation(
                "The BETWEEN condition was provided a range where the lower bound is greater "
                "than the upper bound"
            )
    path = marks.name(attribute)
    refs = [marks.value(av) for av in values]
    match op:
        case "NULL":
            return f"attribute_not_exists({path})"
        case "NOT_NULL":
            return f"attribute_exists({path})"
        case "CONTAINS":
            return f"contains({path}, {refs[0]})"
        case "NOT_CONTAINS":  # false on a missing attribute, as CONTAINS is (DynamoDB's rule)
            return f"attribute_exists({path}) AND NOT contains({path}, {refs[0]})"
        case "BEGINS_WITH":
            return f"begins_with({path}, {refs[0]})"
        case "IN":
            return f"{path} IN ({', '.join(refs)})"
        case "BETWEEN":
            return f"{path} BETWEEN {refs[0]} AND {refs[1]}"
    return f"{path} {_COMPARATORS[op]} {refs[0]}"


def _key_conditions(conditions: dict[str, Any], marks: _Placeholders) -> str:
    if not 1 <= len(conditions) <= 2:
        raise DynamoError.validation("Conditions can be of length 1 or 2 only")
    terms = []
    for attribute, condition in conditions.items():
        op = condition.get("ComparisonOperator")
        if op in _ARITY and op not in _KEY_OPERATORS:
            raise DynamoError.validation(
                "Attempted conditional constraint is not an indexable operation"
            )
        values = condition.get("AttributeValueList") or []
        terms.append(_comparison(attribute, op, values, marks, f"keyConditions.{attribute}"))
    return " AND ".join(terms)


# --- AttributeUpdates and AttributesToGet --------------------------------------------------


def _attribute_updates(updates: dict[str, Any], marks: _Placeholders) -> str:
    sets: list[str] = []
    removes: list[str] = []
    adds: list[str] = []
    deletes: list[str] = []
    for attribute, update in updates.items():
        action = update.get("Action") or "PUT"
        if action not in ("PUT", "ADD", "DELETE"):
            raise DynamoError.validation(
                f"1 validation error detected: Value '{action}' at "
                f"'attributeUpdates.{attribute}.member.action' failed to satisfy constraint: "
                "Member must satisfy enum value set: [ADD, PUT, DELETE]"
            )
        value = update.get("Value")
        if value is None:
            if action != "DELETE":
                raise _invalid("Only DELETE action is allowed when no attribute value is specified")
            removes.append(marks.name(attribute))
            continue
        _check_value(value)
        kind = type_of(value)
        path = marks.name(attribute)
        if action == "PUT":
            sets.append(f"{path} = {marks.value(value)}")
        elif action == "DELETE":
            if kind not in ("SS", "NS", "BS"):
                raise _invalid(f"DELETE action with value is not supported for the type {kind}")
            deletes.append(f"{path} {marks.value(value)}")
        elif kind == "L":  # ADD to a list appends (to an empty list when it is missing)
            empty = marks.value({"L": []})
            sets.append(
                f"{path} = list_append(if_not_exists({path}, {empty}), {marks.value(value)})"
            )
        elif kind in ("N", "SS", "NS", "BS"):
            adds.append(f"{path} {marks.value(value)}")
        else:
            raise _invalid(f"ADD action is not supported for the type {kind}")
    clauses = []
    for keyword, actions in (
        ("SET", sets),
        ("REMOVE", removes),
        ("ADD", adds),
        ("DELETE", deletes),
    ):
        if actions:
            clauses.append(f"{keyword} {', '.join(actions)}")
    return " ".join(clauses)


def _attributes_to_get(request: Mapping[str, Any], marks: _Placeholders) -> str:
    names = request["AttributesToGet"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DynamoError("SerializationException", "Unexpected value type for AttributesToGet")
    if not names:
        raise DynamoError.validation(
            "1 validation error detected: Value '[]' at 'attributesToGet' failed to satisfy "
            "constraint: Member must have length greater than or equal to 1"
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _invalid(f"Duplicate value in attribute name: {name}")
        seen.add(name)
    select = request.get("Select")
    if select not in (None, "SPECIFIC_ATTRIBUTES"):
        what = "only the COUNT" if select == "COUNT" else str(select)
        raise DynamoError.validation(
            f"Cannot specify the AttributesToGet when choosing to get {what}"
        )
    return ", ".join(marks.name(n) for n in names)
