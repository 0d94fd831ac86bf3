"""The README's first Python example runs as written (in a scratch directory)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block() -> str:
    m = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert m, "README.md has no ```python example"
    return m.group(1)


def test_readme_example_is_five_lines():
    code = [line for line in _first_python_block().splitlines() if line.strip()]
    assert len(code) <= 5, f"the README example has {len(code)} lines"


@pytest.mark.slow
def test_readme_example_runs(tmp_path, restore_threads):
    pytest.importorskip("homeforge.trainer", reason="needs homeforge.trainer (the training pipeline)")
    code = _first_python_block()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, str(README) + ":example", "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(cwd)
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert ckpts and ckpts[-1].name.endswith("30"), f"no final checkpoint in {tmp_path / 'run'}"
    assert (tmp_path / "run" / "metrics.jsonl").stat().st_size > 0
    assert (tmp_path / "data" / "manifest.json").is_file()
