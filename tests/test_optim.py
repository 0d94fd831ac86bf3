"""homeforge.optim (numpy API) against torch.optim and float64 references nobody here wrote."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import homeforge
from homeforge import _core
from homeforge.optim import SGD, AdamW, Lion, StepResult

torch = pytest.importorskip("torch", reason="torch (the reference optimizers) is not installed")

SHAPES = [(3, 5), (17,), (1,), (64, 33), (100,), (2, 0), (31, 7)]
BF16 = ml_dtypes.bfloat16


def _data(rng, shapes=SHAPES, steps=100, scale=1.0):
    ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    gseq = [[(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes] for _ in range(steps)]
    return ps, gseq


def _ulps(a: np.ndarray) -> float:
    return float(np.spacing(np.float32(max(np.abs(a).max(initial=0.0), 1e-30))))


def _adamw_ref(ps, gseq, lr, betas, eps, weight_decay, clip=None):
    """AdamW in float64, written from Loshchilov & Hutter (decoupled decay) + torch's eps placement."""
    b1, b2 = betas
    p = [x.astype(np.float64) for x in ps]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t, gs in enumerate(gseq, 1):
        g = [x.astype(np.float64) for x in gs]
        if clip is not None:
            norm = math.sqrt(sum(float((x * x).sum()) for x in g))
            c = min(1.0, clip / (norm + 1e-6))
            g = [x * c for x in g]
        for i in range(len(p)):
            p[i] *= 1 - lr * weight_decay
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] -= lr / (1 - b1**t) * m[i] / (np.sqrt(v[i]) / math.sqrt(1 - b2**t) + eps)
    return p


def _run_ours(cls, ps, gseq, **kw):
    ours = [p.copy() for p in ps]
    grads = [np.zeros_like(p) for p in ps]
    opt = cls(ours, grads, **kw)
    for gs in gseq:
        for g, src in zip(grads, gs):
            g[...] = src
        r = opt.step()
        assert isinstance(r, StepResult) and r.finite and not r.skipped
    return ours, opt


def _run_torch(cls, ps, gseq, **kw):
    tps = [torch.tensor(p, requires_grad=True) for p in ps]
    opt = cls(tps, **kw)
    for gs in gseq:
        for t, g in zip(tps, gs):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in tps]


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.3, 0.95)])  # both branches of torch's lerp
def test_adamw_matches_torch_and_float64(rng, betas):
    ps, gseq = _data(rng)
    kw = dict(lr=1e-2, betas=betas, eps=1e-8, weight_decay=0.1)
    ours, opt = _run_ours(AdamW, ps, gseq, **kw)
    ref_t = _run_torch(torch.optim.AdamW, ps, gseq, **kw)
    ref64 = _adamw_ref(ps, gseq, **kw)
    err_ours = err_torch = 0.0
    for o, t, r in zip(ours, ref_t, ref64):
        assert np.abs(o - t).max(initial=0) <= 4 * _ulps(t), "more than a few ulps from torch.optim.AdamW"
        err_ours += float(np.abs(o - r).sum())
        err_torch += float(np.abs(t - r).sum())
    assert err_ours <= 1.25 * err_torch + 1e-12, (err_ours, err_torch)
    assert opt.step_count == 100


@pytest.mark.parametrize("kw", [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    dict(lr=0.05, weight_decay=0.1),
])
def test_sgd_matches_torch(rng, kw):
    ps, gseq = _data(rng, scale=0.1)
    ours, _ = _run_ours(SGD, ps, gseq, **kw)
    ref = _run_torch(torch.optim.SGD, ps, gseq, **kw)
    for o, t in zip(ours, ref):
        assert np.abs(o - t).max(initial=0) <= 4 * _ulps(t)


def test_lion_follows_published_rule_in_float64(rng):
    """Each step from our float32 state, the float64 rule of Chen et al. (2023) gives our next state."""
    lr, (b1, b2), wd = 1e-3, (0.9, 0.99), 0.1
    ps, gseq = _data(rng)
    params = [p.copy() for p in ps]
    grads = [np.zeros_like(p) for p in ps]
    opt = Lion(params, grads, lr=lr, betas=(b1, b2), weight_decay=wd)
    m = opt._m  # the flat exp_avg buffer, in param order
    flipped = 0
    for gs in gseq:
        for g, src in zip(grads, gs):
            g[...] = src
        p0 = np.concatenate([p.ravel() for p in params]).astype(np.float64)
        m0 = m.astype(np.float64)
        g64 = np.concatenate([g.ravel() for g in grads]).astype(np.float64)
        c = b1 * m0 + (1 - b1) * g64
        p_ref = p0 - lr * (np.sign(c) + wd * p0)
        m_ref = b2 * m0 + (1 - b2) * g64
        opt.step()
        p1 = np.concatenate([p.ravel() for p in params]).astype(np.float64)
        tiny = np.abs(c) < 1e-6 * (np.abs(m0) + np.abs(g64) + 1e-30)  # sign of an update this close to 0 is rounding
        flipped += int(tiny.sum())
        np.testing.assert_allclose(p1[~tiny], p_ref[~tiny], rtol=2e-7, atol=1e-9)
        # float32 rounding of each term (the two terms may cancel, so bound by their magnitudes)
        tol = 2.0**-22 * (b2 * np.abs(m0) + (1 - b2) * np.abs(g64)) + 1e-30
        assert np.all(np.abs(m.astype(np.float64) - m_ref) <= tol)
    assert flipped < 10


@pytest.mark.parametrize("algo", ["adamw", "sgd"])
def test_bf16_master_vs_float64(rng, algo):
    shapes = [(5, 7), (33,), (300,)]
    ps = [rng.standard_normal(s).astype(BF16) for s in shapes]
    gseq = [[rng.standard_normal(s).astype(BF16) for s in shapes] for _ in range(30)]
    params = [p.copy() for p in ps]
    grads = [np.zeros_like(p) for p in ps]
    if algo == "adamw":
        kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
        opt = AdamW(params, grads, **kw)
    else:
        opt = SGD([p.view(np.uint16) for p in params], [g.view(np.uint16) for g in grads], lr=0.01, momentum=0.9)
    for gs in gseq:
        for g, src in zip(grads, gs):
            g[...] = src
        opt.step()
    master = opt.state_dict()["state"]["master"]
    f32_init = [p.astype(np.float32) for p in ps]
    f32_g = [[g.astype(np.float32) for g in gs] for gs in gseq]
    if algo == "adamw":
        ref = _adamw_ref(f32_init, f32_g, **kw)
    else:
        ref, buf = [p.astype(np.float64) for p in f32_init], None
        for gs in f32_g:
            g = [x.astype(np.float64) for x in gs]
            buf = g if buf is None else [0.9 * b + x for b, x in zip(buf, g)]
            ref = [p - 0.01 * b for p, b in zip(ref, buf)]
    ref_flat = np.concatenate([r.ravel() for r in ref])
    # fp32 master weights track float64 to fp32 rounding (at most ~1 ulp per step), not bf16's 2^-8
    init = np.concatenate([p.ravel() for p in f32_init]).astype(np.float64)
    scale = np.maximum(np.maximum(np.abs(ref_flat), np.abs(init)), 0.1)  # magnitudes along the way
    ulp = np.spacing(scale.astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(master - ref_flat) <= len(gseq) * ulp + 1e-7)
    # the bf16 params are exactly round-to-nearest-even of the master weights
    rounded = master.astype(BF16)
    assert np.array_equal(np.concatenate([p.ravel() for p in params]).view(np.uint16), rounded.view(np.uint16))


def test_bf16_stochastic_rounding_is_unbiased_and_thread_independent(rng, restore_threads):
    n = 200_003
    p0 = (rng.standard_normal(n) * 3).astype(BF16)
    g = (rng.standard_normal(n) * 1e-3).astype(BF16)
    outs = []
    for threads in (1, 2):
        homeforge.set_num_threads(threads)
        p = p0.copy()
        opt = SGD(p, g.copy(), lr=1e-3, stochastic_rounding=True, seed=7)
        opt.step()
        opt.step()
        outs.append((p.copy(), opt.state_dict()["state"]["master"]))
    assert np.array_equal(outs[0][0].view(np.uint16), outs[1][0].view(np.uint16))
    p, master = outs[0]
    lo = master.astype(BF16)  # RNE neighbour; SR must give one of the two bf16 neighbours of master
    pf, mf = p.astype(np.float64), master.astype(np.float64)
    down = np.where(lo.astype(np.float64) <= mf, lo.astype(np.float64), np.nextafter(lo, BF16(-np.inf)).astype(np.float64))
    up = np.where(lo.astype(np.float64) >= mf, lo.astype(np.float64), np.nextafter(lo, BF16(np.inf)).astype(np.float64))
    assert np.all((pf == down) | (pf == up))
    # unbiased: the mean rounding error is ~0 relative to the bf16 spacing (RNE would be biased per element)
    spacing = up - down
    frac = np.where(spacing > 0, (pf - mf) / np.where(spacing > 0, spacing, 1), 0)
    assert abs(frac.mean()) < 0.01
    assert 0.3 < (pf == up).mean() < 0.7


def test_clipping_matches_torch_clip_grad_norm(rng):
    ps, gseq = _data(rng, steps=20)
    max_norm = 0.5
    ours = [p.copy() for p in ps]
    grads = [np.zeros_like(p) for p in ps]
    opt = AdamW(ours, grads, lr=1e-2, max_grad_norm=max_norm)
    tps = [torch.tensor(p, requires_grad=True) for p in ps]
    topt = torch.optim.AdamW(tps, lr=1e-2)
    for gs in gseq:
        for g, t, src in zip(grads, tps, gs):
            g[...] = src
            t.grad = torch.tensor(src)
        r = opt.step()
        total = torch.nn.utils.clip_grad_norm_(tps, max_norm)
        topt.step()
        assert r.grad_norm == pytest.approx(float(total), rel=1e-6)
        assert r.clip_coef == pytest.approx(max_norm / (float(total) + 1e-6), rel=1e-6)
    for o, t in zip(ours, tps):
        assert np.abs(o - t.detach().numpy()).max(initial=0) <= 4 * _ulps(t.detach().numpy())
    # a per-call max_grad_norm overrides; a norm below the threshold is not clipped
    r = opt.step(max_grad_norm=1e6)
    assert r.clip_coef == 1.0


def test_nonfinite_is_detected_and_skipped(rng):
    ps, gseq = _data(rng, steps=1)
    for bad in (np.nan, np.inf, -np.inf):
        params = [p.copy() for p in ps]
        grads = [g.copy() for g in gseq[0]]
        opt = AdamW(params, grads)
        opt.step()
        before = [p.copy() for p in params]
        sd = opt.state_dict()
        grads[3][5, 7] = bad
        r = opt.step()
        assert r.skipped and not r.finite and not math.isfinite(r.grad_norm)
        assert opt.step_count == 1
        assert all(np.array_equal(a, b) for a, b in zip(params, before))
        assert np.array_equal(opt.state_dict()["state"]["exp_avg"], sd["state"]["exp_avg"])
        # the caller may choose to step anyway: detection is still reported
        r = opt.step(skip_nonfinite=False)
        assert not r.skipped and not r.finite and opt.step_count == 2
        assert not np.isfinite(params[3][5, 7])
        # a caller-provided (e.g. all-reduced) non-finite norm is honoured without a norm pass
        grads[3][5, 7] = 0.0
        r = opt.step(grad_norm=float("inf"))
        assert r.skipped and opt.step_count == 2


def test_grad_scale_is_folded_in(rng):
    ps, gseq = _data(rng, steps=3)
    a = [p.copy() for p in ps]
    b = [p.copy() for p in ps]
    ga = [np.zeros_like(p) for p in ps]
    gb = [np.zeros_like(p) for p in ps]
    oa, ob = SGD(a, ga, lr=0.1, momentum=0.9), SGD(b, gb, lr=0.1, momentum=0.9)
    for gs in gseq:
        for x, y, src in zip(ga, gb, gs):
            x[...] = src * np.float32(8.0)  # "loss-scaled" by 8
            y[...] = src
        ra = oa.step(grad_scale=0.125)
        rb = ob.step()
        assert ra.grad_norm == pytest.approx(rb.grad_norm, rel=1e-12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # scaling by powers of two is exact
    r = oa.step(grad_scale=0.125, skip_nonfinite=False)  # norm accumulated inside the update pass
    assert r.grad_norm == pytest.approx(math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in ga)) / 8)


def test_param_groups_match_torch(rng):
    ps, gseq = _data(rng, steps=30)
    groups_np = [{"params": [p.copy() for p in ps[:3]], "grads": [np.zeros_like(p) for p in ps[:3]], "lr": 3e-3},
                 {"params": [p.copy() for p in ps[3:]], "grads": [np.zeros_like(p) for p in ps[3:]],
                  "weight_decay": 0.0, "betas": (0.8, 0.99)}]
    opt = AdamW(groups_np, lr=1e-2, weight_decay=0.05)
    tps = [torch.tensor(p, requires_grad=True) for p in ps]
    topt = torch.optim.AdamW([{"params": tps[:3], "lr": 3e-3}, {"params": tps[3:], "weight_decay": 0.0, "betas": (0.8, 0.99)}],
                             lr=1e-2, weight_decay=0.05)
    for k, gs in enumerate(gseq):
        grads = groups_np[0]["grads"] + groups_np[1]["grads"]
        for g, t, src in zip(grads, tps, gs):
            g[...] = src
            t.grad = torch.tensor(src)
        if k == 10:  # a schedule: lr at a step overrides every group and stays
            opt.step(lr=5e-3)
            for tg in topt.param_groups:
                tg["lr"] = 5e-3
            topt.step()
        else:
            opt.step()
            topt.step()
    assert [g["lr"] for g in opt.param_groups] == [5e-3, 5e-3]
    ours = groups_np[0]["params"] + groups_np[1]["params"]
    for o, t in zip(ours, tps):
        assert np.abs(o - t.detach().numpy()).max(initial=0) <= 4 * _ulps(t.detach().numpy())


@pytest.mark.parametrize("make", [
    lambda p, g: AdamW(p, g, lr=1e-2),
    lambda p, g: Lion(p, g, lr=1e-3, weight_decay=0.1),
    lambda p, g: SGD(p, g, lr=0.1, momentum=0.9, nesterov=True),
])
def test_state_dict_round_trip_continues_exactly(rng, make):
    ps, gseq = _data(rng, steps=20)
    a = [p.copy() for p in ps]
    ga = [np.zeros_like(p) for p in ps]
    oa = make(a, ga)
    for k, gs in enumerate(gseq):
        if k == 10:
            sd = oa.state_dict()
            b = [p.copy() for p in a]
            gb = [np.zeros_like(p) for p in ps]
            ob = make(b, gb)
            ob.load_state_dict(sd)
            assert ob.step_count == 10
        for g, src in zip(ga, gs):
            g[...] = src
        oa.step()
        if k >= 10:
            for g, src in zip(gb, gs):
                g[...] = src
            ob.step()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    sa, sb = oa.state_dict(), ob.state_dict()
    assert all(np.array_equal(sa["state"][k], sb["state"][k]) for k in sa["state"])
    with pytest.raises(ValueError, match="sizes"):
        make([np.zeros(3, np.float32)], [np.zeros(3, np.float32)]).load_state_dict(sd)


@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_sharded_steps_equal_unsharded(rng, dtype):
    n = 50_021
    p0 = rng.standard_normal(n).astype(dtype)
    gseq = [rng.standard_normal(n).astype(dtype) for _ in range(4)]
    full_p, full_g = p0.copy(), np.zeros_like(p0)
    full = AdamW(full_p, full_g, lr=1e-2, max_grad_norm=10.0, stochastic_rounding=True, seed=3)
    sp, sg = p0.copy(), np.zeros_like(p0)
    bounds = [(0, 17_000), (17_000, 17_001), (17_001, n)]
    shards = [AdamW(sp, sg, lr=1e-2, max_grad_norm=10.0, stochastic_rounding=True, seed=3, shard=b) for b in bounds]
    for (b, e), s in zip(bounds, shards):
        assert s.state_dict()["state"]["exp_avg"].shape == (e - b,)
    for g in gseq:
        full_g[...] = g
        sg[...] = g
        r = full.step()
        # distributed style: the global norm is the (all-)reduced sum of the shards' squares
        sq = sum(s.grad_sq_norm() for s in shards)
        assert sq == pytest.approx(full.grad_sq_norm(), rel=1e-12)
        for s in shards:
            rs = s.step(grad_norm=math.sqrt(full.grad_sq_norm()))
            assert rs.clip_coef == r.clip_coef
    assert np.array_equal(full_p.view(np.uint8), sp.view(np.uint8))


def _trajectory(kind: str, steps: int = 6):
    rng = np.random.default_rng(5)
    shapes = [(1000, 37), (5,), (4097,), (16,)]
    dt = BF16 if kind.endswith("bf16") else np.float32
    ps = [rng.standard_normal(s).astype(dt) for s in shapes]
    gs = [np.zeros(s, dt) for s in shapes]
    make = {"adamw": lambda: AdamW(ps, gs, lr=1e-2, max_grad_norm=30.0),
            "adamw-bf16": lambda: AdamW(ps, gs, lr=1e-2, stochastic_rounding=True),
            "lion": lambda: Lion(ps, gs, lr=1e-3, weight_decay=0.1),
            "sgd-bf16": lambda: SGD(ps, gs, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)}[kind]
    opt = make()
    norms = []
    for _ in range(steps):
        for g in gs:
            g[...] = rng.standard_normal(g.shape).astype(dt)
        norms.append(opt.step().grad_norm)
    return [p.view(np.uint8).copy() for p in ps], norms, opt.state_dict()["state"]


@pytest.mark.parametrize("kind", ["adamw", "adamw-bf16", "lion", "sgd-bf16"])
def test_isa_and_thread_count_do_not_change_results(kind, restore_threads):
    base = _trajectory(kind)
    variants = []
    for isa in ("avx2", "scalar"):
        _core.set_isa_limit(isa)
        variants.append(_trajectory(kind))
    _core.set_isa_limit("avx512_bf16")
    homeforge.set_num_threads(1)
    variants.append(_trajectory(kind))
    homeforge.set_num_threads(3)
    variants.append(_trajectory(kind))
    _core.set_serial_backend(True)
    variants.append(_trajectory(kind))
    for ps, norms, state in variants:
        assert all(np.array_equal(a, b) for a, b in zip(ps, base[0]))
        assert norms == base[1]
        assert all(np.array_equal(state[k], base[2][k]) for k in state)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=40), seed=st.integers(0, 2**16))
def test_segment_table_equals_independent_steps(sizes, seed):
    """Many tensors in one fused step (chunks spanning segments) == each tensor stepped alone."""
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    gs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    together = [p.copy() for p in ps]
    opt = AdamW(together, [g.copy() for g in gs], lr=1e-2)
    r = opt.step(skip_nonfinite=False)
    for _ in range(2):
        opt.step()
    expect_sq = sum(float((g.astype(np.float64) ** 2).sum()) for g in gs)
    assert r.grad_norm == pytest.approx(math.sqrt(expect_sq), rel=1e-12, abs=1e-300)
    for p, g, t in zip(ps, gs, together):
        alone = p.copy()
        o = AdamW([alone], [g.copy()], lr=1e-2)
        for _ in range(3):
            o.step()
        assert np.array_equal(alone, t)


def test_bad_input_names_the_problem():
    p = np.zeros((4, 3), np.float32)
    g = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        AdamW([p], [np.zeros((3, 4), np.float32)])
    with pytest.raises(ValueError, match="dtype"):
        AdamW([p], [np.zeros((4, 3), BF16)])
    with pytest.raises(ValueError, match="dtype"):
        AdamW([p.astype(np.float64)], [g.astype(np.float64)])
    with pytest.raises(ValueError, match="lr must be >= 0"):
        AdamW([p], [g], lr=-1.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        AdamW([p], [g], eps=-1e-8)
    with pytest.raises(ValueError, match="lr is NaN"):
        AdamW([p], [g], lr=float("nan"))
    with pytest.raises(ValueError, match=r"betas\[1\] is NaN"):
        Lion([p], [g], betas=(0.9, float("nan")))
    with pytest.raises(ValueError, match="weight_decay is NaN"):
        SGD([p], [g], weight_decay=float("nan"))
    with pytest.raises(ValueError, match="nesterov"):
        SGD([p], [g], nesterov=True)
    with pytest.raises(ValueError, match="C-contiguous"):
        AdamW([p.T], [g.T])
    ro = p.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        AdamW([ro], [g])
    with pytest.raises(ValueError, match="empty"):
        AdamW([], [])
    with pytest.raises(ValueError, match="grads are required"):
        AdamW([p])
    with pytest.raises(ValueError, match="grads for"):
        AdamW([p, p.copy()], [g])
    with pytest.raises(ValueError, match=r"params\[1\] overlaps the memory of params\[0\]"):
        AdamW([p, p], [g, g.copy()])
    with pytest.raises(ValueError, match="single flat"):
        AdamW([p], [g], shard=(0, 2))
    with pytest.raises(ValueError, match="not a slice"):
        AdamW(np.zeros(10, np.float32), np.zeros(10, np.float32), shard=(4, 11))
    with pytest.raises(ValueError, match="unknown parameter-group keys"):
        AdamW([{"params": [p], "grads": [g], "momentum": 0.9}])
    opt = AdamW([p], [g])
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.step(lr=-0.1)
    with pytest.raises(ValueError, match="grad_scale is NaN"):
        opt.step(grad_scale=float("nan"))
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        opt.step(max_grad_norm=0.0)
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match=r"param_groups\[0\]: lr is NaN"):
        opt.step()
    with pytest.raises(TypeError, match="numpy array"):
        AdamW([[1.0, 2.0]], [[1.0, 2.0]])


def test_norm_pass_and_fused_norm_agree_bitwise(rng, restore_threads):
    """The standalone norm pass (parallel_reduce_deterministic) and the norm accumulated inside the
    update pass use the same 16 float64 lanes per chunk and the same combine tree."""
    sizes = [70_000, 3, 16_384, 999, 40_000]
    ps = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    gs = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    for threads in (1, 2):
        homeforge.set_num_threads(threads)
        opt = AdamW([p.copy() for p in ps], gs)
        pre = math.sqrt(opt.grad_sq_norm())
        assert opt.step(skip_nonfinite=False).grad_norm == pre  # fused accumulation
        assert opt.step().grad_norm == pre  # separate norm pass
    exact = math.sqrt(math.fsum(float(x) * float(x) for g in gs for x in g.astype(np.float64)))
    assert pre == pytest.approx(exact, rel=1e-13)


def test_stochastic_rounding_counter_across_2_32_boundary():
    """The rounding noise of element i is hash(i, seed, step) for the GLOBAL index i, also where a
    piece crosses a multiple of 2^32 (the plan splits it there); checked element by element."""
    h = _core._optim_hash32
    n, base = 1000, 2**32 - 300
    rng = np.random.default_rng(9)
    p = rng.standard_normal(n).astype(BF16).view(np.uint16)
    g = rng.standard_normal(n).astype(BF16).view(np.uint16)
    master = p.view(BF16).astype(np.float32)
    m = np.zeros(n, np.float32)
    steps = np.zeros(1, np.int64)
    plan = _core._OptimPlan("sgd", [p], [0], m, None, master, steps, base)
    plan.set_grads([g])
    key = 0x1234567
    expect_master = master + np.float32(-0.1) * g.view(BF16).astype(np.float32)
    plan.step([(0.1, 0.0, 0.0, 0.0, 0.0, False)], 1.0, True, key, False)
    assert np.array_equal(master, expect_master) and steps[0] == 0  # SGD counts momentum steps only
    bits = expect_master.view(np.uint32)
    for i in range(n):
        idx = base + i
        k2 = h((((idx >> 32) * 0x9E3779B9) & 0xFFFFFFFF) ^ key)
        r = h((idx & 0xFFFFFFFF) ^ k2)
        assert p[i] == (int(bits[i]) + (r & 0xFFFF)) >> 16, i


def test_sgd_without_momentum_keeps_no_buffer():
    p, g = np.ones(10, np.float32), np.ones(10, np.float32)
    opt = SGD(p, g, lr=0.1)
    assert "exp_avg" not in opt.state_dict()["state"]
    opt.step()
    opt.param_groups[0]["momentum"] = 0.9  # turning momentum on later needs a new optimizer
    with pytest.raises(ValueError, match="without a momentum buffer"):
        opt.step()


def test_sgd_momentum_switched_on_later_matches_torch():
    """torch starts the buffer at the first step WITH momentum (undamped), whatever came before."""
    q, g = np.ones(3, np.float32), np.ones(3, np.float32)
    opt2 = SGD([q], [g], lr=0.1, momentum=0.9, dampening=0.5)  # built with a buffer
    w = torch.nn.Parameter(torch.ones(3))
    ref = torch.optim.SGD([w], lr=0.1, momentum=0.0, dampening=0.5)
    w.grad = torch.ones(3)
    for t in range(4):
        mom = 0.0 if t < 2 else 0.9
        opt2.param_groups[0]["momentum"] = mom
        ref.param_groups[0]["momentum"] = mom
        opt2.step()
        ref.step()
        np.testing.assert_allclose(q, w.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(opt2.state_dict()["state"]["exp_avg"], ref.state[w]["momentum_buffer"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("sr", [False, True])
def test_bf16_param_edited_in_place_reseeds_master(sr):
    """An in-place edit of a bf16 param after a step is what the next step starts from (as for
    float32 params and torch): the master follows the edited param instead of overwriting it."""
    p, g = np.ones(40, np.float32).astype(BF16), np.full(40, 0.5, np.float32).astype(BF16)
    opt = AdamW([p], [g], lr=0.01, weight_decay=0.0, stochastic_rounding=sr)
    opt.step()
    p[:20] = BF16(5.0)
    opt.step()
    # AdamW's second step with a constant gradient moves by lr (to 1 ulp of bf16 at 5: 0.03125)
    np.testing.assert_allclose(p[:20].astype(np.float64), 5.0 - 0.01, atol=0.032)
    np.testing.assert_allclose(p[20:].astype(np.float64), 1.0 - 0.02, atol=0.008)
    np.testing.assert_allclose(opt.state_dict()["state"]["master"][:20], 5.0 - 0.01, rtol=1e-6)


def _adamw_sd():
    x = AdamW([np.ones(6, np.float32)], [np.ones(6, np.float32)], lr=0.1)
    x.step()
    return x, x.state_dict()


@pytest.mark.parametrize("edit,exc,match", [
    (lambda sd: sd.update(max_grad_norm=-1.0), ValueError, "max_grad_norm must be > 0"),
    (lambda sd: sd.update(max_grad_norm=float("nan")), ValueError, "max_grad_norm is NaN"),
    (lambda sd: sd["param_groups"][0].update(lr=-0.1), ValueError, "lr must be >= 0"),
    (lambda sd: sd["param_groups"][0].update(betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be in \[0, 1\)"),
    (lambda sd: sd["param_groups"][0].pop("eps"), ValueError, "lacks"),
    (lambda sd: sd.update(step_count=-3), ValueError, "step_count must be >= 0"),
    (lambda sd: sd.update(step_count=1.5), TypeError, "step_count must be an integer"),
    (lambda sd: sd.update(stochastic_rounding="yes"), TypeError, "stochastic_rounding must be a bool"),
    (lambda sd: sd["state"].update(steps=np.array([1.5])), ValueError, "steps must be non-negative integers"),
    (lambda sd: sd["state"].update(steps=np.array([-1])), ValueError, "steps must be non-negative integers"),
    (lambda sd: sd["state"].pop("exp_avg_sq"), ValueError, "has no 'exp_avg_sq'"),
    (lambda sd: sd["state"].update(exp_avg=np.array(["a"] * 6)), TypeError, "exp_avg must be floating point"),
])
def test_load_state_dict_validates_like_the_constructor(edit, exc, match):
    x, sd = _adamw_sd()
    before = (x.state_dict(), x.max_grad_norm, x.step_count)
    edit(sd)
    with pytest.raises(exc, match=match):
        x.load_state_dict(sd)
    after = x.state_dict()  # a rejected state_dict changes nothing
    assert (x.max_grad_norm, x.step_count) == before[1:] and after["param_groups"] == before[0]["param_groups"]
    for k, a in before[0]["state"].items():
        np.testing.assert_array_equal(after["state"][k], a)


def test_load_state_dict_float_steps_with_integral_values_load():
    x, sd = _adamw_sd()
    sd["state"]["steps"] = sd["state"]["steps"].astype(np.float64)
    x.load_state_dict(sd)
    assert x.state_dict()["state"]["steps"].dtype == np.int64


def test_sgd_state_dicts_with_and_without_momentum():
    """A state without momentum buffer loads into a momentum SGD as torch's does (the buffer starts at
    the first step with momentum); the other way round needs a buffer this SGD does not have."""
    def make(mom):
        return SGD([np.ones(3, np.float32)], [np.ones(3, np.float32)], lr=0.1, momentum=mom)

    plain, mom = make(0.0), make(0.9)
    plain.step()
    mom.load_state_dict(plain.state_dict())  # groups now say momentum 0, as torch's load would
    mom.param_groups[0]["momentum"] = 0.9
    mom.step()
    mom.step()
    w = torch.nn.Parameter(torch.ones(3))
    ref = torch.optim.SGD([w], lr=0.1)
    w.grad = torch.ones(3)
    ref.step()
    w2 = torch.nn.Parameter(torch.ones(3))  # mom's own param, never stepped by plain
    w2.grad = torch.ones(3)
    ref2 = torch.optim.SGD([w2], lr=0.1, momentum=0.9)
    ref2.load_state_dict(ref.state_dict())
    ref2.param_groups[0]["momentum"] = 0.9
    ref2.step()
    ref2.step()
    np.testing.assert_allclose(mom.param_groups[0]["params"][0], w2.detach().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="built without a momentum buffer"):
        make(0.0).load_state_dict(make(0.9).state_dict())


@pytest.mark.parametrize("make,match", [
    (lambda w, g: SGD([w, w[:]], [g, g], lr=0.1), r"params\[1\] overlaps the memory of params\[0\]"),
    (lambda w, g: SGD([w[0:4], w[2:6]], [g[:4], g[2:]], lr=0.1), r"params\[1\] overlaps"),
    (lambda w, g: SGD([w[::2], w[1::2]], [g[::2], g[1::2]], lr=0.1), r"must be C-contiguous"),  # the fix to name
    (lambda w, g: SGD([w], [w], lr=0.1), r"grads\[0\] overlaps the memory of params\[0\]"),
    (lambda w, g: SGD([w[:3], g[:3]], [w[3:], w[1:4]], lr=0.1), "a grad may not alias a param"),
    (lambda w, g: SGD([{"params": [w[:3]], "grads": [g[:3]]}, {"params": [w[2:5]], "grads": [g[2:5]]}]),
     r"params\[1\] overlaps"),
])
def test_overlapping_memory_is_rejected(make, match):
    """torch.optim would step a shared element twice (or read a grad it has just written): refused."""
    w, g = np.ones(6, np.float32), np.ones(6, np.float32)
    with pytest.raises(ValueError, match=match):
        make(w, g)
    np.testing.assert_array_equal(w, 1.0)


def test_shared_read_only_grads_and_adjacent_views_are_fine():
    w, g = np.ones(6, np.float32), np.ones(3, np.float32)
    opt = SGD([w[:3], w[3:]], [g, g], lr=0.1)  # a grad shared by two params is only read
    opt.step()
    np.testing.assert_allclose(w, 0.9)


@pytest.mark.parametrize("scale", [1e40, -1e39])
def test_grad_scale_beyond_float32_is_a_clear_error(scale):
    p = np.ones(3, np.float32)
    opt = SGD(p, np.ones(3, np.float32), lr=0.1)
    for kw in (dict(), dict(skip_nonfinite=False)):
        with pytest.raises(ValueError, match="overflows float32"):  # and no RuntimeWarning (an error here)
            opt.step(grad_scale=scale, **kw)
    np.testing.assert_array_equal(p, 1.0)
