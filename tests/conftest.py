"""Shared test fixtures.

The suite runs against the *installed* package (scripts/test.sh installs it into a fresh
virtual environment), or against a developer build with PYTHONPATH=python.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import homeforge


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def restore_threads():
    """Restore homeforge's thread count, ISA limit and backend after a test that changes them."""
    from homeforge import _core

    before = homeforge.get_num_threads()
    yield
    homeforge.set_num_threads(before)
    _core.set_isa_limit(os.environ.get("HOMEFORGE_ISA", "avx512_bf16"))
    _core.set_serial_backend(False)


@pytest.fixture
def torch_single_thread():
    """Run torch references on one thread: tiny references gain nothing from more, and torch's
    OpenMP spin-waiting against our oneTBB workers on a loaded 2-core machine made steps 100x slower."""
    torch = pytest.importorskip("torch", reason="torch is the reference implementation")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
