"""Every public module of homeforge carries `>>>` examples (tests/test_doctests.py runs them)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import homeforge

PUBLIC = sorted(m.name for m in pkgutil.walk_packages(homeforge.__path__, prefix="homeforge.")
                if not any(part.startswith("_") for part in m.name.split(".")[1:]))


@pytest.mark.parametrize("name", ["homeforge", *PUBLIC])
def test_public_module_has_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as e:  # an optional dependency (torch, mpi4py) is missing
        pytest.skip(f"{name} needs an optional dependency ({e})")
    tests = doctest.DocTestFinder(exclude_empty=True).find(module)
    n = sum(len(t.examples) for t in tests if t.name.startswith(name))
    assert n > 0, f"{name} has no >>> example in its docstrings"
