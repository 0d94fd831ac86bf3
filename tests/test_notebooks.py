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
except ImportError as e:  # pragma: no cover
    pytest.skip(f"executing notebooks needs nbclient, nbformat and ipykernel ({e}); pip install -e '.[test]'",
                allow_module_level=True)


# What each notebook imports beyond homeforge's core (03 also says so itself when MPI is missing).
NEEDS = {
    "01-quickstart": ("matplotlib", "homeforge.trainer", "homeforge.export"),
    "02-kernels": ("matplotlib", "torch", "homeforge.torch"),
    "03-distributed": ("matplotlib", "homeforge.trainer"),
}


def test_notebooks_exist_and_are_stripped():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01-quickstart.ipynb", "02-kernels.ipynb", "03-distributed.ipynb"], names
    for p in NOTEBOOKS:
        nb = json.loads(p.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{p.name}: outputs not stripped"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernelspec that runs the interpreter running the tests (not whatever python3 is on PATH)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "homeforge-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "homeforge tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # the kernel imports the same homeforge as the tests
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return "homeforge-test"


@pytest.mark.slow
# jupyter_client/zmq leave sockets to the garbage collector at kernel shutdown: not our code
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, kernel_name):
    for module in NEEDS.get(path.stem, ()):
        pytest.importorskip(module, reason=f"{path.name} needs {module}")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{str(e)[-4000:]}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{path.name}: a cell did not run"
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} produced no output"
    out_dir = os.environ.get("HOMEFORGE_NOTEBOOK_OUT")  # keep the executed copy for a look
    if out_dir:
        nbformat.write(nb, str(Path(out_dir) / path.name))
