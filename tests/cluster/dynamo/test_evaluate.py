"""Evaluation: condition truth tables, update semantics and errors, projections."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from cluster.dynamo.evaluate import (
    apply_projection,
    apply_update,
    evaluate_condition,
    validate_update,
)
from cluster.dynamo.expressions import parse_condition, parse_projection, parse_update
from cluster.dynamo.values import Item, ValidationError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ITEM: Item = {
    "id": {"S": "u1"},
    "n": {"N": "5"},
    "s": {"S": "hello"},
    "b": {"B": b64(b"\x01\x02\x03")},
    "t": {"BOOL": True},
    "z": {"NULL": True},
    "ss": {"SS": ["red", "blue"]},
    "ns": {"NS": ["1", "2"]},
    "bs": {"BS": [b64(b"a")]},
    "l": {"L": [{"N": "1"}, {"S": "two"}, {"M": {"x": {"N": "3"}}}]},
    "m": {"M": {"a": {"M": {"b": {"S": "deep"}}}, "k": {"N": "7"}}},
}
VALUES: dict[str, Any] = {
    ":5": {"N": "5"},
    ":5p0": {"N": "5.0"},
    ":4": {"N": "4"},
    ":6": {"N": "6"},
    ":hello": {"S": "hello"},
    ":he": {"S": "he"},
    ":ell": {"S": "ell"},
    ":red": {"S": "red"},
    ":one": {"N": "1"},
    ":two": {"S": "two"},
    ":deep": {"S": "deep"},
    ":b12": {"B": b64(b"\x01\x02")},
    ":b23": {"B": b64(b"\x02\x03")},
    ":true": {"BOOL": True},
    ":ss": {"SS": ["blue", "red"]},
    ":tN": {"S": "N"},
    ":tSS": {"S": "SS"},
    ":tM": {"S": "M"},
    ":tNULL": {"S": "NULL"},
    ":tX": {"S": "X"},
}


def holds(text: str, item: Item | None = ITEM, names: dict[str, str] | None = None) -> bool:
    return evaluate_condition(parse_condition(text), item, names, VALUES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # comparisons on numbers, strings, binary
        ("n = :5", True),
        ("size(:hello) = :5", True),  # the size of a constant: 5 characters
        ("begins_with(:hello, s)", True),  # a constant subject: 'hello' starts with s
        ("contains(:ss, l[1])", False),
        ("contains(:ss, :red)", True),
        ("size(:ss) > :5", False),
        ("n = :5p0", True),
        ("n <> :5", False),
        ("n <> :4", True),
        ("n < :6", True),
        ("n <= :5", True),
        ("n > :5", False),
        ("n >= :5", True),
        ("s > :he", True),
        ("s < :he", False),
        ("b > :b12", True),
        # mismatched types compare false
        ("n < :hello", False),
        ("n = :hello", False),
        ("n <> :hello", True),
        ("t < :true", False),
        ("t = :true", True),
        # missing attributes
        ("absent = :5", False),
        ("absent < :5", False),
        ("absent >= :5", False),
        ("absent <> :5", True),
        ("absent BETWEEN :4 AND :6", False),
        ("absent IN (:5)", False),
        # paths
        ("m.a.b = :deep", True),
        ("l[1] = :two", True),
        ("l[2].x > :one", True),
        ("l[9] = :two", False),
        ("m[0] = :two", False),
        ("l.x = :two", False),
        ("n = n", True),
        ("n = m.k", False),
        # BETWEEN and IN
        ("n BETWEEN :4 AND :6", True),
        ("n BETWEEN :5 AND :5", True),
        ("n BETWEEN :6 AND :6", False),
        ("n BETWEEN :hello AND :6", False),
        ("n IN (:4, :5p0)", True),
        ("n IN (:4, :6)", False),
        ("ss IN (:ss)", True),
        # functions
        ("attribute_exists(n)", True),
        ("attribute_exists(absent)", False),
        ("attribute_exists(m.a.b)", True),
        ("attribute_exists(l[5])", False),
        ("attribute_not_exists(absent)", True),
        ("attribute_not_exists(m.a.nope)", True),
        ("attribute_not_exists(n)", False),
        ("attribute_type(n, :tN)", True),
        ("attribute_type(ss, :tSS)", True),
        ("attribute_type(m, :tM)", True),
        ("attribute_type(z, :tNULL)", True),
        ("attribute_type(n, :tSS)", False),
        ("attribute_type(absent, :tN)", False),
        ("begins_with(s, :he)", True),
        ("begins_with(s, :ell)", False),
        ("begins_with(b, :b12)", True),
        ("begins_with(b, :b23)", False),
        ("begins_with(n, :5)", False),
        ("contains(s, :ell)", True),
        ("contains(s, :red)", False),
        ("contains(b, :b23)", True),
        ("contains(ss, :red)", True),
        ("contains(ss, :he)", False),
        ("contains(ns, :one)", True),
        ("contains(l, :two)", True),
        ("contains(l, :one)", True),
        ("contains(l, :red)", False),
        ("contains(n, :5)", False),
        ("contains(absent, :red)", False),
        # size
        ("size(s) = :5", True),
        ("size(b) = :5", False),
        ("size(ss) < :5", True),
        ("size(l) > :one", True),
        ("size(m) = :one", False),
        ("size(n) = :one", False),
        ("size(absent) >= :one", False),
    ],
)
def test_condition_truth_table(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected_and", "expected_or"),
    [
        (True, True, True, True),
        (True, False, False, True),
        (False, True, False, True),
        (False, False, False, False),
    ],
)
def test_logical_truth_table(a: bool, b: bool, expected_and: bool, expected_or: bool) -> None:
    left = "n = :5" if a else "n = :4"
    right = "s = :hello" if b else "s = :he"
    assert holds(f"{left} AND {right}") is expected_and
    assert holds(f"{left} OR {right}") is expected_or
    assert holds(f"NOT {left}") is not a
    assert holds(f"NOT ({left} OR {right})") is not expected_or


def test_precedence_is_visible_in_results() -> None:
    # NOT binds tighter than AND, which binds tighter than OR.
    assert holds("n = :5 OR n = :4 AND n = :6")  # true OR (false AND false)
    assert not holds("(n = :5 OR n = :4) AND n = :6")
    assert holds("NOT n = :4 AND n = :5")
    assert not holds("NOT (n = :4 OR n = :5)")


def test_condition_on_missing_item_and_names() -> None:
    assert evaluate_condition(parse_condition("attribute_not_exists(id)"), None, None, None)
    assert not evaluate_condition(parse_condition("attribute_exists(id)"), None, None, None)
    assert holds("#x.#y.b = :deep", names={"#x": "m", "#y": "a"})
    assert holds("#dotted = :5", {"a.b": {"N": "5"}}, {"#dotted": "a.b"})


def test_condition_errors() -> None:
    with pytest.raises(ValidationError, match="attribute value: :nope"):
        holds("n = :nope")
    with pytest.raises(ValidationError, match="attribute name: #nope"):
        holds("#nope = :5")
    with pytest.raises(ValidationError, match="Invalid attribute type name found; type: X"):
        holds("attribute_type(n, :tX)")


# --- updates -------------------------------------------------------------------------------


def update(
    text: str,
    item: Item | None = ITEM,
    values: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
) -> Item:
    return apply_update(parse_update(text), item, names, {**VALUES, **(values or {})}, ["id"])


def test_set_replaces_and_creates_without_mutating_input() -> None:
    before = copy.deepcopy(ITEM)
    after = update("SET n = :6, fresh = :hello")
    assert after["n"] == {"N": "6"}
    assert after["fresh"] == {"S": "hello"}
    assert before == ITEM


def test_set_arithmetic() -> None:
    assert update("SET n = n + :one")["n"] == {"N": "6"}
    assert update("SET n = n - :6")["n"] == {"N": "-1"}
    assert update("SET c = :5 + :5p0")["c"] == {"N": "10"}
    assert update("SET c = m.k - n")["c"] == {"N": "2"}


def test_operands_are_read_from_the_item_before_the_update() -> None:
    after = update("SET n = s, s = n")
    assert (after["n"], after["s"]) == ({"S": "hello"}, {"N": "5"})
    after = update("SET c = n REMOVE n")
    assert after["c"] == {"N": "5"} and "n" not in after


def test_if_not_exists_and_list_append() -> None:
    assert update("SET n = if_not_exists(n, :one)")["n"] == {"N": "5"}
    assert update("SET c = if_not_exists(c, :one)")["c"] == {"N": "1"}
    assert update("SET c = if_not_exists(c, :one) + :one")["c"] == {"N": "2"}
    tail = {":more": {"L": [{"S": "x"}]}}
    assert update("SET l = list_append(l, :more)", values=tail)["l"]["L"][-1] == {"S": "x"}
    assert update("SET l = list_append(:more, l)", values=tail)["l"]["L"][0] == {"S": "x"}
    created = update(
        "SET c = list_append(if_not_exists(c, :empty), :more)", values={**tail, ":empty": {"L": []}}
    )
    assert created["c"] == {"L": [{"S": "x"}]}


def test_nested_paths_and_list_indexes() -> None:
    after = update("SET m.a.b = :one, m.a.fresh = :two, l[1] = :red, l[2].x = :5")
    assert after["m"]["M"]["a"]["M"] == {"b": {"N": "1"}, "fresh": {"S": "two"}}
    assert after["l"]["L"][1:] == [{"S": "red"}, {"M": {"x": {"N": "5"}}}]
    assert update("SET l[10] = :red")["l"]["L"][3] == {"S": "red"}  # past the end: appended
    assert update("SET #a.#b = :one", names={"#a": "m", "#b": "k"})["m"]["M"]["k"] == {"N": "1"}


def test_remove() -> None:
    after = update("REMOVE s, m.a, absent, l[0], l[2], l[7]")
    assert "s" not in after and "absent" not in after
    assert after["m"] == {"M": {"k": {"N": "7"}}}
    assert after["l"] == {"L": [{"S": "two"}]}  # indexes refer to the list before the update


def test_add_numbers_and_sets() -> None:
    assert update("ADD n :one")["n"] == {"N": "6"}
    assert update("ADD fresh :one")["fresh"] == {"N": "1"}  # ADD creates a missing number
    assert update("ADD ss :more", values={":more": {"SS": ["red", "green"]}})["ss"] == {
        "SS": ["red", "blue", "green"]
    }
    assert update("ADD ns :more", values={":more": {"NS": ["2.0", "3"]}})["ns"] == {
        "NS": ["1", "2", "3"]
    }
    assert update("ADD fresh :ss")["fresh"] == {"SS": ["blue", "red"]}


def test_delete_from_sets() -> None:
    assert update("DELETE ss :gone", values={":gone": {"SS": ["red", "pink"]}})["ss"] == {
        "SS": ["blue"]
    }
    assert "ss" not in update("DELETE ss :ss")  # an emptied set disappears
    assert "fresh" not in update("DELETE fresh :ss")
    assert update("DELETE ns :gone", values={":gone": {"NS": ["1.0"]}})["ns"] == {"NS": ["2"]}


def test_update_of_missing_item() -> None:
    after = apply_update(parse_update("SET a = :one ADD c :one"), None, None, VALUES, ["id"])
    assert after == {"a": {"N": "1"}, "c": {"N": "1"}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ADD s :one", "An operand in the update expression has an incorrect data type"),
        ("ADD ss :one", "An operand in the update expression has an incorrect data type"),
        ("ADD ns :ss", "An operand in the update expression has an incorrect data type"),
        ("DELETE ns :ss", "An operand in the update expression has an incorrect data type"),
        ("SET n = s + :one", "An operand in the update expression has an incorrect data type"),
        ("SET n = n - :hello", "An operand in the update expression has an incorrect data type"),
        # a constant of the wrong type is refused up front (validate_update), as DynamoDB does
        ("SET l = list_append(l, :one)", "operator or function: list_append, operand type: N"),
        ("SET l = list_append(s, l)", "incorrect data type"),
        (
            "SET n = absent + :one",
            "The provided expression refers to an attribute that does not exist in the item",
        ),
        ("SET n = absent", "refers to an attribute that does not exist in the item"),
        ("SET l = list_append(absent, l)", "refers to an attribute that does not exist"),
        ("SET nope.x = :one", "The document path provided in the update expression is invalid"),
        ("SET n.x = :one", "The document path provided in the update expression is invalid"),
        ("SET m[0] = :one", "The document path provided in the update expression is invalid"),
        ("REMOVE nope.x", "The document path provided in the update expression is invalid"),
        ("SET n = :big + :big", "Number overflow"),
    ],
)
def test_update_evaluation_errors(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        update(text, values={":big": {"N": "9E+125"}})
    assert message in e.value.message


@pytest.mark.parametrize(
    ("text", "names", "message"),
    [
        ("SET id = :one", None, "Cannot update attribute id. This attribute is part of the key"),
        (
            "REMOVE #k",
            {"#k": "id"},
            "Cannot update attribute id. This attribute is part of the key",
        ),
        ("ADD id :one", None, "Cannot update attribute id"),
        (
            "SET a = :one, a = :two",
            None,
            "Invalid UpdateExpression: Two document paths overlap with each other; must remove "
            "or rewrite one of these paths; path one: [a], path two: [a]",
        ),
        ("SET a.b = :one REMOVE a", None, "path one: [a, b], path two: [a]"),
        ("SET #x = :one REMOVE a", {"#x": "a"}, "Two document paths overlap"),
        ("SET a[1] = :one REMOVE a[1].c", None, "path one: [a, [1]], path two: [a, [1], c]"),
        ("SET a[0] = :one, a.b = :two", None, "Two document paths conflict with each other"),
        (
            "ADD a :hello",
            None,
            "Incorrect operand type for operator or function; operator: ADD, operand type: STRING, "
            "typeSet: ALLOWED_FOR_ADD_OPERAND",
        ),
        (
            "DELETE a :one",
            None,
            "operator: DELETE, operand type: NUMBER, typeSet: ALLOWED_FOR_DELETE_OPERAND",
        ),
        ("SET a = :nope", None, "attribute value used in expression is not defined"),
        ("SET a = if_not_exists(#nope, :one)", None, "attribute name: #nope"),
    ],
)
def test_update_validation_errors(text: str, names: dict[str, str] | None, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        validate_update(parse_update(text), names, VALUES, ["id"])
    assert message in e.value.message
    with pytest.raises(ValidationError) as e:
        update(text, names=names)
    assert message in e.value.message


def test_distinct_list_indexes_do_not_overlap() -> None:
    validate_update(parse_update("SET l[0] = :one, l[1] = :two"), None, VALUES)
    assert update("SET l[0] = :two, l[1] = :one")["l"]["L"][:2] == [{"S": "two"}, {"N": "1"}]


# --- projections ---------------------------------------------------------------------------


def project(text: str, names: dict[str, str] | None = None) -> Item:
    return apply_projection(parse_projection(text), ITEM, names)


def test_projection_of_top_level_attributes() -> None:
    assert project("n, s, absent") == {"n": {"N": "5"}, "s": {"S": "hello"}}
    assert project("#n", {"#n": "n"}) == {"n": {"N": "5"}}


def test_projection_of_nested_paths() -> None:
    assert project("m.a.b") == {"m": {"M": {"a": {"M": {"b": {"S": "deep"}}}}}}
    assert project("m.a.b, m.k") == {
        "m": {"M": {"a": {"M": {"b": {"S": "deep"}}}, "k": {"N": "7"}}}
    }
    assert project("l[2].x, l[0]") == {"l": {"L": [{"N": "1"}, {"M": {"x": {"N": "3"}}}]}}
    assert project("l[9], m.nope, n.x") == {}
    assert project("m[0], l.x") == {}


def test_projection_copies_values() -> None:
    projected = project("m")
    projected["m"]["M"]["k"] = {"N": "0"}
    assert ITEM["m"]["M"]["k"] == {"N": "7"}


def test_projection_overlap_errors() -> None:
    with pytest.raises(ValidationError, match="Invalid ProjectionExpression: Two document paths"):
        project("a, a.b")
    with pytest.raises(ValidationError, match="conflict"):
        project("a[0], a.b")
