"""The examples in the checks modules' docstrings run (those not marked +SKIP)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "checks.history",
    "checks.result",
    "checks.convergence",
    "checks.synth",
    "checks.bank",
    "checks.wgl",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    failed, _ = doctest.testmod(importlib.import_module(name))
    assert failed == 0
