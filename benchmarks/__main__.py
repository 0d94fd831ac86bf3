"""Run every benchmark script in turn: python -m benchmarks [--quick] [--only NAME ...]."""

from __future__ import annotations

import argparse
import pkgutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="e.g. machine optim attention")
    args, rest = p.parse_known_args()
    here = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    names.remove("bench_machine")
    names.insert(0, "bench_machine")  # the limits first: the others report fractions of them
    failed = []
    for name in names:
        if args.only and name.removeprefix("bench_") not in args.only:
            continue
        print(f"\n===== {name} =====", flush=True)
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else []) + rest
        if subprocess.run(cmd, cwd=here.parent).returncode != 0:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
