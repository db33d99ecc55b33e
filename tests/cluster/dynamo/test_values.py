"""Attribute values: validation messages, numbers, comparison, equality and item size."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from cluster.dynamo.values import (
    MAX_ITEM_BYTES,
    TypeMismatchError,
    ValidationError,
    add_numbers,
    check_item_size,
    compare_values,
    format_number,
    item_size,
    normalize_number,
    parse_number,
    subtract_numbers,
    validate_item,
    validate_key_value,
    validate_value,
    value_size,
    values_equal,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "av",
    [
        {"S": ""},
        {"S": "x"},
        {"N": "-1.5e3"},
        {"N": "0"},
        {"N": "9.9999999999999999999999999999999999999E+125"},
        {"N": "1E-130"},
        {"B": b64(b"\x00\xff")},
        {"B": ""},
        {"BOOL": False},
        {"NULL": True},
        {"L": []},
        {"L": [{"S": "a"}, {"L": [{"N": "1"}]}]},
        {"M": {"a": {"M": {"b": {"SS": ["x"]}}}}},
        {"SS": ["a", "b"]},
        {"NS": ["1", "2.5"]},
        {"BS": [b64(b"a"), b64(b"b")]},
    ],
)
def test_valid_values(av: dict[str, Any]) -> None:
    validate_value(av, "attr")


@pytest.mark.parametrize(
    ("av", "message"),
    [
        ({}, "Supplied AttributeValue is empty"),
        ({"S": "a", "N": "1"}, "more than one datatypes set"),
        ({"X": "a"}, "unknown attribute value type"),
        ({"S": 1}, "TruncatingBigNumber can not be converted to an String"),
        ({"NULL": False}, "Null attribute value types must have the value of true"),
        ({"BOOL": "true"}, "'true' can not be converted to an Boolean"),
        ({"L": {}}, "Expected list or null"),
        ({"N": "abc"}, "The parameter cannot be converted to a numeric value: abc"),
        ({"N": "1e126"}, "Number overflow"),
        ({"N": "-1e126"}, "Number overflow"),
        ({"N": "1e-131"}, "Number underflow"),
        ({"N": "1" * 39}, "more than 38 significant digits"),
        ({"B": "not base64!"}, "Invalid base64"),
        ({"SS": []}, "One or more parameter values were invalid: An string set  may not be empty"),
        ({"NS": []}, "An number set  may not be empty"),
        ({"BS": []}, "One or more parameter values were invalid: Binary sets should not be empty"),
        ({"SS": ["a", "a"]}, "Input collection [a, a] contains duplicates."),
        ({"NS": ["1", "1.0"]}, "Input collection contains duplicates"),
        ({"BS": ["Yg==", "Yg=="]}, "Input collection [Yg==, Yg==]of type BS contains duplicates."),
        ({"L": [{"N": "x"}]}, "cannot be converted to a numeric value"),
        ({"M": {"a": {"SS": []}}}, "An string set  may not be empty"),
    ],
)
def test_invalid_values(av: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        validate_value(av, "attr")
    assert message in e.value.message


def test_validate_item_and_key_values() -> None:
    validate_item({"id": {"S": "a"}, "empty": {"S": ""}})
    with pytest.raises(ValidationError, match="attribute name must not be empty"):
        validate_item({"": {"S": "a"}})
    validate_key_value({"N": "5"}, "pk", "N")
    with pytest.raises(ValidationError, match=r"cannot contain an empty string value\. Key: pk"):
        validate_key_value({"S": ""}, "pk")
    with pytest.raises(ValidationError, match="Type mismatch for key pk expected: S actual: N"):
        validate_key_value({"N": "1"}, "pk", "S")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("1.50", "1.5"), ("1e2", "100"), ("-0", "0"), ("0.000", "0"), ("1.5E-3", "0.0015")],
)
def test_normalize_number(text: str, canonical: str) -> None:
    assert normalize_number(text) == canonical


def test_number_arithmetic_at_38_digits() -> None:
    assert add_numbers("1.50", "2") == "3.5"
    assert subtract_numbers("1", "3.25") == "-2.25"
    assert add_numbers("0.1", "0.2") == "0.3"
    big = "9" * 38
    assert add_numbers(big, "0") == big
    assert subtract_numbers(big, "1") == "9" * 37 + "8"
    with pytest.raises(ValidationError, match="more than 38 significant digits"):
        add_numbers(big, "0.5")
    with pytest.raises(ValidationError, match="Number overflow"):
        add_numbers("9.9E+125", "9.9E+125")


def test_compare_values() -> None:
    assert compare_values({"N": "10"}, {"N": "9"}) > 0
    assert compare_values({"N": "1.0"}, {"N": "1"}) == 0
    assert compare_values({"S": "a"}, {"S": "b"}) < 0
    assert compare_values({"S": "é"}, {"S": "z"}) > 0  # UTF-8 byte order
    assert compare_values({"B": b64(b"\x01")}, {"B": b64(b"\x00\xff")}) > 0
    with pytest.raises(TypeMismatchError):
        compare_values({"N": "1"}, {"S": "1"})
    with pytest.raises(TypeMismatchError):
        compare_values({"BOOL": True}, {"BOOL": True})


def test_values_equal() -> None:
    assert values_equal({"N": "1"}, {"N": "1.00"})
    assert values_equal({"SS": ["a", "b"]}, {"SS": ["b", "a"]})
    assert values_equal({"NS": ["1", "2"]}, {"NS": ["2.0", "1"]})
    assert not values_equal({"SS": ["a"]}, {"SS": ["a", "b"]})
    assert values_equal({"L": [{"N": "1"}]}, {"L": [{"N": "1.0"}]})
    assert not values_equal({"L": [{"N": "1"}, {"N": "2"}]}, {"L": [{"N": "2"}, {"N": "1"}]})
    assert values_equal({"M": {"a": {"S": "x"}}}, {"M": {"a": {"S": "x"}}})
    assert not values_equal({"M": {"a": {"S": "x"}}}, {"M": {"b": {"S": "x"}}})
    assert not values_equal({"S": "1"}, {"N": "1"})


def test_sizes() -> None:
    assert value_size({"S": "héllo"}) == 6
    assert value_size({"N": "12345"}) == 4  # 5 digits: 3 bytes + 1
    assert value_size({"N": "1000"}) == 2  # trailing zeros are not significant
    assert value_size({"B": b64(b"abc")}) == 3
    assert value_size({"BOOL": True}) == value_size({"NULL": True}) == 1
    assert value_size({"SS": ["ab", "c"]}) == 3
    assert value_size({"L": [{"S": "ab"}]}) == 3 + 2 + 1
    assert value_size({"M": {"k": {"S": "ab"}}}) == 3 + 1 + 2 + 1
    assert item_size({"id": {"S": "abc"}, "n": {"N": "1"}}) == 2 + 3 + 1 + 2


@pytest.mark.parametrize(
    "text",
    [
        *("0", "-0", "0.000", "007", "1.50", "100.00", "0.0012", "-12.5", "5"),
        "9" * 38,  # 38 significant digits: the most a number may have
        "1" * 38 + ".5",  # 39: not a valid number, whichever way it is measured
        "0." + "0" * 37 + "1",
        "1" * 39,  # more than 38 digits before the point: the Decimal path decides
        *("1e5", "+5", ".5", "1.", "1E-130", "-1.5e3"),  # not plain: the Decimal path
    ],
)
def test_number_size_of_plain_numbers_agrees_with_decimal(text: str) -> None:
    """Numbers in plain notation are measured from their text (no Decimal); what that gives,
    or raises, is what measuring the Decimal gives."""

    def by_decimal() -> int:
        digits = "".join(map(str, parse_number(text).as_tuple().digits)).strip("0")
        return (max(len(digits), 1) + 1) // 2 + 1

    try:
        expected: int | type[Exception] = by_decimal()
    except ValidationError:
        expected = ValidationError
    if expected is ValidationError:
        with pytest.raises(ValidationError):
            value_size({"N": text})
    else:
        assert value_size({"N": text}) == expected


def test_item_size_limit() -> None:
    fits = {"id": {"S": "x" * (MAX_ITEM_BYTES - 2)}}
    assert item_size(fits) == MAX_ITEM_BYTES
    check_item_size(fits)
    with pytest.raises(ValidationError, match="Item size has exceeded the maximum allowed size"):
        check_item_size({"id": {"S": "x" * (MAX_ITEM_BYTES - 1)}})


def _numbers(count: int, seed: int) -> list[str]:
    """Number texts of every shape: signs, leading and trailing zeros, up to 41 digits on each
    side of the point (so past the 38-digit limits), with and without a fraction."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        whole = "".join(rng.choice("0000123456789") for _ in range(rng.randint(1, 41)))
        fraction = "".join(rng.choice("0000123456789") for _ in range(rng.randint(0, 41)))
        point = "." + fraction if rng.random() < 0.6 else ""
        texts.append(rng.choice(("", "-", "+")) + whole + point)
    return texts


@pytest.mark.parametrize(
    "text",
    [
        *("0", "-0", "0.000", "-00.10", "007", "1.50", "100.00", "1.", ".5", "+5", "1e5", ""),
        *("9" * 38, "1" * 38 + ".0", "1" * 38 + ".5", "1" * 39, "0." + "0" * 37 + "1"),
        *("1." + "0" * 38, "1." + "0" * 39, "10" * 19, "1" * 20 + "." + "2" * 19),
    ],
)
def test_plain_numbers_validate_and_normalize_as_their_decimal_does(text: str) -> None:
    """Numbers in plain notation are validated and normalized from their text (no Decimal):
    what that gives, or raises, is what the Decimal path gives."""
    check_number_as_decimal(text)


def test_random_numbers_validate_and_normalize_as_their_decimal_does() -> None:
    for text in _numbers(5000, seed=15):
        check_number_as_decimal(text)


def check_number_as_decimal(text: str) -> None:
    try:
        expected: str | type[Exception] = format_number(parse_number(text))
    except ValidationError:
        expected = ValidationError
    if expected is ValidationError:
        with pytest.raises(ValidationError):
            validate_value({"N": text})
        with pytest.raises(ValidationError):
            normalize_number(text)
    else:
        validate_value({"N": text})
        assert normalize_number(text) == expected
