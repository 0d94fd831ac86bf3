"""homeforge.distributed under `mpirun -np 2`: DDP, ZeRO-1, DiLoCo, resume N->M, faults, validator.

Every multi-rank test launches tests/_dist_worker.py with Open MPI's mpirun and compares what the
ranks wrote against a plain single-process training loop (homeforge.Model + homeforge.optim, no
strategy) computed here with the doubled batch, and against torch for the outer Nesterov step.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _dist_common import batches_for, build_model  # noqa: E402

import homeforge  # noqa: E402
from homeforge.distributed import find_mpirun  # noqa: E402

pytestmark = pytest.mark.mpi

if not hasattr(homeforge, "Model") or importlib.util.find_spec("homeforge.optim") is None:
    pytest.skip("homeforge.Model / homeforge.optim are not in this build yet", allow_module_level=True)

WORKER = Path(__file__).parent / "_dist_worker.py"
MPIRUN = find_mpirun()

needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="mpirun not found (install homeforge[mpi] or a system MPI)")
try:
    import mpi4py  # noqa: F401
except ImportError:  # pragma: no cover
    needs_mpi = pytest.mark.skip(reason="mpi4py is not installed (pip install 'homeforge[mpi]')")

BASE = {"global_seqs": 8, "seq": 16, "micro": 2, "steps": 4, "seed": 0}


def mpi_env() -> dict:
    env = dict(os.environ)
    # The package under test: site-packages when installed (CI), python/ in a developer build.
    import homeforge

    package_parent = Path(homeforge.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(package_parent), env.get("PYTHONPATH", "")])
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    env["OMPI_MCA_btl"] = env.get("OMPI_MCA_btl", "self,vader,tcp")  # no InfiniBand probing here
    env.pop("OMPI_COMM_WORLD_RANK", None)
    return env


def launch(tmp_path: Path, spec: dict, np_: int = 2, timeout: float = 90, extra: list[str] | None = None,
           expect_ok: bool = True) -> subprocess.CompletedProcess:
    spec = {**BASE, **spec, "out": str(tmp_path)}
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(np_), *(extra or []),
           sys.executable, str(WORKER), json.dumps(spec)]
    p = subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=timeout)
    if expect_ok and p.returncode != 0:
        raise AssertionError(f"mpirun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def results(tmp_path: Path, n: int) -> list[dict]:
    return [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(n)]


def _groups(model, wd):
    ps, gs = model.named_parameters(), model.named_grads()
    dec = [k for k in ps if ps[k].ndim >= 2]
    nod = [k for k in ps if ps[k].ndim < 2]
    return [{"params": [ps[k] for k in dec], "grads": [gs[k] for k in dec], "weight_decay": wd},
            {"params": [ps[k] for k in nod], "grads": [gs[k] for k in nod], "weight_decay": 0.0}]


def reference(spec: dict, steps: int, *, sgd: bool = False) -> np.ndarray:
    """Single process, no strategy: each step one pass over the whole global batch (the doubled batch)."""
    spec = {**BASE, **spec}
    d = spec["dist"]
    model = build_model(spec)
    if sgd:
        opt = homeforge.optim.SGD(_groups(model, d.get("weight_decay", 0.0)), lr=d["lr"], momentum=0.0, nesterov=False)
    else:
        opt = homeforge.optim.AdamW(_groups(model, d.get("weight_decay", 0.1)), lr=d["lr"], betas=tuple(d.get("betas", (0.9, 0.95))),
                                    eps=d.get("eps", 1e-8))
    for step in range(steps):
        model.zero_grad()
        micro = batches_for({**spec, "micro": spec["micro"]}, step, 0, 1)  # same micro split, all ranks' data
        for x, y in micro:
            model.forward_backward(x, y)
        kw = {"grad_scale": 1.0 / len(micro)}
        if d.get("max_grad_norm", 1.0) and not sgd:  # DistConfig clips at 1.0 unless told None
            kw["max_grad_norm"] = d.get("max_grad_norm", 1.0)
        opt.step(d["lr"], **kw)
    return model.flat_params().copy()


DDP = {"mode": "ddp", "lr": 3e-3, "weight_decay": 0.1, "max_grad_norm": 1.0, "bucket_mb": 0.01, "checksum_every": 2,
       "timeout_s": 60}


@needs_mpi
def test_ddp_two_ranks_equal_single_process_doubled_batch(tmp_path):
    # micro=1 per rank, 4 sequences each == one process with 8 sequences; small buckets and a tiny
    # MPI chunk limit exercise the overlapped hook path and the >2**31 chunking code.
    spec = {"dist": DDP, "micro": 1, "max_chunk": 1000}
    launch(tmp_path, spec)
    r0, r1 = results(tmp_path, 2)
    np.testing.assert_array_equal(r0["params"], r1["params"])  # identical on all ranks
    ref = reference({**spec, "micro": 2}, BASE["steps"])  # 2 micro-batches of 4 == mean over 8
    np.testing.assert_allclose(r0["params"], ref, rtol=0, atol=2e-5)
    assert int(r0["threads"]) == max(1, (os.cpu_count() or 1) // 2)  # cores on host / ranks on host


@needs_mpi
def test_ddp_gradient_accumulation_and_zero1_equal_ddp(tmp_path):
    spec = {"dist": DDP, "micro": 2}
    launch(tmp_path / "ddp", spec) if (tmp_path / "ddp").mkdir() is None else None
    (tmp_path / "z").mkdir()
    launch(tmp_path / "z", {**spec, "dist": {**DDP, "mode": "zero1"}})
    d0, d1 = results(tmp_path / "ddp", 2)
    z0, z1 = results(tmp_path / "z", 2)
    np.testing.assert_array_equal(z0["params"], z1["params"])
    ref = reference({**spec, "micro": 4}, BASE["steps"])
    np.testing.assert_allclose(d0["params"], ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(z0["params"], d0["params"], rtol=0, atol=2e-6)
    # optimizer state per rank falls by the world size (shards differ by at most one element each)
    full, half = int(d0["opt_nbytes"]), int(z0["opt_nbytes"])
    assert full > 0 and abs(half - full / 2) <= 16, (full, half, int(z1["opt_nbytes"]))
    assert int(z0["opt_nbytes"]) + int(z1["opt_nbytes"]) == full


@needs_mpi
def test_diloco_degenerate_identity_is_data_parallel_sgd(tmp_path):
    # H=1, outer lr 1, momentum 0, inner plain SGD (linear in the gradient):
    #   theta - mean_r lr*(g_r + wd*theta) == theta - lr*(mean_r g_r + wd*theta)  ==  DP-SGD.
    d = {"mode": "diloco", "diloco_h": 1, "outer_lr": 1.0, "outer_momentum": 0.0, "inner_optimizer": "sgd",
         "lr": 0.5, "weight_decay": 0.01, "max_grad_norm": None, "checksum_every": 1, "timeout_s": 60}
    spec = {"dist": d, "micro": 1}
    launch(tmp_path, spec)
    r0, r1 = results(tmp_path, 2)
    np.testing.assert_array_equal(r0["params"], r1["params"])
    ref = reference({**spec, "micro": 2}, BASE["steps"], sgd=True)
    np.testing.assert_allclose(r0["params"], ref, rtol=0, atol=2e-5)


@needs_mpi
def test_diloco_adamw_bf16_wire_matches_f32_wire(tmp_path):
    """Two rounds of DiLoCo with AdamW inside; bf16 pseudo-gradients (summed by a user-defined MPI op)
    land within bf16 rounding of the f32 allreduce, and replicas agree after every sync."""
    d = {"mode": "diloco", "diloco_h": 2, "lr": 3e-3, "checksum_every": 2, "timeout_s": 60}
    out = {}
    for wire in ("f32", "bf16"):
        (tmp_path / wire).mkdir()
        launch(tmp_path / wire, {"dist": {**d, "wire_dtype": wire}, "micro": 1, "steps": 4, "max_chunk": 1000})
        r0, r1 = results(tmp_path / wire, 2)
        np.testing.assert_array_equal(r0["params"], r1["params"])  # after a sync all ranks hold the anchor
        out[wire] = r0["params"]
    init = build_model(BASE).flat_params()
    moved = np.abs(out["f32"] - init).max()
    assert moved > 1e-3
    assert np.abs(out["bf16"] - out["f32"]).max() <= 0.02 * moved


def test_diloco_outer_nesterov_matches_torch_sgd():
    """One rank (MPI singleton): the outer step on delta = anchor - local equals torch's Nesterov SGD."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("mpi4py")
    from homeforge import distributed as hd

    spec = {**BASE}
    model = build_model(spec)
    cfg = {"mode": "diloco", "diloco_h": 2, "outer_lr": 0.7, "outer_momentum": 0.9, "lr": 1e-2, "threads": 0}
    st = hd.make_strategy(cfg, model)
    anchor = torch.tensor(model.flat_params().copy(), dtype=torch.float64, requires_grad=True)
    outer = torch.optim.SGD([anchor], lr=0.7, momentum=0.9, nesterov=True)
    for step in range(6):
        st.train_step(batches_for(spec, step, 0, 1), 1e-2)
        if step % 2 == 1:  # a round ended: replay its outer step in torch from the local params
            local = torch.tensor(pre_sync_local(st), dtype=torch.float64)
            outer.zero_grad()
            anchor.grad = anchor.detach() - local  # the pseudo-gradient, pointing uphill
            outer.step()
            np.testing.assert_allclose(st.anchor, anchor.detach().numpy(), rtol=0, atol=1e-6)
            # the outer step moved the anchor toward the local params (the sign check)
    assert st.rounds == 3


def pre_sync_local(st) -> np.ndarray:
    # After a sync, delta holds the update applied; the local params before the sync are
    # anchor_before - delta_raw. The strategy keeps delta_raw in `last_delta` for introspection.
    return st.last_anchor - st.last_pseudo_grad


@needs_mpi
def test_resume_two_ranks_on_one_rank(tmp_path):
    """zero1 on 2 ranks for 3 steps, saved; resumed on 1 rank (2 micro-batches, same global batch)."""
    d = {**DDP, "mode": "zero1"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ck = str(tmp_path / "ck.pkl")
    launch(tmp_path / "a", {"dist": d, "micro": 1, "steps": 3, "save": ck})
    launch(tmp_path / "b", {"dist": {**d, "mode": "ddp"}, "micro": 2, "steps": 3, "resume": ck}, np_=1)
    (r,) = results(tmp_path / "b", 1)
    ref = reference({"dist": d, "micro": 2}, 6)
    np.testing.assert_allclose(r["params"], ref, rtol=0, atol=3e-5)


@needs_mpi
def test_killed_rank_ends_job_within_timeout(tmp_path):
    t0 = time.monotonic()
    p = launch(tmp_path, {"dist": {**DDP, "timeout_s": 20}, "steps": 50, "kill_rank": 1, "kill_step": 2},
               expect_ok=False, timeout=60)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 40
    text = (p.stdout + p.stderr).lower()
    assert "signal 9" in text or "killed" in text or "exited" in text, text[-2000:]


@needs_mpi
def test_hung_rank_aborts_with_clear_message(tmp_path):
    t0 = time.monotonic()
    p = launch(tmp_path, {"dist": {**DDP, "timeout_s": 3}, "steps": 50, "kill_rank": 1, "kill_step": 2, "hang": True},
               expect_ok=False, timeout=60)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 40
    assert "timed out after 3 s" in p.stderr and "dead or hung" in p.stderr, p.stderr[-2000:]


@needs_mpi
def test_rank_late_to_the_first_collective_aborts_within_timeout(tmp_path):
    # threads=None (the default) sizes the thread pool with a blocking collective; the timed
    # broadcast must come first, or a rank that never arrives hangs the job.
    t0 = time.monotonic()
    p = launch(tmp_path, {"dist": {**DDP, "timeout_s": 3}, "late_rank": 1, "late_s": 60}, expect_ok=False, timeout=80)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 40
    assert "initial parameter broadcast" in p.stderr, p.stderr[-2000:]


@needs_mpi
@pytest.mark.parametrize("mode", ["ddp", "zero1"])
def test_straggler_is_the_rank_that_computes_slowly(tmp_path, mode):
    # Step times include the wait for the slowest rank, so every rank looked as slow as it; the
    # report must name the rank whose own compute lags.
    launch(tmp_path, {"dist": {**DDP, "mode": mode}, "steps": 3, "slow_rank": 1, "slow_s": 0.3})
    r0, _ = results(tmp_path, 2)
    assert r0["slowest"].tolist() == [1, 1, 1]


@needs_mpi
def test_ranks_with_different_micro_batch_counts_are_refused(tmp_path):
    p = launch(tmp_path, {"dist": DDP, "steps": 2, "extra_micro_rank": 1}, expect_ok=False)
    assert p.returncode != 0
    assert "different numbers of micro-batches ([2, 4], by rank)" in p.stderr, p.stderr[-2000:]


def test_dist_config_refuses_settings_that_would_be_ignored_or_unbounded():
    from homeforge.distributed import DistConfig

    for bad, key in [({"mode": "ddp", "wire_dtype": "bf16"}, "wire_dtype"), ({"mode": "zero1", "inner_optimizer": "sgd"},
                     "inner_optimizer"), ({"outer_momentum": 1.0}, "outer_momentum"), ({"timeout_s": float("inf")}, "finite")]:
        with pytest.raises(ValueError, match=key):
            DistConfig.from_any(bad)


def test_too_many_buckets_are_refused_and_the_checksum_is_quiet():
    pytest.importorskip("mpi4py")
    from homeforge import distributed as hd

    model = build_model(BASE)
    with pytest.raises(ValueError, match="at most 4096 are allowed"):
        hd.make_strategy({"mode": "ddp", "bucket_mb": 1e-6, "threads": 0}, model)
    st = hd.make_strategy({"mode": "ddp", "threads": 0}, model)
    st.checksum()  # wraps modulo 2**64 on purpose: no overflow warning (warnings are errors here)


@needs_mpi
def test_validator_names_the_drifting_rank(tmp_path):
    p = launch(tmp_path, {"dist": {**DDP, "checksum_every": 1}, "steps": 4, "drift_rank": 1, "drift_step": 1},
               expect_ok=False)
    assert p.returncode != 0
    assert "rank(s) [1] differ from rank 0" in p.stderr, p.stderr[-2000:]


@needs_mpi
def test_nonfinite_gradient_skip_and_abort(tmp_path):
    (tmp_path / "s").mkdir()
    launch(tmp_path / "s", {"dist": {**DDP, "nonfinite": "skip"}, "nan_rank": 1, "nan_step": 1})
    s0, s1 = results(tmp_path / "s", 2)
    np.testing.assert_array_equal(s0["params"], s1["params"])
    assert np.all(np.isfinite(s0["params"]))
    assert math.isnan(float(s0["losses"][1])) and np.isfinite(s0["losses"][2])
    (tmp_path / "a").mkdir()
    p = launch(tmp_path / "a", {"dist": {**DDP, "nonfinite": "abort"}, "nan_rank": 1, "nan_step": 1}, expect_ok=False)
    assert p.returncode != 0
    assert "non-finite gradient" in p.stderr and "[1]" in p.stderr, p.stderr[-2000:]


@needs_mpi
def test_two_rank_zero1_checkpoint_resumes_in_local_strategy(tmp_path):
    """The saved state is LocalStrategy's format: a 2-rank ZeRO-1 run continues in one plain process."""
    import pickle

    strategy = pytest.importorskip("homeforge.strategy")
    d = {**DDP, "mode": "zero1"}
    ck = str(tmp_path / "ck.pkl")
    launch(tmp_path, {"dist": d, "micro": 1, "steps": 3, "save": ck})
    with open(ck, "rb") as f:
        blob = pickle.load(f)
    spec = {**BASE, "dist": d, "micro": 2}
    model = build_model(spec)
    model.flat_params()[:] = blob["params"]
    st = strategy.LocalStrategy(model, lr=d["lr"], weight_decay=d["weight_decay"], max_grad_norm=d["max_grad_norm"])
    st.load_state_dict(blob["strategy"])
    for step in range(3, 6):
        st.train_step(batches_for(spec, step, 0, 1), d["lr"])
    ref = reference(spec, 6)
    np.testing.assert_allclose(model.flat_params(), ref, rtol=0, atol=3e-5)


def test_dist_config_from_a_run_config_takes_every_distributed_and_optim_key():
    # make_strategy(run_config, model) and the trainer's strategy must see the same settings: every
    # [distributed] key set in the run config, the optimizer keys from [optim], defaults elsewhere.
    from homeforge.config import RunConfig
    from homeforge.distributed import DEFAULT_BUCKET_MB, DistConfig

    dist = {"mode": "diloco", "diloco_h": 7, "wire_dtype": "bf16", "checksum_every": 3, "overlap": False,
            "outer_lr": 0.5, "outer_momentum": 0.8, "outer_nesterov": False, "inner_optimizer": "sgd",
            "timeout_s": 12.0, "straggler_ratio": 2.0}
    rc = RunConfig.from_dict({"distributed": dist, "optim": {"lr": 0.02, "weight_decay": 0.05, "max_grad_norm": 0.5}})
    d = DistConfig.from_any(rc)
    assert {k: getattr(d, k) for k in dist} == dist
    assert (d.lr, d.weight_decay, d.max_grad_norm, d.bucket_mb) == (0.02, 0.05, 0.5, DEFAULT_BUCKET_MB)
    assert DistConfig.from_any(RunConfig.from_dict({"distributed": {"mode": "none"}})).mode == "ddp"
    with pytest.raises(ValueError, match="wire_dtype"):
        DistConfig.from_any(RunConfig.from_dict({"distributed": {"wire_dtype": "fp8"}}))


def test_dist_config_optimizer_defaults_are_local_strategys():
    """make_strategy({"mode": "ddp"}) on N ranks trains like LocalStrategy(model) on one process:
    the optimizer hyperparameters default alike."""
    import dataclasses
    import inspect

    from homeforge.distributed import DistConfig
    from homeforge.strategy import LocalStrategy

    local = {k: p.default for k, p in inspect.signature(LocalStrategy).parameters.items() if p.default is not p.empty}
    dist = {f.name: f.default for f in dataclasses.fields(DistConfig)}
    for key in ("lr", "betas", "eps", "weight_decay", "max_grad_norm", "nonfinite"):
        assert tuple(local[key]) == dist[key] if key == "betas" else local[key] == dist[key], key
