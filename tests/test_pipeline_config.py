"""Run configuration: TOML, overrides, type errors naming the key; the LR schedule against torch's."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeforge.config import RunConfig, lr_at

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli", reason="tomli (the TOML reader before Python 3.11) is not installed")


def test_toml_and_overrides(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('[model]\npreset = "10m"\ndtype = "bf16"\n[data]\npath = "d"\nseq_len = 64\n'
                 '[optim]\nlr = 1e-3\nbetas = [0.9, 0.99]\nmax_grad_norm = 1\n[train]\nsteps = 10\n')
    cfg = RunConfig.from_toml(p, ["train.steps=20", "optim.warmup_steps=5", "train.sample_prompt=def f",
                                  "optim.betas=[0.8, 0.9]", "model.n_layers=3"])
    assert cfg.model.preset == "10m" and cfg.model.dtype == "bf16" and cfg.model.n_layers == 3
    assert cfg.data.seq_len == 64 and cfg.train.steps == 20 and cfg.optim.warmup_steps == 5
    assert cfg.optim.betas == (0.8, 0.9) and cfg.optim.max_grad_norm == 1.0 and isinstance(cfg.optim.max_grad_norm, float)
    assert cfg.train.sample_prompt == "def f"
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert RunConfig.from_toml(again) == cfg


@given(st.text(), st.text(alphabet=st.characters(max_codepoint=0x9F)))
@settings(max_examples=200, deadline=None)
def test_to_toml_reads_back_any_string(prompt, out_dir):
    cfg = RunConfig.from_dict({"train": {"sample_prompt": prompt, "out_dir": out_dir}})
    again = RunConfig.from_dict(tomllib.loads(cfg.to_toml()))  # the standard library's TOML reader
    assert again.train.sample_prompt == prompt and again.train.out_dir == out_dir


@pytest.mark.parametrize("text, key", [
    ("[optim]\nlr = 'x'\n", "optim.lr"),
    ("[optim]\nlearning_rate = 1.0\n", "optim.learning_rate"),
    ("[train]\nsteps = 1.5\n", "train.steps"),
    ("[train]\nsteps = true\n", "train.steps"),
    ("[data]\nseq_len = -4\n", "data.seq_len"),
    ("[optim]\nbetas = [0.9]\n", "optim.betas"),
    ("[model]\ndtype = 'fp16'\n", "model.dtype"),
    ("[trainer]\nsteps = 1\n", "trainer"),
    ("[distributed]\nmode = 'ring'\n", "distributed.mode"),
    ("[train]\neval_batches = 0\n", "train.eval_batches"),
    ("[train]\npeak_gflops = -5\n", "train.peak_gflops"),
    ("[train]\nsample_tokens = 0\n", "train.sample_tokens"),
    ("[train]\nsample_temperature = -1\n", "train.sample_temperature"),
    ("[train]\nsample_top_k = 0\n", "train.sample_top_k"),
    ("[optim]\nlr = nan\n", "optim.lr"),
    ("[optim]\neps = inf\n", "optim.eps"),
    ("[optim]\nmax_grad_norm = nan\n", "optim.max_grad_norm"),
])
def test_bad_keys_and_types_name_the_key(tmp_path, text, key):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        RunConfig.from_toml(p)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        RunConfig.from_toml(tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("[optim\nlr=1")
    with pytest.raises(ValueError, match="invalid TOML"):
        RunConfig.from_toml(tmp_path / "broken.toml")
    with pytest.raises(ValueError, match="section.key"):
        RunConfig.from_dict({}, ["lr=1"])
    with pytest.raises(ValueError, match="optim.lr"):
        RunConfig.from_dict({}, ["optim.lr=abc"])


def test_schedule_matches_torch_schedulers():
    torch = pytest.importorskip("torch", reason="torch (the reference LR schedulers) is not installed")
    lr, warm, total, min_ratio = 0.01, 7, 50, 0.1
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    # torch's own warmup (LinearLR from 1/warm) then CosineAnnealingLR down to eta_min over total-1-warm steps
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - 1 - warm, eta_min=lr * min_ratio),
    ], milestones=[warm])
    for step in range(total):
        ours = lr_at(step, lr=lr, warmup_steps=warm, total_steps=total, min_lr=lr * min_ratio)
        assert math.isclose(ours, opt.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12), step
        opt.step()
        sched.step()
    assert lr_at(total + 5, lr=lr, warmup_steps=warm, total_steps=total, min_lr=0.001) == pytest.approx(0.001)
    assert lr_at(3, lr=lr, warmup_steps=0, total_steps=10, min_lr=0.0, schedule="constant") == lr


def test_distributed_section_defaults_are_distconfigs():
    """The run config's [distributed] section mirrors homeforge.distributed.DistConfig: same keys,
    same defaults (except mode "none", which picks ddp under mpirun, and bucket_mb None, which
    means DistConfig's measured default), so a TOML run and a Python API run train alike."""
    import dataclasses

    from homeforge.config import DistributedSection
    from homeforge.distributed import DistConfig

    dist_defaults = {f.name: f.default for f in dataclasses.fields(DistConfig)}
    for f in dataclasses.fields(DistributedSection):
        assert f.name in dist_defaults, f"[distributed] {f.name} is not a DistConfig key"
        if f.name not in ("mode", "bucket_mb"):
            assert f.default == dist_defaults[f.name], f"[distributed] {f.name} default differs from DistConfig's"
    cfg = DistConfig.from_any(RunConfig())
    for name, default in dist_defaults.items():
        if name not in ("mode", "threads", "lr", "betas", "eps", "weight_decay", "max_grad_norm", "nonfinite"):
            assert getattr(cfg, name) == default, name
    assert cfg.mode == "ddp"
