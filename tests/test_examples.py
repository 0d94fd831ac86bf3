"""examples/torch_drop_in.py runs at tiny sizes: both runs train, start from the same loss, print their speed."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="examples/torch_drop_in.py needs torch")
pytest.importorskip("homeforge.torch", reason="needs homeforge.torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_drop_in.py"


def test_torch_drop_in_example(capsys, restore_threads):
    if not EXAMPLE.is_file():
        pytest.skip("examples/ not found (not a source checkout)")
    spec = importlib.util.spec_from_file_location("torch_drop_in", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    try:
        res = mod.main(["--d-model", "64", "--heads", "4", "--kv-heads", "2", "--layers", "1", "--seq-len", "64",
                        "--batch-size", "2", "--steps", "4", "--warmup", "1", "--threads", "1", "--check"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "plain torch:" in out and "homeforge.torch:" in out and "speed:" in out
    a, b = res["plain torch"], res["homeforge.torch"]
    assert len(a["losses"]) == len(b["losses"]) == 4
    # same weights, same batches: the curves agree closely (only the attention/optimizer kernels differ)
    for x, y in zip(a["losses"], b["losses"]):
        assert math.isclose(x, y, rel_tol=1e-3), (a["losses"], b["losses"])
    assert a["losses"][-1] < a["losses"][0]
    assert a["s_per_step"] > 0 and b["s_per_step"] > 0
