"""Threads, ISA and version facts of the native core."""

from __future__ import annotations

import numbers
from typing import Any

from . import _core

__all__ = ["runtime_info", "set_num_threads", "get_num_threads"]


def runtime_info() -> dict[str, Any]:
    """Describe the native runtime.

    >>> info = runtime_info()
    >>> sorted(k for k in ("version", "onednn_version", "onednn_cpu_runtime", "tbb_version", "isa", "num_threads") if k in info)
    ['isa', 'num_threads', 'onednn_cpu_runtime', 'onednn_version', 'tbb_version', 'version']
    >>> info["onednn_cpu_runtime"]
    'TBB'
    """
    detected = _core.detected_isa()
    return {
        "version": _core.__version__,
        "onednn_version": _core.onednn_version(),
        "onednn_cpu_runtime": _core.onednn_cpu_runtime(),
        "tbb_version": _core.tbb_version(),
        # The best of avx2 / avx512 / avx512_bf16 that this CPU has ("scalar" when it has none of them).
        "isa": detected,
        "active_isa": _core.active_isa(),
        "num_threads": _core.num_threads(),
    }


def set_num_threads(n: int) -> None:
    """Set the threads used by homeforge's kernels *and* oneDNN: they share one oneTBB arena.

    >>> old = get_num_threads(); set_num_threads(1); get_num_threads()
    1
    >>> set_num_threads(old)
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):  # numpy integers are Integral
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if n > 4096:  # checked here too: past 2^31 the binding's int conversion would raise TypeError
        raise ValueError(f"set_num_threads: n={n} is not a plausible thread count")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Threads used by homeforge's kernels and oneDNN.

    >>> get_num_threads() >= 1
    True
    """
    return _core.num_threads()
