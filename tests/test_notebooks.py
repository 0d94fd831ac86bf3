"""Every notebook in notebooks/ executes without an error (nbclient, this interpreter as the kernel).

The committed notebooks carry no outputs (scripts/make_notebooks.py writes them); each runs with
its small defaults in about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

try:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    import ipykernel  # noqa: F401  (the kernel nbclient starts)
    from jupyter_client.kernelspec import KernelSpecManager, NATIVE_KERNEL_NAME
except ImportError as e:  # pragma: no cover
    pytest.skip(f"executing notebooks needs nbclient, nbformat and ipykernel ({e}); pip install -e '.[test]'",
                allow_module_level=True)


def test_notebooks_exist_and_are_stripped():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01-quickstart.ipynb", "02-kernels.ipynb", "03-distributed.ipynb"], names
    for p in NOTEBOOKS:
        nb = json.loads(p.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{p.name}: outputs not stripped"


class _ThisInterpreter(KernelSpecManager):
    """Resolve the python3 kernel to the interpreter running the tests (not whatever is on PATH)."""

    def get_kernel_spec(self, kernel_name):
        spec = super().get_kernel_spec(NATIVE_KERNEL_NAME)
        spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        return spec


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    env_pp = os.pathsep.join(p for p in sys.path if p)  # the kernel imports the same homeforge as the tests
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            kernel_spec_manager=_ThisInterpreter())
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_pp
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{str(e)[-4000:]}")
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} produced no output"
