"""Fused attention (homeforge.ops.attention / attention_backward) against a float64 numpy reference.

The grid of the issue -- B in {1, 3}; T, S in {1, 7, 64, 257, 1000}; (H, Hkv) in {(4, 4), (8, 2),
(6, 1)}; D in {32, 64, 80, 128}; causal and not -- for float32 and bfloat16: the max abs error of
each of out, lse, dq, dk, dv must stay within 2x the error of torch's own CPU flash attention
(aten::_scaled_dot_product_flash_attention_for_cpu and its backward, the kernels behind
torch.nn.functional.scaled_dot_product_attention) at the same dtype, plus a floor of 16 float32
ulps of max(1, the reference's magnitude) (so that a torch error of exactly 0, e.g. T = S = 1,
does not demand exactly 0 of us). GQA grads of torch are summed over the group in torch's dtype,
as its enable_gqa autograd does.

Cost: one case draws inputs for B = 3, computes the reference, torch and ours once per dtype, and
checks B = 1 on the first batch entry (the reference and torch are per-batch independent, so their
B = 1 results are slices). Inputs are bf16-representable so that one float64 reference serves both
dtypes.
"""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

from attention_reference import reference
from homeforge import ops

torch = pytest.importorskip("torch", reason="torch is the peer whose error bounds ours")

SIZES = (1, 7, 64, 257, 1000)
HEADS = ((4, 4), (8, 2), (6, 1))
DIMS = (32, 64, 80, 128)
CASES = list(itertools.product(SIZES, SIZES, HEADS, DIMS, (True, False)))
NAMES = ("out", "lse", "dq", "dk", "dv")
FLOOR = 16 * 2.0**-24  # float32 ulps, times max(1, the reference's magnitude)


def _torch_flash(q, k, v, dout, causal, tdtype):
    """torch's CPU flash kernels on (B, T, H, D) numpy inputs -> float64 (out, lse, dq, dk, dv)."""
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    G = H // Hkv
    t0 = 0
    if causal and T > S:  # queries before T - S see no key: out 0, lse -inf, zero grads (exact)
        t0 = T - S
    tq = torch.from_numpy(q[:, t0:].astype(np.float32)).to(tdtype).transpose(1, 2)
    tdo = torch.from_numpy(dout[:, t0:].astype(np.float32)).to(tdtype).transpose(1, 2)
    tk = torch.from_numpy(k.astype(np.float32)).to(tdtype).transpose(1, 2).repeat_interleave(G, dim=1)
    tv = torch.from_numpy(v.astype(np.float32)).to(tdtype).transpose(1, 2).repeat_interleave(G, dim=1)
    Tq = T - t0
    mask, is_causal = None, False
    if causal and Tq == S:
        is_causal = True
    elif causal:  # T < S: last query aligned with the last key, as in our convention
        allowed = np.arange(S)[None, :] <= np.arange(Tq)[:, None] + (S - Tq)
        mask = torch.from_numpy(np.where(allowed, 0.0, -np.inf).astype(np.float32)).to(tdtype)
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(tq, tk, tv, 0.0, is_causal, attn_mask=mask)
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        tdo, tq, tk, tv, o, lse, 0.0, is_causal, attn_mask=mask)
    f64 = lambda t: t.float().numpy().astype(np.float64)  # noqa: E731
    out = np.zeros((B, T, H, D))
    out[:, t0:] = f64(o).transpose(0, 2, 1, 3)
    lse_full = np.full((B, H, T), -np.inf)
    lse_full[:, :, t0:] = f64(lse)
    dq_full = np.zeros((B, T, H, D))
    dq_full[:, t0:] = f64(dq).transpose(0, 2, 1, 3)
    # GQA: the sum over the sharing heads in torch's dtype, as its enable_gqa autograd does.
    dk_sum = f64(dk.reshape(B, Hkv, G, S, D).sum(2)).transpose(0, 2, 1, 3)
    dv_sum = f64(dv.reshape(B, Hkv, G, S, D).sum(2)).transpose(0, 2, 1, 3)
    return out, lse_full, dq_full, dk_sum, dv_sum


def _errors(got, ref):
    """Max abs error of each tensor; lse's -inf entries must match exactly."""
    errs = []
    for name, g, r in zip(NAMES, got, ref):
        g = np.asarray(g, dtype=np.float64)
        if name == "lse":
            inf = np.isneginf(r)
            assert np.array_equal(np.isneginf(g), inf), "lse: rows that see no key must be -inf, and only those"
            g, r = g[~inf], r[~inf]
        assert np.all(np.isfinite(g)), f"{name} has non-finite values"
        errs.append(float(np.abs(g - r).max()) if g.size else 0.0)
    return errs


def _ours(q, k, v, dout, causal):
    out, lse = ops.attention(q, k, v, causal=causal)
    dq, dk, dv = ops.attention_backward(dout, q, k, v, out, lse, causal=causal)
    return [a.astype(np.float32) if a.dtype == ml_dtypes.bfloat16 else a for a in (out, lse, dq, dk, dv)]


def check_case(T, S, heads, D, causal, batches=(3, 1)):
    H, Hkv = heads
    rng = np.random.default_rng(hash((T, S, H, D, causal)) % 2**32)
    bf = ml_dtypes.bfloat16
    draw = lambda *shape: rng.standard_normal(shape, dtype=np.float32).astype(bf)  # noqa: E731
    nb = max(batches)
    q, k, v, dout = draw(nb, T, H, D), draw(nb, S, Hkv, D), draw(nb, S, Hkv, D), draw(nb, T, H, D)
    ref = reference(q, k, v, dout, causal=causal)
    report = []
    for np_dtype, tdtype in ((np.float32, torch.float32), (bf, torch.bfloat16)):
        args = [a.astype(np_dtype) for a in (q, k, v, dout)]
        peer = _torch_flash(*args, causal, tdtype)
        for B in batches:
            ours = _ours(*(a[:B] for a in args), causal)
            ref_b = [r[:B] for r in ref]
            e_ours = _errors(ours, ref_b)
            e_torch = _errors([p[:B] for p in peer], ref_b)
            for name, eo, et, r in zip(NAMES, e_ours, e_torch, ref_b):
                mag = float(np.abs(r[np.isfinite(r)]).max()) if np.isfinite(r).any() else 0.0
                bound = 2 * et + FLOOR * max(mag, 1.0)
                report.append((np_dtype.__name__ if np_dtype is np.float32 else "bfloat16", B, name, eo, et, bound))
    return report


@pytest.mark.parametrize("T,S,heads,D,causal", CASES,
                         ids=[f"T{t}-S{s}-H{h[0]}x{h[1]}-D{d}-{'causal' if c else 'full'}" for t, s, h, d, c in CASES])
def test_grid_within_twice_torch_error(T, S, heads, D, causal):
    report = check_case(T, S, heads, D, causal)
    bad = [r for r in report if not r[3] <= r[5]]
    assert not bad, "error above 2x torch's: " + "; ".join(
        f"{dt} B={B} {name}: ours {eo:.3g} torch {et:.3g} bound {bd:.3g}" for dt, B, name, eo, et, bd in bad)


# Short sequences as the model trains them (the nano preset: B = 4, T = 256, 12 heads, no GQA): B = 4
# takes the one-pass backward on 2 threads; the causal diagonal pairs run as row runs of 16/32/48
# keys (row_runs in csrc/attention/attention_impl.inc). T = 200 and S = T + 37 put the diagonal off
# the 16- and 64-key grid; G = 3 makes the bf16 row pairs straddle positions.
SHORT = [(T, S, heads, D, T != 200 or S != 200)  # (200, 200): not causal
         for T, S in ((128, 128), (256, 256), (200, 237), (200, 200))
         for heads in ((12, 12), (6, 3))
         for D in (64, 128)]


@pytest.mark.parametrize("T,S,heads,D,causal", SHORT,
                         ids=[f"T{t}-S{s}-H{h[0]}x{h[1]}-D{d}-{'causal' if c else 'full'}" for t, s, h, d, c in SHORT])
def test_short_sequences_within_twice_torch_error(T, S, heads, D, causal):
    report = check_case(T, S, heads, D, causal, batches=(4,))
    bad = [r for r in report if not r[3] <= r[5]]
    assert not bad, "error above 2x torch's: " + "; ".join(
        f"{dt} B={B} {name}: ours {eo:.3g} torch {et:.3g} bound {bd:.3g}" for dt, B, name, eo, et, bd in bad)
