"""DynamoDB typed attribute values: validation, size, number arithmetic, comparison, equality.

Values are the JSON dicts of DynamoDB's wire protocol, one type tag each: ``{"S": "x"}``,
``{"N": "1.5"}`` (numbers travel as strings), ``{"B": "<base64>"}``, ``{"BOOL": true}``,
``{"NULL": true}``, ``{"L": [...]}``, ``{"M": {...}}``, ``{"SS": [...]}``, ``{"NS": [...]}``,
``{"BS": [...]}``. Everything here is pure; invalid input raises ``ValidationError`` carrying a
DynamoDB-like message that the router returns as a ``ValidationException``.

    validate_item({"id": {"S": "a"}, "n": {"N": "1.50"}})
    add_numbers("1.50", "2")  # -> "3.5"
    values_equal({"SS": ["a", "b"]}, {"SS": ["b", "a"]})  # -> True
    compare_values({"N": "10"}, {"N": "9"})  # -> 1
    item_size({"id": {"S": "abc"}})  # -> 5  (2 name bytes + 3 value bytes)
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from decimal import Context, Decimal, Inexact
from typing import Any

AttributeValue = dict[str, Any]  # {"S": "x"}, {"L": [{"N": "1"}]}, ...
Item = dict[str, AttributeValue]  # attribute name -> value

SCALAR_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL"})
SET_TYPES = {"SS": "S", "NS": "N", "BS": "B"}  # set type -> member type
ALL_TYPES = frozenset({*SCALAR_TYPES, *SET_TYPES, "L", "M"})
KEY_TYPES = frozenset({"S", "N", "B"})

MAX_NUMBER_DIGITS = 38
MAX_NESTING = 32  # levels of lists and maps inside one attribute value
MAX_ITEM_BYTES = 400 * 1024
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_PLAIN_NUMBER = re.compile(r"-?(\d{1,38})(?:\.(\d{1,38}))?")  # see _number_size
_UPPER_LIMIT = Decimal("1E+126")  # magnitudes must stay below this ...
_LOWER_LIMIT = Decimal("1E-130")  # ... and, unless zero, at or above this
_ARITHMETIC = Context(prec=MAX_NUMBER_DIGITS, Emax=999_999, Emin=-999_999, traps=[Inexact])
_INVALID = "One or more parameter values were invalid"
_SET_NAMES = {"SS": "string", "NS": "number", "BS": "binary"}


class ValidationError(Exception):
    """A request DynamoDB would reject with ``ValidationException``; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SerializationError(ValidationError):
    """A value of the wrong JSON type (``{"N": 123}``): DynamoDB's SerializationException."""


class TypeMismatchError(Exception):
    """Two values cannot be ordered (different or unordered types); comparisons are false."""


# --- validation ----------------------------------------------------------------------------


def validate_item(item: Mapping[str, Any]) -> None:
    """Validate every attribute of an item (names non-empty, values well formed)."""
    if not isinstance(item, Mapping):
        raise ValidationError(f"{_INVALID}: an item must be a map of attribute values")
    for name, av in item.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(f"{_INVALID}: An attribute name must not be empty")
        validate_value(av, name)


def validate_value(av: Any, path: str = "", depth: int = 0) -> None:
    """Raise ``ValidationError`` unless ``av`` is a well-formed attribute value.

    ``path`` names where the value sits (``"Item.tags[2]"``) and is added to the message;
    ``depth`` is how many lists and maps hold it (DynamoDB nests at most 32 levels deep).
    """
    kind, payload = _tag(av, path)
    if kind in ("L", "M") and depth >= MAX_NESTING:
        raise ValidationError("Nesting Levels have exceeded supported limits")
    if kind in SET_TYPES:
        _validate_set(kind, payload, path)
    elif kind == "L":
        if not isinstance(payload, list):
            raise SerializationError("Expected list or null")
        for i, member in enumerate(payload):
            validate_value(member, f"{path}[{i}]", depth + 1)
    elif kind == "M":
        if not isinstance(payload, dict):
            raise SerializationError("Expected map or null")
        for name, member in payload.items():
            validate_value(member, f"{path}.{name}" if path else name, depth + 1)
    else:
        _validate_scalar(kind, payload, path)


def validate_key_value(av: Any, name: str, expected_type: str | None = None) -> None:
    """Validate the value of key attribute ``name``: S, N or B, non-empty, of the schema's type."""
    kind, payload = _tag(av, name)
    if kind not in KEY_TYPES or (expected_type is not None and kind != expected_type):
        want = expected_type or "S, N or B"
        raise ValidationError(
            f"{_INVALID}: Type mismatch for key {name} expected: {want} actual: {kind}"
        )
    _validate_scalar(kind, payload, name)
    if payload == "":
        raise ValidationError(  # DynamoDB's words: "are not valid." here, not "were invalid:"
            "One or more parameter values are not valid. The AttributeValue for a key attribute "
            f"cannot contain an empty {'string' if kind == 'S' else 'binary'} value. Key: {name}"
        )


def _tag(av: Any, path: str) -> tuple[str, Any]:
    if not isinstance(av, Mapping) or not av:
        raise ValidationError(
            "Supplied AttributeValue is empty, must contain exactly one of the supported "
            f"datatypes{_where(path)}"
        )
    if len(av) > 1:
        raise ValidationError(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one "
            f"of the supported datatypes{_where(path)}"
        )
    ((kind, payload),) = av.items()
    if kind not in ALL_TYPES:
        raise _invalid(f"unknown attribute value type {kind!r}", path)
    return kind, payload


def _validate_scalar(kind: str, payload: Any, path: str) -> None:
    if kind in ("S", "N", "B") and not isinstance(payload, str):
        raise _wrong_json(payload, "a Blob" if kind == "B" else "an String")
    if kind == "N":
        if _plain_number(payload) is None:  # not plain: the Decimal decides (or raises)
            parse_number(payload)
    elif kind == "B":
        decode_binary(payload)
    elif kind in ("BOOL", "NULL") and not isinstance(payload, bool):
        raise _wrong_json(payload, "an Boolean")
    elif kind == "NULL" and payload is not True:
        raise ValidationError(
            f"{_INVALID}: Null attribute value types must have the value of true{_where(path)}"
        )


def _validate_set(kind: str, payload: Any, path: str) -> None:
    if not isinstance(payload, list):
        raise SerializationError("Expected list or null")
    if not payload:  # DynamoDB's words, its two spaces included
        raise ValidationError(
            f"{_INVALID}: Binary sets should not be empty"
            if kind == "BS"
            else f"{_INVALID}: An {_SET_NAMES[kind]} set  may not be empty"
        )
    member_type = SET_TYPES[kind]
    for member in payload:
        _validate_scalar(member_type, member, path)
    if len(set_members(kind, payload)) != len(payload):
        if kind == "NS":
            raise ValidationError("Input collection contains duplicates")
        of_type = "of type BS" if kind == "BS" else ""
        raise ValidationError(
            f"{_INVALID}: Input collection [{', '.join(payload)}]{of_type} contains duplicates."
        )


def not_a_string(payload: Any) -> SerializationError:
    """DynamoDB's words for a JSON value that is not a string where its model wants one
    (an ExpressionAttributeNames value, an S attribute value)."""
    return _wrong_json(payload, "an String")


def _wrong_json(payload: Any, wanted: str) -> SerializationError:
    """DynamoDB's words for a JSON value of the wrong type inside an attribute value."""
    if isinstance(payload, list):
        return SerializationError("Start of list found where not expected")
    if isinstance(payload, dict):
        return SerializationError("Start of structure or map found where not expected.")
    if isinstance(payload, bool):
        return SerializationError(f"class java.lang.Boolean can not be converted to {wanted}")
    if isinstance(payload, int | float):
        return SerializationError(
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be "
            f"converted to {wanted}"
        )
    return SerializationError(f"'{payload}' can not be converted to {wanted}")


def _invalid(what: str, path: str) -> ValidationError:
    return ValidationError(f"{_INVALID}: {what}{_where(path)}")


def _where(path: str) -> str:
    """Where a bad value sits: DynamoDB's messages do not say (``path`` is kept for callers)."""
    return ""


# --- numbers and binary --------------------------------------------------------------------


def parse_number(text: str) -> Decimal:
    """The ``Decimal`` for a DynamoDB number string; raises if malformed or out of range."""
    if not isinstance(text, str) or not _NUMBER_TEXT.fullmatch(text):
        raise ValidationError(f"The parameter cannot be converted to a numeric value: {text}")
    number = Decimal(text)
    _check_number(number)
    return number


def normalize_number(text: str) -> str:
    """DynamoDB's canonical text for a number: plain notation, no redundant zeros."""
    plain = _plain_number(text)
    return plain if plain is not None else format_number(parse_number(text))


def _plain_number(text: Any) -> str | None:
    """The canonical text of a number written in plain notation (``-007.50`` -> ``-7.5``)
    with at most 38 digits on each side of the point and at most 38 significant digits,
    without building a Decimal; None for anything else (exponents, a sign of ``+``, a bare
    point, more digits: the Decimal path decides, and raises if invalid). Such a number is
    always valid and within range: below 1E+38 in magnitude and, unless zero, at least
    1E-38. What it returns is what ``format_number(parse_number(text))`` returns (tested);
    numbers are validated and normalized on every item a router writes."""
    plain = _PLAIN_NUMBER.fullmatch(text) if isinstance(text, str) else None
    if plain is None:
        return None
    whole, fraction = plain[1].lstrip("0"), (plain[2] or "").rstrip("0")
    if len((whole + fraction).strip("0")) > MAX_NUMBER_DIGITS:
        return None
    if not whole and not fraction:
        return "0"  # "-0", "0.000"
    sign = "-" if text[0] == "-" else ""
    return f"{sign}{whole or '0'}.{fraction}" if fraction else f"{sign}{whole}"


def format_number(number: Decimal) -> str:
    """Plain-notation text of a number (``Decimal("1.50E+2")`` -> ``"150"``)."""
    if number.is_zero():
        return "0"
    sign, digits, exponent = number.as_tuple()
    text = "".join(map(str, digits)).rstrip("0")
    exponent = int(exponent) + len(digits) - len(text)  # value = int(text) * 10**exponent
    if exponent >= 0:
        plain = text + "0" * exponent
    elif -exponent >= len(text):
        plain = "0." + "0" * (-exponent - len(text)) + text
    else:
        plain = text[:exponent] + "." + text[exponent:]
    return ("-" if sign else "") + plain


def normalize_value(av: AttributeValue) -> AttributeValue:
    """A (valid) value with every number, in sets, lists and maps too, in canonical text.

    DynamoDB stores numbers by value ("Leading and trailing zeroes are trimmed"), so what it
    returns is ``{"N": "1.5"}`` for ``{"N": "01.50"}``. Values without numbers come back as is.
    """
    kind = type_of(av)
    payload = av[kind]
    if kind == "N":
        return {"N": normalize_number(payload)}
    if kind == "NS":
        return {"NS": [normalize_number(member) for member in payload]}
    if kind == "L":
        return {"L": [normalize_value(member) for member in payload]}
    if kind == "M":
        return {"M": normalize_item(payload)}
    return av


def normalize_item(item: Mapping[str, AttributeValue]) -> Item:
    """``normalize_value`` applied to every attribute of an item (or of a placeholder map)."""
    return {name: normalize_value(av) for name, av in item.items()}


def add_numbers(a: str, b: str) -> str:
    """``a + b`` at DynamoDB's 38-digit precision, as canonical text."""
    return _arithmetic(_ARITHMETIC.add, a, b)


def subtract_numbers(a: str, b: str) -> str:
    """``a - b`` at DynamoDB's 38-digit precision, as canonical text."""
    return _arithmetic(_ARITHMETIC.subtract, a, b)


def _arithmetic(op: Callable[[Decimal, Decimal], Decimal], a: str, b: str) -> str:
    try:
        result = op(parse_number(a), parse_number(b))
    except Inexact:
        raise ValidationError(
            f"Attempting to store more than {MAX_NUMBER_DIGITS} significant digits in a Number"
        ) from None
    _check_number(result)
    return format_number(result)


def _check_number(number: Decimal) -> None:
    if not number.is_finite():
        raise ValidationError(f"The parameter cannot be converted to a numeric value: {number}")
    if number.is_zero():
        return
    magnitude = number.copy_abs()  # exact: abs() would round to the context precision
    if magnitude >= _UPPER_LIMIT:
        raise ValidationError(
            "Number overflow. Attempting to store a number with magnitude larger than "
            "supported range"
        )
    if magnitude < _LOWER_LIMIT:
        raise ValidationError(
            "Number underflow. Attempting to store a number with magnitude smaller than "
            "supported range"
        )
    if _significant_digits(number) > MAX_NUMBER_DIGITS:
        raise ValidationError(
            f"Attempting to store more than {MAX_NUMBER_DIGITS} significant digits in a Number"
        )


def _significant_digits(number: Decimal) -> int:
    digits = "".join(map(str, number.as_tuple().digits)).strip("0")
    return max(len(digits), 1)


def decode_binary(text: str) -> bytes:
    """The bytes of a ``B`` payload (base64); raises ``ValidationError`` if malformed."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValidationError(f"{_INVALID}: Invalid base64 binary value") from None


# --- inspection ----------------------------------------------------------------------------


def type_of(av: Mapping[str, Any]) -> str:
    """The type tag of a (valid) value: ``"S"``, ``"N"``, ``"L"``, ``"SS"``, ..."""
    return next(iter(av))


def set_member_key(kind: str, member: str) -> Any:
    """A member of an SS, NS or BS set in comparable form: str, Decimal or bytes."""
    if kind == "NS":
        return parse_number(member)
    if kind == "BS":
        return decode_binary(member)
    return member


def set_members(kind: str, members: list[str]) -> set[Any]:
    """Members of a set value in comparable form (numbers as Decimal, binary as bytes)."""
    return {set_member_key(kind, m) for m in members}


def values_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """DynamoDB equality: same type and value; numbers by value, sets ignoring order."""
    kind = type_of(a)
    if kind != type_of(b):
        return False
    x, y = a[kind], b[kind]
    if kind == "N":
        return bool(parse_number(x) == parse_number(y))
    if kind == "B":
        return decode_binary(x) == decode_binary(y)
    if kind in SET_TYPES:
        return set_members(kind, x) == set_members(kind, y)
    if kind == "L":
        return len(x) == len(y) and all(map(values_equal, x, y))
    if kind == "M":
        return x.keys() == y.keys() and all(values_equal(x[k], y[k]) for k in x)
    return bool(x == y)


def compare_values(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Order two N, S or B values of the same type: negative, zero or positive.

    Strings order by UTF-8 bytes (the same as code points), binary by bytes, numbers by value.
    Raises ``TypeMismatchError`` for different or unordered types.
    """
    kind = type_of(a)
    if kind != type_of(b) or kind not in KEY_TYPES:
        raise TypeMismatchError(f"cannot order {kind} against {type_of(b)}")
    x: Any
    y: Any
    if kind == "N":
        x, y = parse_number(a[kind]), parse_number(b[kind])
    elif kind == "B":
        x, y = decode_binary(a[kind]), decode_binary(b[kind])
    else:
        x, y = a[kind], b[kind]
    return int(x > y) - int(x < y)


# --- size ----------------------------------------------------------------------------------


def item_size(item: Mapping[str, Any]) -> int:
    """Approximate DynamoDB size of an item in bytes: attribute name bytes plus value sizes."""
    return sum(len(name.encode("utf-8")) + value_size(av) for name, av in item.items())


def value_size(av: Mapping[str, Any]) -> int:
    """Approximate DynamoDB size of one value.

    Strings count UTF-8 bytes, binary its raw bytes, numbers one byte per two significant
    digits plus one, BOOL and NULL one byte, sets the sum of their members; lists and maps
    cost 3 bytes plus one byte and the size (map: plus the key bytes) of each element.
    """
    kind = type_of(av)
    payload = av[kind]
    if kind == "S":
        return len(payload.encode("utf-8"))
    if kind == "N":
        return _number_size(payload)
    if kind == "B":
        return len(decode_binary(payload))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in SET_TYPES:
        return sum(value_size({SET_TYPES[kind]: member}) for member in payload)
    if kind == "L":
        return 3 + sum(value_size(member) + 1 for member in payload)
    return 3 + sum(len(k.encode("utf-8")) + value_size(v) + 1 for k, v in payload.items())


def _number_size(text: str) -> int:
    plain = _PLAIN_NUMBER.fullmatch(text) if isinstance(text, str) else None
    if plain is not None:
        # Plain notation with at most 38 digits on each side of the point: always a valid
        # number within range, so its significant digits are its digits without the zeros at
        # either end (what parse_number's Decimal gives, without building one: every item a
        # router or an apply measures counts its numbers).
        digits = (plain[1] + (plain[2] or "")).strip("0")
        if len(digits) <= MAX_NUMBER_DIGITS:
            return (max(len(digits), 1) + 1) // 2 + 1
    return (_significant_digits(parse_number(text)) + 1) // 2 + 1


def check_item_size(item: Mapping[str, Any], updated: bool = False) -> None:
    """Raise ``ValidationError`` when an item exceeds DynamoDB's 400 KB limit (``updated``:
    the item an update would leave, which DynamoDB words as such)."""
    if item_size(item) > MAX_ITEM_BYTES:
        what = "Item size to update" if updated else "Item size"
        raise ValidationError(f"{what} has exceeded the maximum allowed size")
