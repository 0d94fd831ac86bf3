"""The trainer end to end: a loss curve that matches the same training in PyTorch, bit-exact resume,
and clear errors for bad runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import homeforge
from homeforge.config import RunConfig, lr_at
from homeforge.data import PrepareConfig, TokenLoader, prepare
from homeforge.trainer import Trainer

from _pipeline_util import EOT, stdlib_files

try:
    from homeforge.model import Model  # noqa: F401
    from homeforge.optim import AdamW  # noqa: F401
    from homeforge.tokenizer import Tokenizer
except ImportError as e:  # pragma: no cover - only while the pieces land
    pytest.skip(f"the trainer needs homeforge.model, homeforge.optim and homeforge.tokenizer ({e})",
                allow_module_level=True)

TINY = {"preset": None, "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 128}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    files = stdlib_files()
    tok = Tokenizer.train(files, 512, special_tokens=(EOT,))
    prepare(files, root / "data", tok, config=PrepareConfig(val_fraction=0.05))
    return root / "data", tok


def _cfg(data_dir, out, **over):
    d = {"model": dict(TINY), "data": {"path": str(data_dir), "seq_len": 32, "batch_size": 4, "grad_accum": 2, "seed": 3},
         "optim": {"lr": 3e-3, "warmup_steps": 10, "weight_decay": 0.1, "max_grad_norm": 1.0, "betas": [0.9, 0.95]},
         "train": {"steps": 120, "out_dir": str(out), "log_every": 1, "eval_every": 0, "progress": False,
                   "tensorboard": False, "peak_gflops": 1000.0}}
    for key, v in over.items():
        sec, name = key.split("__")
        d.setdefault(sec, {})[name] = v
    return RunConfig.from_dict(d)


def _torch_losses(cfg: RunConfig, init: dict[str, np.ndarray], model_cfg, steps: int) -> list[float]:
    """The same training in plain PyTorch: transformers' LlamaForCausalLM + torch.optim.AdamW."""
    torch = pytest.importorskip("torch", reason="torch is the reference of this test")
    transformers = pytest.importorskip("transformers", reason="transformers is the reference of this test")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and immune to busy sibling cores
    try:
        return _torch_run(torch, transformers, cfg, init, model_cfg, steps)
    finally:
        torch.set_num_threads(threads)


def _torch_run(torch, transformers, cfg, init, model_cfg, steps):
    mc = model_cfg
    hc = transformers.LlamaConfig(vocab_size=mc.vocab_size, hidden_size=mc.d_model, intermediate_size=mc.ffn_hidden,
                                  num_hidden_layers=mc.n_layers, num_attention_heads=mc.n_heads,
                                  num_key_value_heads=mc.n_kv_heads, max_position_embeddings=mc.max_seq_len,
                                  rope_theta=mc.rope_theta, rms_norm_eps=mc.norm_eps, tie_word_embeddings=True,
                                  attention_bias=False, mlp_bias=False)
    hc._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(hc).float()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    o = cfg.optim
    decay = [p for _, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=o.lr, betas=o.betas, eps=o.eps)
    n = cfg.data.grad_accum
    loader = TokenLoader(cfg.data.path, cfg.data.seq_len, cfg.data.batch_size, seed=cfg.data.seed, grad_accum=n)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr=o.lr, warmup_steps=o.warmup_steps, total_steps=cfg.train.steps,
                            min_lr=o.lr * o.min_lr_ratio)
        opt.zero_grad()
        total = 0.0
        for x, y in loader.next_step():
            logits = model(input_ids=torch.from_numpy(x).long()).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).long().reshape(-1))
            (loss / n).backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.max_grad_norm)
        opt.step()
        losses.append(total / n)
    return losses


def test_loss_curve_matches_pytorch(prepared, tmp_path):
    data_dir, tok = prepared
    cfg = _cfg(data_dir, tmp_path / "run")
    tr = Trainer(cfg, tokenizer=tok, log=lambda s: None)
    init = {k: v.copy() for k, v in tr.model.named_parameters().items()}
    summary = tr.fit()
    ours = [r["loss"] for r in tr.history if "loss" in r]
    assert len(ours) == cfg.train.steps == summary["step"]
    ref = _torch_losses(cfg, init, tr.model_config, cfg.train.steps)
    diff = np.abs(np.array(ours) - np.array(ref))
    # fp32 on both sides: the curves agree to ~1e-6 here; allow for reduction-order drift over 120 steps
    assert diff[:10].max() < 1e-4, diff[:10]
    assert diff.max() < 1e-2 and diff.mean() < 1e-3, (diff.max(), diff.mean())
    assert np.mean(ours[-10:]) < ours[0] - 1.0  # it learned something
    assert np.mean(ref[-10:]) < ref[0] - 1.0


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_resume_is_bit_exact(prepared, tmp_path, dtype):
    data_dir, tok = prepared
    N = 6
    over = {"train__steps": 2 * N, "model__dtype": dtype, "train__eval_every": 4, "train__sample_every": 5,
            "train__sample_tokens": 4}
    a = Trainer(_cfg(data_dir, tmp_path / "a", **over), tokenizer=tok, log=lambda s: None)
    a.fit()
    b = Trainer(_cfg(data_dir, tmp_path / "b", **over), tokenizer=tok, log=lambda s: None)
    b.fit(until=N)
    assert b.step == N
    c = Trainer(_cfg(data_dir, tmp_path / "b", **over), tokenizer=tok, log=lambda s: None)
    c.fit(resume=True)
    assert c.step == 2 * N
    pa, pc = a.model.named_parameters(), c.model.named_parameters()
    assert set(pa) == set(pc)
    for k in pa:
        assert pa[k].tobytes() == pc[k].tobytes(), k
    la = [r["loss"] for r in a.history if "loss" in r][N:]
    lc = [r["loss"] for r in c.history if "loss" in r]
    assert la == lc
    sa = [r["sample"] for r in a.history if "sample" in r][-1]
    sc = [r["sample"] for r in c.history if "sample" in r][-1]
    assert sa == sc
    # the optimizer state survived too: one more identical step from both
    ca = a.strategy.state_dict()["optimizer"]
    cc = c.strategy.state_dict()["optimizer"]
    flat_a = [x for x in _leaves(ca) if isinstance(x, np.ndarray)]
    flat_c = [x for x in _leaves(cc) if isinstance(x, np.ndarray)]
    assert len(flat_a) == len(flat_c) > 0 and all(x.tobytes() == y.tobytes() for x, y in zip(flat_a, flat_c))


def _record_steps(tr):
    """Make ``tr`` note the set of (tokens) rows each optimizer step trains on."""
    seen, inner = [], tr.strategy.train_step

    def step(batches, lr):
        seen.append(sorted(row.tobytes() for x, _ in batches for row in x))
        return inner(batches, lr)

    tr.strategy.train_step = step
    return seen


@pytest.mark.parametrize("split", [(8, 1), (2, 4)])
def test_resume_with_another_split_of_the_global_batch(prepared, tmp_path, split):
    """N steps with batch_size 4 x grad_accum 2 == N/2 steps, then resume with another split of the
    same global batch of 8: the same windows per step and the same parameters (up to the order of the
    micro-batch sums)."""
    data_dir, tok = prepared
    N = 4
    over = {"train__steps": N}
    a = Trainer(_cfg(data_dir, tmp_path / "a", **over), tokenizer=tok, log=lambda s: None)
    seen_a = _record_steps(a)
    a.fit()
    b = Trainer(_cfg(data_dir, tmp_path / "b", **over), tokenizer=tok, log=lambda s: None)
    seen_b = _record_steps(b)
    b.fit(until=N // 2)
    bs, ga = split
    c = Trainer(_cfg(data_dir, tmp_path / "b", data__batch_size=bs, data__grad_accum=ga, **over), tokenizer=tok,
                log=lambda s: None)
    seen_c = _record_steps(c)
    c.fit(resume=True)
    assert c.step == N
    assert seen_b + seen_c == seen_a
    pa, pc = a.model.named_parameters(), c.model.named_parameters()
    for k in pa:
        np.testing.assert_allclose(pc[k], pa[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # another global batch (grad_accum alone changed) is refused, naming the three factors
    d = Trainer(_cfg(data_dir, tmp_path / "b", data__grad_accum=3, **over), tokenizer=tok, log=lambda s: None)
    with pytest.raises(ValueError, match="step_windows=8 windows.*grad_accum 3"):
        d.fit(resume=str(tmp_path / "b" / "checkpoints" / f"step_{N // 2:08d}"))


def test_resume_refuses_changed_data_order_and_optimizer_settings(prepared, tmp_path):
    data_dir, tok = prepared
    over = {"train__steps": 4}
    Trainer(_cfg(data_dir, tmp_path / "r", **over), tokenizer=tok, log=lambda s: None).fit(until=2)
    changed = {"data__seed": 7, "data__shuffle": False, "optim__betas": [0.8, 0.95], "optim__eps": 1e-6,
               "optim__weight_decay": 0.0}
    for key, value in changed.items():
        tr = Trainer(_cfg(data_dir, tmp_path / "r", **over, **{key: value}), tokenizer=tok, log=lambda s: None)
        saved = _cfg(data_dir, tmp_path / "r", **over).to_dict()[key.split("__")[0]][key.split("__")[1]]
        with pytest.raises(ValueError, match=rf"{key.replace('__', '.')}: {saved!r} saved, {value!r} now".replace("[", r"\[")):
            tr.fit(resume=True)
    # lr and max_grad_norm may change, and do take effect
    tr = Trainer(_cfg(data_dir, tmp_path / "r", optim__lr=1e-3, optim__max_grad_norm=0.5, **over), tokenizer=tok,
                 log=lambda s: None)
    tr.fit(resume=True)
    assert tr.step == 4
    assert [r["lr"] for r in tr.history if "lr" in r] == [lr_at(s, lr=1e-3, warmup_steps=10, total_steps=4, min_lr=1e-4)
                                                          for s in (2, 3)]


def test_samples_of_a_padded_vocabulary_use_only_the_tokenizer_ids(prepared, tmp_path):
    data_dir, tok = prepared
    n = tok.n_vocab
    cfg = _cfg(data_dir, tmp_path / "pad", model__vocab_size=2 * n, train__steps=2, train__sample_every=1,
               train__sample_temperature=1.5, train__sample_top_k=2 * n, train__sample_tokens=24)
    tr = Trainer(cfg, tokenizer=tok, log=lambda s: None)
    # make the padding ids the most likely ones: large random embedding rows (tied LM head)
    emb = tr.model.named_parameters()["model.embed_tokens.weight"]
    emb[n:] = np.random.default_rng(0).standard_normal(emb[n:].shape).astype(emb.dtype) * 50
    tr.fit()  # samples at steps 1 and 2
    assert len([r for r in tr.history if "sample" in r]) == 2
    # greedy, against the argmax over the tokenizer's ids of the full forward pass (no KV cache)
    ids = tok.encode_ordinary("def ")
    want, logits_pad = [], []
    for _ in range(8):
        logits = tr.model.forward(np.array([ids + want], dtype=np.int32))[0, -1]
        logits_pad.append(int(np.argmax(logits)) >= n)
        want.append(int(np.argmax(logits[:n])))
    assert any(logits_pad), "the test needs padding ids that would win without the restriction"
    tr.config.train.sample_temperature = 0.0
    got = tr.sample("def ", 8)
    eot = want.index(tok.eot_token) if tok.eot_token in want else len(want)
    assert got == "def " + tok.decode(want[:eot])


def test_sample_settings_are_checked_up_front(prepared, tmp_path):
    data_dir, tok = prepared
    for key, value in (("train__sample_temperature", -1.0), ("train__sample_top_k", 0),
                       ("train__sample_temperature", math.inf)):
        with pytest.raises(ValueError, match=key.replace("__", r"\.")):
            _cfg(data_dir, tmp_path / "s", **{key: value})
    # more sample tokens than the context holds: capped like `homeforge generate`, the run goes on
    cfg = _cfg(data_dir, tmp_path / "s", train__steps=2, train__sample_every=1, train__sample_tokens=1000,
               train__sample_prompt="x" * 200)
    tr = Trainer(cfg, tokenizer=tok, log=lambda s: None)
    assert tr.fit()["step"] == 2
    assert len([r for r in tr.history if "sample" in r]) == 2


def _ck_metric(out, step):
    import json

    return json.loads((out / "checkpoints" / f"step_{step:08d}" / "checkpoint.json").read_text())["metric"]


def test_checkpoint_metric_survives_until_and_a_second_resume(prepared, tmp_path):
    from homeforge.checkpoint import resolve_checkpoint

    data_dir, tok = prepared
    over = {"train__steps": 4, "train__eval_every": 2, "train__eval_batches": 2}
    out = tmp_path / "m"
    a = Trainer(_cfg(data_dir, out, **over), tokenizer=tok, log=lambda s: None)
    a.fit(until=2)  # stops at an evaluation step
    val2 = [r["val_loss"] for r in a.history if "val_loss" in r]
    assert len(val2) == 1 and _ck_metric(out, 2) == val2[0]
    assert resolve_checkpoint(out / "checkpoints" / "best").name == "step_00000002"
    b = Trainer(_cfg(data_dir, out, **over), tokenizer=tok, log=lambda s: None)
    b.fit(resume=out / "checkpoints" / "best")
    val4 = [r["val_loss"] for r in b.history if "val_loss" in r][-1]
    assert _ck_metric(out, 4) == val4
    c = Trainer(_cfg(data_dir, out, **over), tokenizer=tok, log=lambda s: None)
    assert c.fit(resume=True)["step"] == 4  # nothing left to do: step_4 is written again, with its metric
    assert _ck_metric(out, 4) == val4
    assert resolve_checkpoint(out / "checkpoints" / "best").name == f"step_{(2 if val2[0] < val4 else 4):08d}"


def test_fresh_run_into_an_earlier_runs_out_dir(prepared, tmp_path):
    import json

    data_dir, tok = prepared
    out = tmp_path / "o"
    Trainer(_cfg(data_dir, out, train__steps=4, train__checkpoint_every=2), tokenizer=tok, log=lambda s: None).fit()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    again = Trainer(_cfg(data_dir, out, train__steps=2), tokenizer=tok, log=lambda s: None)
    with pytest.raises(ValueError, match=r"train\.out_dir .* already holds a run .*--resume.*--overwrite"):
        again.fit()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    again.fit(overwrite=True)  # starts over: nothing of the earlier run is left to mix in
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def test_metrics_file_and_checkpoints(prepared, tmp_path):
    import json

    data_dir, tok = prepared
    cfg = _cfg(data_dir, tmp_path / "r", train__steps=8, train__eval_every=4, train__checkpoint_every=2,
               train__keep_last=2, train__log_every=2)
    lines = []
    tr = Trainer(cfg, tokenizer=tok, log=lines.append)
    tr.fit()
    recs = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if "loss" in r]
    assert steps == [1, 2, 4, 6, 8]
    # peak_gflops=1000 is above this machine's measured GEMM peak, so a true MFU is below 1
    fpt = tr.model.flops_per_token(cfg.data.seq_len)
    for r in (r for r in recs if "loss" in r):
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1
        assert math.isclose(r["mfu"], r["tokens_per_s"] * fpt / 1e12, rel_tol=1e-9)
    vals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in vals] == [4, 8] and all(math.isclose(r["val_ppl"], math.exp(r["val_loss"])) for r in vals)
    ck = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    best = min(vals, key=lambda r: r["val_loss"])["step"]
    assert set(ck) == {"step_00000006", "step_00000008", f"step_{best:08d}"}  # the last 2 and the best
    assert any("MFU" in ln and "tok/s" in ln and "ETA" in ln for ln in lines)
    assert RunConfig.from_toml(tmp_path / "r" / "config.toml") == cfg
    # docs/formats.md lists exactly what is in the run directory (tb/ only with tensorboard)
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    table = doc.split("`train.out_dir` of a run:")[1].split("\n\n")[1]
    listed = {row.split("`")[1].split("/")[0] for row in table.splitlines()[2:]} - {"tb"}
    assert listed == {"config.toml", "metrics.jsonl", "checkpoints"}
    assert {p.name for p in (tmp_path / "r").iterdir()} == listed
    assert all((tmp_path / "r" / "checkpoints" / c / "tokenizer.hftok").is_file() for c in ck)


def test_bad_runs_raise_clear_errors(prepared, tmp_path):
    data_dir, tok = prepared
    with pytest.raises(ValueError, match="model.vocab_size"):
        Trainer(_cfg(data_dir, tmp_path / "x", model__vocab_size=100), tokenizer=tok)
    with pytest.raises(ValueError, match="data.path"):
        Trainer(_cfg("", tmp_path / "x"), tokenizer=tok)
    with pytest.raises(FileNotFoundError, match="no prepared data"):
        Trainer(_cfg(tmp_path / "nowhere", tmp_path / "x"), tokenizer=tok)
    with pytest.raises(ValueError, match="seq_len"):
        Trainer(_cfg(data_dir, tmp_path / "x", model__max_seq_len=16), tokenizer=tok)
    with pytest.raises(ValueError, match="special_tokens|vocab_size"):
        Tokenizer.train(["some text"], 100, special_tokens=(EOT,))
    # a checkpoint of another architecture
    a = Trainer(_cfg(data_dir, tmp_path / "small", train__steps=2), tokenizer=tok, log=lambda s: None)
    a.fit()
    b = Trainer(_cfg(data_dir, tmp_path / "big", train__steps=2, model__n_layers=3), tokenizer=tok, log=lambda s: None)
    with pytest.raises(ValueError, match=r"another architecture \(n_layers: 2 there, 3 here\)"):
        b.fit(resume=tmp_path / "small")
    # a tokenizer other than the data's
    other = Tokenizer.train(["completely different text " * 20], 300, special_tokens=(EOT,), min_frequency=1)
    with pytest.raises(ValueError, match="tokenizer does not match"):
        Trainer(_cfg(data_dir, tmp_path / "x"), tokenizer=other)


def test_tensorboard_event_files(prepared, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard (the optional extra homeforge[tensorboard]) is not installed")
    data_dir, tok = prepared
    tr = Trainer(_cfg(data_dir, tmp_path / "tb", train__steps=3, train__tensorboard=True), tokenizer=tok, log=lambda s: None)
    tr.fit()
    events = list((tmp_path / "tb" / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
