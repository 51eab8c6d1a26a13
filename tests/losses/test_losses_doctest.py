"""The examples in the losses docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES_WITH_EXAMPLES = ["losses", "losses.uniformity"]


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_pass(module_name):
    module = importlib.import_module(module_name)

    result = doctest.testmod(module)

    assert result.attempted > 0
    assert result.failed == 0
