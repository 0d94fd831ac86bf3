"""The one write-or-``--check`` step of the generator scripts (gen_docs, gen_stubs, make_notebooks).

Imported from those scripts' ``main`` (run as ``python scripts/X.py``, this folder is on sys.path).
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(files: dict[Path, str], check: bool, script: str) -> int:
    """Write each path's text, or with check compare it and list what differs; returns the exit code."""
    stale = []
    for path, text in files.items():
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run {script}): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
