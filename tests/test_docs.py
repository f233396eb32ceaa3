"""Runs the examples in the core modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = ["beta_optax._physics", "beta_optax._momentum", "beta_optax._hybrid", "beta_optax._adam"]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
