"""homeforge.Model against transformers' LlamaForCausalLM (float64 reference), plus generation,
interchange, the gradient-ready hook, finite differences and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import homeforge
from homeforge import Model, ModelConfig

torch = pytest.importorskip("torch", reason="torch is the reference implementation")
transformers = pytest.importorskip("transformers", reason="transformers' LlamaForCausalLM is the reference")


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48, max_seq_len=32)
    base.update(kw)
    return ModelConfig(**base)


def reference(m: Model, dtype=torch.float64, attn: str = "eager"):
    """transformers' LlamaForCausalLM with m's weights copied in."""
    hc = {k: v for k, v in m.hf_config().items() if k not in ("homeforge", "architectures", "torch_dtype", "model_type")}
    cfg = transformers.LlamaConfig(**hc)
    cfg._attn_implementation = attn
    ref = transformers.LlamaForCausalLM(cfg).to(dtype)
    sd = {k: torch.from_numpy(v.copy()).to(dtype) for k, v in m.named_parameters().items()}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not unexpected
    assert set(missing) <= {"lm_head.weight"} and (m.config.tie_embeddings or not missing)
    if m.config.tie_embeddings:
        assert ref.lm_head.weight.data_ptr() == ref.model.embed_tokens.weight.data_ptr()
    return ref


def ref_loss_grads(ref, tok, tgt, autocast: bool = False):
    ref.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = ref(input_ids=torch.from_numpy(tok)).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             torch.from_numpy(tgt).long().reshape(-1), ignore_index=-100)
    loss.backward()
    grads = {n: p.grad.detach().double().numpy() for n, p in ref.named_parameters()}
    return logits.detach().double().numpy(), loss.item(), grads


@pytest.mark.parametrize("tie,n_kv,T,heads", [(True, 2, 13, 4), (False, 4, 13, 4), (True, 4, 16, 4), (False, 1, 7, 4),
                                              (True, 1, 11, 1)],
                         ids=["tied-gqa-oddT", "untied-mha", "tied-mha", "untied-mqa-T7", "tied-head32"])
def test_matches_transformers_fp32(tie, n_kv, T, heads):
    # heads=1 gives head_dim 32: the AVX-512 RoPE loops (D % 32 == 0) rather than the SSE2 ones.
    m = Model(tiny(tie_embeddings=tie, n_kv_heads=n_kv, n_heads=heads), seed=3)
    ref = reference(m)
    rng = np.random.default_rng(T)
    tok = rng.integers(0, 97, (3, T))
    tgt = rng.integers(0, 97, (3, T))
    tgt[0, :4] = -100
    tgt[2, -1] = -100
    logits_ref, loss_ref, grads_ref = ref_loss_grads(ref, tok, tgt)
    logits = m.forward(tok)
    assert logits.shape == (3, T, 97) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, logits_ref, rtol=0, atol=2e-6 * np.abs(logits_ref).max() + 1e-6)
    loss = m.forward_backward(tok, tgt)
    assert loss == pytest.approx(loss_ref, rel=1e-6)
    assert m.loss(tok, tgt) == pytest.approx(loss_ref, rel=1e-6)
    grads = m.named_grads()
    assert set(grads) == set(grads_ref)
    for name, g in grads.items():
        gr = grads_ref[name]
        assert g.shape == gr.shape, name
        scale = np.abs(gr).max() + 1e-12
        err = np.abs(g - gr).max() / scale
        assert err < 2e-5, f"{name}: max error {err:.2e} of max |grad| {scale:.2e}"


def test_gradients_accumulate_and_zero():
    m = Model(tiny(), seed=0)
    rng = np.random.default_rng(1)
    tok = rng.integers(0, 97, (2, 9))
    tgt = rng.integers(0, 97, (2, 9))
    m.forward_backward(tok, tgt)
    once = m.flat_grads().copy()
    m.forward_backward(tok, tgt)
    np.testing.assert_allclose(m.flat_grads(), 2 * once, rtol=1e-6, atol=1e-9)
    m.zero_grad()
    assert not m.flat_grads().any()


def test_recompute_gives_the_same_gradients():
    rng = np.random.default_rng(2)
    tok = rng.integers(0, 97, (2, 11))
    tgt = rng.integers(0, 97, (2, 11))
    a, b = Model(tiny(), seed=5), Model(tiny(recompute=True), seed=5)
    la, lb = a.forward_backward(tok, tgt), b.forward_backward(tok, tgt)
    assert la == lb
    np.testing.assert_array_equal(a.flat_grads(), b.flat_grads())
    # Recomputation keeps one layer's activations instead of all of them.
    assert b._core.workspace_bytes() < a._core.workspace_bytes()


def test_bf16_within_torch_autocast_error():
    """bf16 mode vs the float64 reference: the error must be of the size torch's own bf16 autocast
    makes on the same model (within a factor of 4), and far below the signal."""
    cfg = tiny(dtype="bf16", d_model=64, ffn_hidden=128, n_layers=2)
    m = Model(cfg, seed=4)
    rng = np.random.default_rng(3)
    tok = rng.integers(0, 97, (2, 15))
    tgt = rng.integers(0, 97, (2, 15))
    tgt[1, :3] = -100
    logits64, loss64, grads64 = ref_loss_grads(reference(m), tok, tgt)
    logits_tb, loss_tb, grads_tb = ref_loss_grads(reference(m, torch.float32), tok, tgt, autocast=True)
    logits = m.forward(tok)
    err_ours = np.abs(logits - logits64).max()
    err_torch = np.abs(logits_tb - logits64).max()
    assert err_ours <= 4 * err_torch + 1e-6, (err_ours, err_torch)
    loss = m.forward_backward(tok, tgt)
    assert abs(loss - loss64) <= 4 * abs(loss_tb - loss64) + 2e-3
    for name, g in m.named_grads().items():
        e_ours = np.linalg.norm(g - grads64[name])
        e_torch = np.linalg.norm(grads_tb[name] - grads64[name])
        assert e_ours <= 4 * e_torch + 1e-3 * np.linalg.norm(grads64[name]), (name, e_ours, e_torch)
        assert e_ours <= 0.1 * np.linalg.norm(grads64[name]), name


def test_bf16_chunked_cross_entropy_groups():
    """A vocabulary large enough that the fused cross-entropy runs 64-row chunks (32 MiB of f32
    logits / (4 V)) and keeps the bf16 dlogits of 4 chunks per dW GEMM (64 MiB / (2 V)): 6 chunks,
    2 groups, the second one partial, with a whole chunk of ignored targets. Loss and gradients
    must match torch (float32 reference) within bf16 error."""
    V = 131072
    cfg = tiny(vocab_size=V, dtype="bf16", d_model=64, n_heads=2, n_kv_heads=1, ffn_hidden=32, n_layers=1,
               max_seq_len=128)  # head_dim 32: also the AVX-512 bf16 RoPE loops
    m = Model(cfg, seed=5)
    rng = np.random.default_rng(6)
    B, T = 3, 110  # N = 330 rows: chunks of 64 -> 5 full + 10 rows; groups of 256 + 74 rows
    tok = rng.integers(0, V, (B, T))
    tgt = rng.integers(0, V, (B, T))
    tgt.reshape(-1)[64:128] = -100  # the second chunk has no valid target
    tgt[2, 5:9] = -100
    _, loss32, grads32 = ref_loss_grads(reference(m, torch.float32), tok, tgt)
    loss = m.forward_backward(tok, tgt)
    assert abs(loss - loss32) <= 1e-3 * abs(loss32), (loss, loss32)
    for name, g in m.named_grads().items():
        err = np.linalg.norm(g - grads32[name])
        assert err <= 1e-2 * np.linalg.norm(grads32[name]), (name, err, np.linalg.norm(grads32[name]))


@pytest.mark.parametrize("dtype,tie", [("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)])
def test_head_gradient_vocab_blocks_accumulate(dtype, tie):
    """The LM-head weight gradient is computed in vocabulary blocks (2048 rows of dW per GEMM): an
    odd vocabulary (the last block partial), several 64-row chunks (and in bf16 two dW groups),
    ignored targets, and two forward_backward calls that must add up. Loss and every gradient
    against torch (float32) of the sum of both batches' losses."""
    V = 131071
    cfg = tiny(vocab_size=V, dtype=dtype, d_model=32, n_heads=1, n_kv_heads=1, ffn_hidden=32, n_layers=1,
               max_seq_len=128, tie_embeddings=tie)
    m = Model(cfg, seed=8)
    ref = reference(m, torch.float32)
    rng = np.random.default_rng(9)
    B, T = 3, 110  # N = 330 rows: chunks 64 x 5 + 10; bf16 dW groups of 256 + 74 rows
    batches = []
    for _ in range(2):
        tok = rng.integers(0, V, (B, T))
        tgt = rng.integers(0, V, (B, T))
        tgt[:, ::7] = V - 1  # the last (partial) vocabulary block gets gradient from targets too
        tgt.reshape(-1)[128:192] = -100  # the third chunk has no valid target
        tgt[0, 3:6] = -100
        batches.append((tok, tgt))
    refs = [ref_loss_grads(ref, tok, tgt) for tok, tgt in batches]
    m.zero_grad()
    for (tok, tgt), (_, loss_ref, _) in zip(batches, refs):
        loss = m.forward_backward(tok, tgt)
        assert loss == pytest.approx(loss_ref, rel=1e-5 if dtype == "fp32" else 1e-3)
    head = "model.embed_tokens.weight" if tie else "lm_head.weight"
    grads = m.named_grads()
    for name, g in grads.items():
        gr = refs[0][2][name] + refs[1][2][name]
        if dtype == "fp32":
            err = np.abs(g - gr).max() / (np.abs(gr).max() + 1e-12)
            assert err < 1e-4, (name, err)
        else:
            err = np.linalg.norm(g - gr)
            assert err <= 1e-2 * np.linalg.norm(gr), (name, err, np.linalg.norm(gr))
    # Rows of the last, partial block (and the rest) are really written, not left at zero.
    assert np.abs(grads[head][-2048:]).max() > 0.1 * np.abs(grads[head]).max()


@pytest.mark.parametrize("kw", [dict(), dict(dtype="bf16", tie_embeddings=False, recompute=True),
                                dict(vocab_size=131071, d_model=32, n_heads=1, n_kv_heads=1, max_seq_len=128),
                                dict(vocab_size=131071, d_model=32, n_heads=1, n_kv_heads=1, max_seq_len=128,
                                     dtype="bf16", tie_embeddings=False)],
                         ids=["fp32", "bf16-untied-recompute", "fp32-bigV", "bf16-bigV-untied"])
def test_first_backward_after_zero_grad_is_bitwise_the_accumulating_one(kw):
    """After zero_grad(overwrite_next=True) the next forward_backward writes the GEMM weight
    gradients with beta = 0 instead of adding to the zeros. It must give bitwise the gradients of
    the accumulating path
    (here reached by a first call whose targets are all ignored: it adds exact zeros), with the
    buffer filled with NaN before zero_grad(), and later calls must still accumulate."""
    cfg = tiny(**kw)
    V = cfg.vocab_size
    rng = np.random.default_rng(10)
    B, T = (3, 110) if V > 1000 else (2, 13)  # big V: several chunks (and bf16 dW groups)
    tok = [rng.integers(0, V, (B, T)) for _ in range(2)]
    tgt = [rng.integers(0, V, (B, T)) for _ in range(2)]
    tgt[0][0, :5] = -100
    fast, slow = Model(cfg, seed=11), Model(cfg, seed=11)
    fast.flat_grads()[:] = np.nan
    fast.zero_grad(overwrite_next=True)
    slow.zero_grad()
    assert np.isnan(slow.forward_backward(tok[0], np.full((B, T), -100)))  # adds zeros, no loss
    assert not slow.flat_grads().any()
    for i in range(2):
        assert fast.forward_backward(tok[i], tgt[i]) == slow.forward_backward(tok[i], tgt[i])
        np.testing.assert_array_equal(fast.flat_grads(), slow.flat_grads())
        assert np.isfinite(fast.flat_grads()).all()
        if i == 0:
            once = fast.flat_grads().copy()
    # The second call added (it did not overwrite): the sum differs from either call alone.
    fast.zero_grad(overwrite_next=True)
    fast.forward_backward(tok[1], tgt[1])
    np.testing.assert_allclose(once + fast.flat_grads(), slow.flat_grads(), rtol=1e-5, atol=1e-7)
    assert np.abs(slow.flat_grads() - once).max() > 1e-3 * np.abs(once).max()


def test_plain_zero_grad_keeps_values_written_before_forward_backward():
    """Without overwrite_next, a gradient written into the buffer after zero_grad() is added to,
    not replaced (the accumulate contract), for the GEMM layers and the LM head alike."""
    cfg = tiny()
    rng = np.random.default_rng(12)
    tok, tgt = rng.integers(0, cfg.vocab_size, (2, 13)), rng.integers(0, cfg.vocab_size, (2, 13))
    ref, m = Model(cfg, seed=13), Model(cfg, seed=13)
    ref.zero_grad(overwrite_next=True)
    ref.forward_backward(tok, tgt)
    m.zero_grad()
    m.flat_grads()[:] = 0.25
    m.forward_backward(tok, tgt)
    np.testing.assert_allclose(m.flat_grads(), ref.flat_grads() + np.float32(0.25), rtol=1e-6, atol=1e-6)


def test_finite_differences():
    """Directional derivatives of the loss (central differences on the f32 buffer, loss summed in
    double) against g . v, for random directions and single coordinates of a tiny model."""
    cfg = ModelConfig(vocab_size=11, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=12, max_seq_len=8,
                      tie_embeddings=False)
    m = Model(cfg, seed=0)
    rng = np.random.default_rng(0)
    p = m.flat_params()
    p[:] = rng.standard_normal(p.size).astype(np.float32) * 0.4
    for name, v in m.named_parameters().items():
        if "norm" in name:
            v[...] = 1 + 0.2 * rng.standard_normal(v.shape)
    tok = rng.integers(0, 11, (2, 7))
    tgt = rng.integers(0, 11, (2, 7))
    tgt[0, 2] = -100
    m.forward_backward(tok, tgt)
    g = m.flat_grads().astype(np.float64)
    base = p.copy()
    eps = 1e-2
    dirs = [rng.standard_normal(p.size) for _ in range(4)]
    for i in rng.choice(p.size, 12, replace=False):
        e = np.zeros(p.size)
        e[i] = 1.0
        dirs.append(e)
    for v in dirs:
        v = v / np.linalg.norm(v)
        p[:] = base + eps * v
        lp = m.loss(tok, tgt)
        p[:] = base - eps * v
        lm = m.loss(tok, tgt)
        p[:] = base
        fd = (lp - lm) / (2 * eps)
        assert fd == pytest.approx(float(g @ v), rel=3e-3, abs=3e-4)


def test_grad_ready_hook_covers_buffer_in_reverse_order():
    for tie in (True, False):
        m = Model(tiny(tie_embeddings=tie, n_layers=3), seed=0)
        calls = []

        def hook(b, e):
            calls.append((b, e))
            # The range is final when reported: it must not change afterwards (checked below).
            finals.append(m.flat_grads()[b:e].copy())

        finals: list[np.ndarray] = []
        m.set_grad_ready_hook(hook)
        tok = np.arange(10).reshape(1, 10)
        m.forward_backward(tok, tok)
        ranges = m.layer_ranges()
        assert calls == [ranges[-1]] + ranges[1:-1][::-1] + [ranges[0]]
        cover = sorted(calls)
        assert cover[0][0] == 0 and cover[-1][1] == m.num_parameters()
        assert all(a[1] == b[0] for a, b in zip(cover, cover[1:]))
        for (b, e), f in zip(calls, finals):
            np.testing.assert_array_equal(m.flat_grads()[b:e], f)
        # Whole layers: layer i's named tensors lie inside its range.
        b1, e1 = ranges[2]
        params = m.named_parameters()
        flat = m.flat_params()
        for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
            off = params[name].__array_interface__["data"][0] - flat.__array_interface__["data"][0]
            assert b1 <= off // 4 < e1
        m.set_grad_ready_hook(None)
        m.forward_backward(tok, tok)
        assert len(calls) == len(ranges)


def test_generate_kv_cache_matches_full_forward():
    m = Model(tiny(tie_embeddings=False), seed=7)
    prompt = [5, 17, 3, 88]
    streamed: list[int] = []
    out = m.generate(prompt, 10, temperature=0, on_token=streamed.append)
    assert streamed == out and len(out) == 10
    seq = list(prompt)
    for _ in range(10):
        seq.append(int(np.argmax(m.forward(np.array([seq]))[0, -1])))
    assert out == seq[len(prompt):]
    # top_k=1 sampling is greedy; sampling is reproducible with a seed and stays in range.
    assert m.generate(prompt, 10, temperature=0.7, top_k=1, seed=1) == out
    a = m.generate(prompt, 12, temperature=1.0, top_p=0.9, seed=11)
    assert a == m.generate(prompt, 12, temperature=1.0, top_p=0.9, seed=11)
    assert all(0 <= t < 97 for t in a)
    assert m.generate(prompt, 0) == []


def test_generate_bf16_kv_cache_matches_full_forward():
    m = Model(tiny(dtype="bf16"), seed=8)
    out = m.generate([1, 2, 3], 6, temperature=0)
    seq = [1, 2, 3]
    for _ in range(6):
        seq.append(int(np.argmax(m.forward(np.array([seq]))[0, -1])))
    assert out == seq[3:]


def test_save_pretrained_loads_in_transformers(tmp_path):
    for tie in (True, False):
        m = Model(tiny(tie_embeddings=tie), seed=9)
        d = tmp_path / f"tie{tie}"
        m.save_pretrained(d)
        assert json.loads((d / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
        hf = transformers.AutoModelForCausalLM.from_pretrained(d)
        assert type(hf).__name__ == "LlamaForCausalLM"
        tok = np.random.default_rng(0).integers(0, 97, (2, 12))
        with torch.no_grad():
            ref = hf(input_ids=torch.from_numpy(tok)).logits.numpy()
        np.testing.assert_allclose(m.forward(tok), ref, rtol=1e-5, atol=2e-5)
        back = Model.from_pretrained(d)
        assert back.config == m.config
        np.testing.assert_array_equal(back.flat_params(), m.flat_params())
        assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_from_pretrained_of_transformers_dir(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=24,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False,
                                   rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    m = Model.from_pretrained(tmp_path)
    assert m.config.rope_theta == 5000.0 and m.config.norm_eps == pytest.approx(1e-6)
    assert m.config.n_kv_heads == 2 and not m.config.tie_embeddings
    tok = np.random.default_rng(1).integers(0, 50, (1, 20))
    with torch.no_grad():
        ref = hf.eval()(input_ids=torch.from_numpy(tok)).logits.numpy()
    np.testing.assert_allclose(m.forward(tok), ref, rtol=1e-5, atol=2e-5)
    # A feature we do not implement is named in the error.
    conf = json.loads((tmp_path / "config.json").read_text())
    for key, val in (("attention_bias", True), ("hidden_act", "gelu"),
                     ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4})):
        bad = dict(conf, **{key: val})
        (tmp_path / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=key.split("_")[0] if key != "rope_parameters" else "rope_type"):
            Model.from_pretrained(tmp_path)


def test_from_pretrained_bf16_sharded_checkpoint(tmp_path):
    """A bf16 checkpoint split over several safetensors files (transformers' sharding)."""
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                                   tie_word_embeddings=True)
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    m = Model.from_pretrained(tmp_path)
    assert m.config.tie_embeddings and m.config.n_kv_heads == 1
    ref32 = transformers.LlamaForCausalLM(cfg).float()
    ref32.load_state_dict({k: v.float() for k, v in hf.state_dict().items()})
    np.testing.assert_array_equal(m.named_parameters()["model.layers.1.mlp.up_proj.weight"],
                                  hf.model.layers[1].mlp.up_proj.weight.detach().float().numpy())
    tok = np.random.default_rng(2).integers(0, 40, (1, 9))
    with torch.no_grad():
        ref = ref32.eval()(input_ids=torch.from_numpy(tok)).logits.numpy()
    np.testing.assert_allclose(m.forward(tok), ref, rtol=1e-5, atol=2e-5)


def test_bad_input():
    m = Model(tiny(), seed=0)
    ok = np.zeros((1, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="vocab_size"):
        m.forward(np.array([[1, 97]]))
    with pytest.raises(ValueError, match="vocab_size"):
        m.forward(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="max_seq_len"):
        m.forward(np.zeros((1, 33), dtype=np.int32))
    with pytest.raises(ValueError, match="integer"):
        m.forward(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        m.forward(np.zeros(4, dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        m.forward_backward(ok, np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="ignore index"):
        m.forward_backward(ok, np.full((1, 4), -5))
    with pytest.raises(ValueError, match="max_seq_len"):
        m.generate(list(range(30)), 5)
    with pytest.raises(ValueError, match="top_p"):
        m.generate([1], 2, top_p=1.5)
    with pytest.raises(ValueError, match="n_kv_heads"):
        tiny(n_kv_heads=3)
    with pytest.raises(ValueError, match="dtype"):
        tiny(dtype="fp16")
    with pytest.raises(ValueError, match="d_model"):
        tiny(d_model=30)
    with pytest.raises(ValueError, match="preset"):
        ModelConfig.preset("huge", 100)
    with pytest.raises(ValueError, match="unknown key 'x'"):
        ModelConfig.from_dict({**tiny().to_dict(), "x": 1})
    # All targets ignored: the mean is undefined (NaN, as torch) and no gradient is added.
    m.zero_grad()
    assert np.isnan(m.forward_backward(ok, np.full((1, 4), -100)))
    assert not m.flat_grads().any()


def test_init_and_presets():
    m1, m2 = Model(tiny(), seed=11), Model(tiny(), seed=11)
    np.testing.assert_array_equal(m1.flat_params(), m2.flat_params())
    assert not np.array_equal(m1.flat_params(), Model(tiny(), seed=12).flat_params())
    p = m1.named_parameters()
    assert np.all(p["model.norm.weight"] == 1)
    assert np.std(p["model.layers.0.mlp.up_proj.weight"]) == pytest.approx(0.02, rel=0.1)
    assert np.std(p["model.layers.0.mlp.down_proj.weight"]) == pytest.approx(0.02 / 2, rel=0.1)  # 1/sqrt(2*2)
    counts = {}
    for name in ("1m", "10m", "nano", "mini"):
        c = ModelConfig.preset(name, vocab_size=32000)
        D = c.head_dim
        per = c.d_model * (c.n_heads * D + 2 * c.n_kv_heads * D) * 1 + c.n_heads * D * c.d_model \
            + 3 * c.d_model * c.ffn_hidden + 2 * c.d_model
        counts[name] = c.n_layers * per + c.d_model + c.vocab_size * c.d_model
    assert Model(ModelConfig.preset("1m", 32000)).num_parameters() == counts["1m"]
    assert 0.5e6 < counts["1m"] - 32000 * 128 + 2048 * 128 < 2e6
    assert 100e6 < counts["nano"] < 140e6 and 300e6 < counts["mini"] < 400e6
    m = Model(tiny(), seed=0)
    c = m.config
    assert m.flops_per_token(16) == 6 * (m.num_parameters() - 2 * c.d_model * c.n_layers - c.d_model) \
        + 6 * c.n_layers * 16 * c.d_model


@pytest.mark.parametrize("isa", ["avx2", "scalar"])
def test_isa_fallbacks_agree(isa, restore_threads):
    """The SSE2 row kernels (and the attention fallbacks) give the same loss and gradients as the
    AVX-512 ones, up to f32 rounding."""
    rng = np.random.default_rng(5)
    tok = rng.integers(0, 97, (2, 12))
    tgt = rng.integers(0, 97, (2, 12))
    # head_dim 8 (the SSE2 RoPE loops everywhere) and 32 (AVX-512 RoPE vs its fallback).
    for cfg in (tiny(), tiny(n_heads=1, n_kv_heads=1)):
        _isa_pair_agrees(cfg, tok, tgt, isa)


def _isa_pair_agrees(cfg, tok, tgt, isa):
    import os

    from homeforge import _core

    _core.set_isa_limit(os.environ.get("HOMEFORGE_ISA", "avx512_bf16"))  # as the restore_threads fixture does
    a, b = Model(cfg, seed=2), Model(cfg, seed=2)
    la = a.forward_backward(tok, tgt)
    _core.set_isa_limit(isa)
    lb = b.forward_backward(tok, tgt)
    assert lb == pytest.approx(la, rel=1e-6)
    np.testing.assert_allclose(b.flat_grads(), a.flat_grads(), rtol=1e-4, atol=1e-6 * np.abs(a.flat_grads()).max())
