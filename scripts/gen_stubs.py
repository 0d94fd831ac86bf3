"""Regenerate python/homeforge/_core.pyi, the type stubs of the C++ extension, with pybind11-stubgen.

    PYTHONPATH=python python scripts/gen_stubs.py           # rewrite the stub (after a rebuild)
    PYTHONPATH=python python scripts/gen_stubs.py --check   # exit 1 if it is out of date

Needs ``pip install pybind11-stubgen`` (a development tool only: the .pyi is committed and ships in
the wheel next to ``py.typed``). tests/test_stubs.py checks that every name the built extension
exports (and every method of its classes) has a stub.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "python" / "homeforge" / "_core.pyi"


def generate() -> str:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pybind11_stubgen", "homeforge._core", "-o", d,
                        "--numpy-array-use-type-var"], check=True, capture_output=True, text=True)
        return (Path(d) / "homeforge" / "_core.pyi").read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    from _write_or_check import write_or_check

    return write_or_check({STUB: generate()}, args.check, "scripts/gen_stubs.py")


if __name__ == "__main__":
    sys.exit(main())
