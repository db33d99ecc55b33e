"""Order-preserving encoding of DynamoDB key values: comparing the bytes orders them as
DynamoDB orders the values (strings by UTF-8 bytes, binary by bytes, numbers numerically), so
range queries on a sort key are plain B-tree range scans in the item store (itemstore.py, which
re-exports these names).

    encode_key_value({"N": "5.0"}) == encode_key_value({"N": "50e-1"})   # True
    decode_key_value(encode_key_value({"S": "user#1"}))                  # {"S": "user#1"}
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

# --- key values ------------------------------------------------------------------------------
#
# S: b"S" + UTF-8.  B: b"B" + raw bytes.  N: b"N" + one of
#   0x02                                          zero
#   0x03 + u16 BE (E + 0x8000) + digits           positive 0.d1d2...dn x 10^E (d1 != 0 != dn)
#   0x01 + u16 BE (0x7FFF - E) + (9-d)... + 0xFF  negative: everything complemented, and the
#                                                 terminator makes -0.12 sort after -0.123
# Digits are ASCII. A fixed-width exponent, then digits without trailing zeros, compare like the
# numbers; a prefix of digits is the smaller positive number, which the negative terminator
# (above every complemented digit) turns around.

_NUMBER = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,6}))?")
_NEGATIVE, _ZERO, _POSITIVE = 0x01, 0x02, 0x03
_EXP_BIAS = 0x8000
_COMPLEMENT = str.maketrans("0123456789", "9876543210")
MAX_DIGITS = 38
MIN_EXPONENT, MAX_EXPONENT = -130, 125  # of the leading digit: 1E-130 .. 9.99...E+125


def encode_key_value(av: Mapping[str, str]) -> bytes:
    """Encode a key attribute value ``{"S": str}``, ``{"N": str}`` or ``{"B": base64 str}``.

    Within a type, bytes order equals DynamoDB's order; different types never compare equal.
    Equal numbers written differently ("5", "5.0", "50e-1") encode the same. Raises ValueError
    for anything else, and for numbers outside DynamoDB's range or precision.
    """
    if len(av) != 1:
        raise ValueError(f"a key value has exactly one type: {av!r}")
    ((kind, value),) = av.items()
    if not isinstance(value, str):
        raise ValueError(f"key value must be a string: {av!r}")
    if kind == "S":
        return b"S" + value.encode("utf-8")
    if kind == "B":
        return b"B" + base64.b64decode(value, validate=True)
    if kind == "N":
        return b"N" + _encode_number(value)
    raise ValueError(f"unsupported key type {kind!r}")


def decode_key_value(b: bytes) -> dict[str, str]:
    """Inverse of ``encode_key_value``; numbers come back in plain notation ("-12.5")."""
    kind, body = b[:1], b[1:]
    if kind == b"S":
        return {"S": body.decode("utf-8")}
    if kind == b"B":
        return {"B": base64.b64encode(body).decode("ascii")}
    if kind == b"N":
        return {"N": _decode_number(body)}
    raise ValueError(f"not an encoded key value: {b!r}")


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The least byte string above every string starting with ``prefix``; None if none is.

    ``begins_with(sk, p)`` is ``lo=(p, True), hi=(prefix_upper_bound(p), False)``.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _encode_number(text: str) -> bytes:
    m = _NUMBER.fullmatch(text)
    if m is None or not (m[2] or m[3]):
        raise ValueError(f"not a number: {text!r}")
    whole, fraction = m[2], m[3] or ""
    digits = (whole + fraction).lstrip("0")
    exponent = int(m[4] or 0) - len(fraction)  # value = int(digits) * 10**exponent
    significant = digits.rstrip("0")
    if not significant:
        return bytes((_ZERO,))
    exponent += len(digits)  # now value = 0.significant * 10**exponent
    if len(significant) > MAX_DIGITS or not MIN_EXPONENT <= exponent - 1 <= MAX_EXPONENT:
        raise ValueError(f"number out of DynamoDB's range or precision: {text!r}")
    if m[1] == "-":
        exp = (_EXP_BIAS - 1 - exponent).to_bytes(2, "big")
        return bytes((_NEGATIVE,)) + exp + significant.translate(_COMPLEMENT).encode() + b"\xff"
    return bytes((_POSITIVE,)) + (exponent + _EXP_BIAS).to_bytes(2, "big") + significant.encode()


def _decode_number(body: bytes) -> str:
    if body == bytes((_ZERO,)):
        return "0"
    sign, exp, rest = body[:1], int.from_bytes(body[1:3], "big"), body[3:]
    if sign == bytes((_POSITIVE,)):
        exponent, digits = exp - _EXP_BIAS, rest.decode("ascii")
    elif sign == bytes((_NEGATIVE,)) and rest.endswith(b"\xff"):
        exponent, digits = _EXP_BIAS - 1 - exp, rest[:-1].decode("ascii").translate(_COMPLEMENT)
    else:
        raise ValueError(f"not an encoded number: {body!r}")
    if not digits.isdigit() or digits[0] == "0" or digits[-1] == "0":
        raise ValueError(f"not an encoded number: {body!r}")
    n = len(digits)
    if exponent >= n:
        plain = digits + "0" * (exponent - n)
    elif exponent <= 0:
        plain = "0." + "0" * -exponent + digits
    else:
        plain = digits[:exponent] + "." + digits[exponent:]
    return ("-" if sign == bytes((_NEGATIVE,)) else "") + plain
