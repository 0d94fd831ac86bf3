"""Shared pieces of the benchmark scripts: timing, machine facts, limits, and JSON results.

Every script in benchmarks/ follows the same shape:

1. check correctness of ours against a peer (raise if wrong: a fast wrong answer is no result);
2. time ours and the peers side by side in the same process with :func:`timeit`;
3. print a table with ratios and the fraction of the machine's measured limit
   (:func:`machine_limits`: STREAM bandwidth and oneDNN GEMM peak, measured by bench_machine);
4. save rows with :func:`save_results` to benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    p.add_argument("--threads", type=int, default=None, help="threads for ours and torch (default: all cores)")
    p.add_argument("--out", type=Path, default=None, help="JSON results path (default: benchmarks/results/NAME.json)")
    return p


def timeit(fn: Callable[[], Any], *, min_time: float = 0.5, min_runs: int = 3, max_runs: int = 1000, warmup: int = 1) -> dict[str, float]:
    """Run fn repeatedly; return median/min/mean seconds per call (median is what we report)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_time and len(times) < max_runs):
        gc.disable()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        gc.enable()
    return {"median": statistics.median(times), "min": min(times), "mean": statistics.fmean(times), "runs": len(times)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    try:
        import homeforge

        info["homeforge"] = homeforge.runtime_info()
    except ImportError as e:  # the harness still reports peers
        info["homeforge"] = f"not importable: {e}"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        pass
    return info


def machine_limits(quick: bool = False) -> dict[str, float]:
    """The measured limits (GB/s, GFLOP/s) from benchmarks/results/machine.json, measuring them if absent."""
    path = RESULTS_DIR / "machine.json"
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("limits"):
            return data["limits"]
    from benchmarks import bench_machine

    return bench_machine.measure(quick=quick)


def set_threads(n: int | None) -> int:
    """Use n threads (default: all cores) in homeforge and torch alike; returns n."""
    import homeforge

    n = n or len(os.sched_getaffinity(0))
    homeforge.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return n


def print_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    rows = list(rows)
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns))
    sys.stdout.flush()


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0 or 0.01 <= abs(v) < 1e5:
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return f"{v:.3e}"
    return str(v)


def save_results(name: str, rows: list[dict[str, Any]], *, out: Path | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write {machine, rows, ...} atomically to benchmarks/results/<name>.json (or out)."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), "rows": rows}
    if extra:
        payload.update(extra)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)
    print(f"results -> {path}")
    return path
