"""`mpirun -np 2 homeforge train --config run.toml` end to end, then resume on 1 process (N -> M).

The run uses the real CLI (``python -m homeforge``, which is what the ``homeforge`` script runs),
tokenizer, data pipeline, Trainer and checkpoints. A ZeRO-1 run on 2 ranks (batch_size 4 per rank)
saves at step 3; it is resumed by one process with batch_size 8 (the same global batch) and must
end where an uninterrupted 2-rank DDP run ends (ZeRO-1 == DDP, and the checkpoint is
world-size independent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import MPIRUN, mpi_env  # noqa: E402

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'homeforge[mpi]')")
    if MPIRUN is None:
        pytest.skip("mpirun not found (install homeforge[mpi] or a system MPI)")
    tokmod = pytest.importorskip("homeforge.tokenizer", reason="homeforge.tokenizer has not landed")
    data = pytest.importorskip("homeforge.data", reason="homeforge.data has not landed")
    pytest.importorskip("homeforge.trainer", reason="homeforge.trainer has not landed")
    root = tmp_path_factory.mktemp("cli")
    base = Path(sysconfig.get_paths()["stdlib"])
    files = [base / n for n in ("textwrap.py", "string.py", "heapq.py", "bisect.py", "shlex.py")]
    tok = tokmod.Tokenizer.train(files, 384, special_tokens=["<|endoftext|>"])
    tok.save(root / "tok.json")
    data.prepare(files, root / "data", root / "tok.json")
    return root


def _config(root: Path) -> Path:
    p = root / "run.toml"
    p.write_text(f"""
[model]
preset = "1m"
d_model = 64
n_layers = 2
ffn_hidden = 128

[data]
path = "{root / 'data'}"
seq_len = 32
batch_size = 4
grad_accum = 2

[optim]
lr = 3e-3
warmup_steps = 2

[train]
steps = 6
log_every = 1
eval_every = 0
checkpoint_every = 3
progress = false
tensorboard = false

[distributed]
mode = "ddp"
bucket_mb = 0.05
timeout_s = 60
""")
    return p


def _train(root: Path, np_: int | None, *sets: str, resume: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "homeforge", "train", "--config", str(_config(root))]
    for s in sets:
        cmd += ["--set", s]
    if resume:
        cmd.append("--resume")
    if np_:
        cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(np_), *cmd]
    p = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        if "loss" in d and "step" in d:
            out[int(d["step"])] = float(d["loss"])
    return out


def test_mpirun_train_then_resume_on_one_process(prepared):
    root = prepared
    full, split = root / "full", root / "split"
    _train(root, 2, f"train.out_dir='{full}'")
    _train(root, 2, f"train.out_dir='{split}'", "distributed.mode='zero1'")
    # restart from the zero1 run's step-3 checkpoint on one process (LocalStrategy), same global batch
    ck3 = split / "checkpoints" / "step_00000003"
    assert ck3.is_dir(), sorted(p.name for p in (split / "checkpoints").iterdir())
    resumed = root / "resumed"
    p = subprocess.run([sys.executable, "-m", "homeforge", "train", "--config", str(_config(root)),
                        "--set", f"train.out_dir='{resumed}'", "--set", "distributed.mode='none'",
                        "--set", "data.batch_size=8", "--resume", str(ck3)],
                       env={k: v for k, v in mpi_env().items() if not k.startswith(("OMPI_", "PMIX_"))} | {"OMPI_MCA_btl": "self"},
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    a, b = _losses(full), _losses(resumed)
    assert 6 in a and 6 in b and 4 in b, (a, b)
    for s in (4, 5, 6):
        assert abs(a[s] - b[s]) < 1e-4 * abs(a[s]), (s, a[s], b[s])
    assert a[6] < a[1]  # it trained


def test_an_error_on_one_rank_ends_the_cli_job_promptly(prepared):
    """The CLI prints a rank's error and returns 2; under mpirun it must also end the job, not leave
    the other ranks waiting until timeout_s (60 s here) and then blame a dead peer."""
    import time

    out = prepared / "ckfail"
    out.mkdir()
    (out / "checkpoints").write_text("a file where the checkpoints directory goes")  # rank 0 cannot save
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "-m", "homeforge", "train",
           "--config", str(_config(prepared)), "--set", f"train.out_dir='{out}'"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 40, p.stderr[-2000:]
    assert "homeforge: error:" in p.stderr and "aborting the MPI job" in p.stderr, p.stderr[-2000:]
