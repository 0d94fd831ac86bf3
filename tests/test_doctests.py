"""Every `>>>` example in the public package runs and gives what it shows (against the installed package)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import homeforge

MODULES = sorted(m.name for m in pkgutil.walk_packages(homeforge.__path__, prefix="homeforge.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
