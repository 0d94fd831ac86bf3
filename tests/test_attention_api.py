"""Fused attention: ISA fallbacks, threading, GQA/causal properties, the torch drop-in, bad input.

References are the float64 numpy reference (tests/attention_reference.py) and torch's own
scaled_dot_product_attention through torch.autograd.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_reference import reference
from homeforge import _core, ops

NAMES = ("out", "lse", "dq", "dk", "dv")


def _draw(rng, B, T, S, H, Hkv, D, dtype=np.float32):
    d = lambda *s: rng.standard_normal(s, dtype=np.float32).astype(dtype)  # noqa: E731
    return d(B, T, H, D), d(B, S, Hkv, D), d(B, S, Hkv, D), d(B, T, H, D)


def _run(q, k, v, dout, causal, scale=None):
    out, lse = ops.attention(q, k, v, causal=causal, scale=scale)
    return (out, lse, *ops.attention_backward(dout, q, k, v, out, lse, causal=causal, scale=scale))


def _assert_close(got, ref, tol):
    for name, g, r in zip(NAMES, got, ref):
        g = np.asarray(g, dtype=np.float64)
        fin = np.isfinite(r)
        assert np.array_equal(np.isfinite(g), fin), f"{name}: non-finite pattern differs"
        err = np.abs(g[fin] - r[fin]).max() if fin.any() else 0.0
        assert err <= tol * max(1.0, np.abs(r[fin]).max() if fin.any() else 0.0), f"{name}: max abs err {err:.3g}"


SHAPES = [  # (B, T, S, H, Hkv, D, causal): odd sizes, T != S both ways, GQA, MQA, D = 96 and odd D
    (2, 70, 70, 4, 2, 96, True),
    (1, 33, 140, 6, 1, 64, True),
    (1, 140, 33, 4, 4, 32, True),
    (2, 65, 129, 8, 2, 80, False),
    (1, 9, 9, 3, 3, 33, True),
    (1, 5, 200, 2, 1, 200, False),
    (4, 256, 256, 12, 12, 64, True),  # the nano model's shape (short T, no GQA): diagonal row runs
    (2, 200, 237, 6, 3, 128, True),   # diagonal off the 16/64-key grid, odd G (bf16 row pairs)
]


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "avx512_bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-S{}-H{}x{}-D{}-{}".format(*s))
def test_every_isa_matches_float64(isa, shape, restore_threads):
    _core.set_isa_limit(isa)
    B, T, S, H, Hkv, D, causal = shape
    rng = np.random.default_rng(7)
    q, k, v, dout = _draw(rng, B, T, S, H, Hkv, D)
    ref = reference(q, k, v, dout, causal=causal)
    _assert_close(_run(q, k, v, dout, causal), ref, 2e-5)
    qb, kb, vb, db = (a.astype(ml_dtypes.bfloat16) for a in (q, k, v, dout))
    ref_b = reference(qb, kb, vb, db, causal=causal)
    _assert_close(_run(qb, kb, vb, db, causal), ref_b, 3e-2)


@pytest.mark.parametrize("B,Hkv", [(1, 1), (3, 1), (2, 2)])
def test_results_do_not_depend_on_threads(B, Hkv, restore_threads):
    # 1 thread and 2 threads pick different backward schedules (one pass / two passes) when the
    # B * Hkv items do not balance; both must agree with the reference, and the forward is bitwise
    # the same for any thread count.
    rng = np.random.default_rng(3)
    q, k, v, dout = _draw(rng, B, 150, 150, 4, Hkv, 64)
    ref = reference(q, k, v, dout, causal=True)
    results = []
    for n in (1, 2, 3):
        _core.set_num_threads(n)
        got = _run(q, k, v, dout, True)
        _assert_close(got, ref, 2e-5)
        results.append(got)
    for other in results[1:]:
        assert np.array_equal(results[0][0], other[0]) and np.array_equal(results[0][1], other[1])
    _core.set_serial_backend(True)
    serial = _run(q, k, v, dout, True)
    assert np.array_equal(serial[0], results[0][0])


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 2), T=st.integers(1, 80), S=st.integers(1, 80), Hkv=st.integers(1, 3), G=st.integers(1, 3),
       D=st.integers(1, 72), causal=st.booleans(), scale=st.one_of(st.none(), st.floats(0.05, 2.0)))
def test_property_random_shapes(B, T, S, Hkv, G, D, causal, scale):
    rng = np.random.default_rng(T * 1000 + S)
    q, k, v, dout = _draw(rng, B, T, S, Hkv * G, Hkv, D)
    _assert_close(_run(q, k, v, dout, causal, scale), reference(q, k, v, dout, causal=causal, scale=scale), 3e-5)


def test_mha_gqa_mqa_agree_with_repeated_heads():
    # GQA with kv heads repeated by hand must equal MHA on the repeated tensors; dk/dv sum the group.
    rng = np.random.default_rng(11)
    q, k, v, dout = _draw(rng, 2, 40, 40, 6, 2, 32)
    g = _run(q, k, v, dout, True)
    kr, vr = np.repeat(k, 3, axis=2), np.repeat(v, 3, axis=2)
    m = _run(q, kr, vr, dout, True)
    np.testing.assert_allclose(g[0], m[0], atol=1e-6)
    np.testing.assert_allclose(g[2], m[2], atol=1e-5)
    np.testing.assert_allclose(g[3], m[3].reshape(2, 40, 2, 3, 32).sum(3), atol=1e-5)


def test_causal_rows_that_see_nothing():
    # T > S with the last query aligned to the last key: the first T - S queries see no key.
    rng = np.random.default_rng(5)
    q, k, v, dout = _draw(rng, 1, 10, 4, 2, 2, 16)
    out, lse, dq, dk, dv = _run(q, k, v, dout, True)
    assert np.all(out[:, :6] == 0) and np.all(np.isneginf(lse[:, :, :6])) and np.all(dq[:, :6] == 0)
    assert np.all(np.isfinite(lse[:, :, 6:]))
    np.testing.assert_allclose(out[0, 6, 0], v[0, 0, 0], atol=1e-6)  # query 6 sees key 0 only


def test_uint16_view_is_bfloat16():
    rng = np.random.default_rng(2)
    q, k, v, dout = _draw(rng, 1, 20, 20, 2, 1, 32, ml_dtypes.bfloat16)
    a = _run(q, k, v, dout, True)
    b = _run(*(x.view(np.uint16) for x in (q, k, v, dout)), True)
    assert b[0].dtype == np.uint16
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))


# ---- bad input -------------------------------------------------------------------------------------

def _good():
    z = np.zeros
    return z((2, 5, 4, 8), np.float32), z((2, 6, 2, 8), np.float32), z((2, 6, 2, 8), np.float32)


def test_bad_shapes_raise_value_error_with_shapes():
    q, k, v = _good()
    with pytest.raises(ValueError, match=r"H=4.*Hkv=3.*\(2, 5, 4, 8\)"):
        ops.attention(q, np.zeros((2, 6, 3, 8), np.float32), np.zeros((2, 6, 3, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 6, 2, 8\).*\(2, 7, 2, 8\)"):
        ops.attention(q, k, np.zeros((2, 7, 2, 8), np.float32))
    with pytest.raises(ValueError, match=r"q's B and D.*\(2, 5, 4, 8\).*\(2, 6, 2, 16\)"):
        ops.attention(q, np.zeros((2, 6, 2, 16), np.float32), np.zeros((2, 6, 2, 16), np.float32))
    with pytest.raises(ValueError, match=r"4-D.*\(5, 4, 8\)"):
        ops.attention(q[0], k, v)
    with pytest.raises(ValueError, match=r"empty.*\(2, 0, 4, 8\)"):
        ops.attention(np.zeros((2, 0, 4, 8), np.float32), k, v)
    with pytest.raises(ValueError, match=r"empty"):
        ops.attention(q, np.zeros((2, 0, 2, 8), np.float32), np.zeros((2, 0, 2, 8), np.float32))


def test_bad_dtypes_and_strides():
    q, k, v = _good()
    with pytest.raises(TypeError, match="float64"):
        ops.attention(q.astype(np.float64), k, v)
    with pytest.raises(TypeError, match="one dtype"):
        ops.attention(q, k.astype(ml_dtypes.bfloat16), v)
    with pytest.raises(TypeError, match="int32"):
        ops.attention(q.astype(np.int32), k, v)
    with pytest.raises(TypeError, match="numpy array"):
        ops.attention(q.tolist(), k, v)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.attention(np.zeros((2, 4, 5, 8), np.float32).transpose(0, 2, 1, 3), k, v)
    with pytest.raises(ValueError, match="scale"):
        ops.attention(q, k, v, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        ops.attention(q, k, v, scale=float("nan"))
    with pytest.raises(TypeError, match="scale"):
        ops.attention(q, k, v, scale="1")


def test_bad_backward_inputs():
    q, k, v = _good()
    out, lse = ops.attention(q, k, v)
    with pytest.raises(ValueError, match=r"lse must be \(B, H, T\) = \(2, 4, 5\).*\(2, 5, 4\)"):
        ops.attention_backward(out, q, k, v, out, np.zeros((2, 5, 4), np.float32))
    with pytest.raises(TypeError, match="lse must be float32"):
        ops.attention_backward(out, q, k, v, out, lse.astype(np.float64))
    with pytest.raises(ValueError, match=r"dout must have q's shape \(2, 5, 4, 8\), got \(2, 5, 4, 7\)"):
        ops.attention_backward(np.zeros((2, 5, 4, 7), np.float32), q, k, v, out, lse)
    with pytest.raises(TypeError, match="out must have q's dtype"):
        ops.attention_backward(out, q, k, v, out.astype(ml_dtypes.bfloat16), lse)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.attention_backward(out, q, k, v, np.asfortranarray(out), lse)


# ---- the torch drop-in ------------------------------------------------------------------------------

def _torch_grads(fn, q, k, v, dout, **kw):
    import torch

    xs = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*xs, **kw)
    grads = torch.autograd.grad(out, xs, dout)
    return [out.detach(), *grads]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("B,H,Hkv,T,S,D,causal,scale", [
    (2, 8, 2, 100, 100, 64, True, None),
    (1, 4, 4, 33, 70, 80, False, 0.3),
    (3, 6, 1, 64, 64, 128, True, None),
])
def test_torch_drop_in_matches_torch_sdpa_autograd(dtype, B, H, Hkv, T, S, D, causal, scale):
    torch = pytest.importorskip("torch")
    from homeforge.torch import scaled_dot_product_attention as hf_sdpa

    g = torch.Generator().manual_seed(0)
    tdt = getattr(torch, dtype)
    q = torch.randn(B, H, T, D, generator=g).to(tdt)
    k = torch.randn(B, Hkv, S, D, generator=g).to(tdt)
    v = torch.randn(B, Hkv, S, D, generator=g).to(tdt)
    dout = torch.randn(B, H, T, D, generator=g).to(tdt)
    kw = dict(is_causal=causal, scale=scale, enable_gqa=Hkv != H)
    ours = _torch_grads(hf_sdpa, q, k, v, dout, **kw)
    theirs = _torch_grads(torch.nn.functional.scaled_dot_product_attention, q, k, v, dout, **kw)
    # Both against float64 torch: ours within 2x torch's own error (+ a float32-ulp floor).
    exact = _torch_grads(torch.nn.functional.scaled_dot_product_attention, q.double(), k.double(), v.double(),
                         dout.double(), **kw)
    for name, a, b, e in zip(("out", "dq", "dk", "dv"), ours, theirs, exact):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        err_a = (a.double() - e).abs().max().item()
        err_b = (b.double() - e).abs().max().item()
        assert err_a <= 2 * err_b + 1e-6 * max(1.0, e.abs().max().item()), f"{name}: ours {err_a:.3g} torch {err_b:.3g}"


def test_torch_drop_in_zero_copy_for_transposed_views():
    torch = pytest.importorskip("torch")
    from homeforge.torch import scaled_dot_product_attention as hf_sdpa

    x = torch.randn(2, 16, 4, 32)                 # (B, T, H, D) memory, as a model has it
    q = x.transpose(1, 2)                         # (B, H, T, D) view
    out = hf_sdpa(q, q, q, is_causal=True)
    # The output is a (B, H, T, D) view of (B, T, H, D) memory: transposing back is contiguous.
    assert out.transpose(1, 2).is_contiguous()
    ref = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_torch_drop_in_bad_input():
    torch = pytest.importorskip("torch")
    from homeforge.torch import scaled_dot_product_attention as hf_sdpa

    q = torch.randn(1, 4, 8, 16)
    kv = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="enable_gqa"):
        hf_sdpa(q, kv, kv)
    with pytest.raises(TypeError, match="float32 or bfloat16"):
        hf_sdpa(q.double(), q.double(), q.double())
    with pytest.raises(ValueError, match="T=8 != S=5"):
        hf_sdpa(q, q[:, :, :5], q[:, :, :5], is_causal=True)
    with pytest.raises(ValueError, match="4-D"):
        hf_sdpa(q[0], q[0], q[0])


@pytest.mark.parametrize("qs,ks,kw,match", [
    ((1, 4, 4, 8), (1, 3, 4, 8), dict(enable_gqa=True), "4 heads must be a multiple of key's 3"),
    ((2, 2, 4, 8), (1, 2, 4, 8), {}, "one batch size B"),
    ((1, 2, 4, 8), (1, 2, 4, 6), {}, "one head dim D"),
    ((1, 2, 0, 8), (1, 2, 4, 8), {}, "empty dimension"),
    ((1, 2, 4, 0), (1, 2, 4, 0), {}, "empty dimension"),
])
def test_torch_drop_in_errors_show_the_callers_shapes(qs, ks, kw, match):
    """Messages give the (B, H, T, D) shapes the caller passed, not the kernel's (B, T, H, D)."""
    torch = pytest.importorskip("torch")
    from homeforge.torch import scaled_dot_product_attention as hf_sdpa

    with pytest.raises(ValueError, match=match) as e:
        hf_sdpa(torch.randn(*qs), torch.randn(*ks), torch.randn(*ks), **kw)
    assert f"query {qs}, key {ks}" in str(e.value)


def test_import_homeforge_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, homeforge, homeforge.ops; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _visible_keys_reference(q, k, v, dout, causal):
    """float64 torch autograd over exactly the keys each query row sees (B = H = 1): the NaN pattern
    of softmax(q k^T / sqrt(D)) v and its grads, with masked keys never entering any product."""
    torch = pytest.importorskip("torch")
    t = [torch.tensor(np.asarray(a, np.float64)[0, :, 0], requires_grad=True) for a in (q, k, v)]
    T, S, D = q.shape[1], k.shape[1], q.shape[3]
    rows = []
    for i in range(T):
        n = i + 1 + (S - T) if causal else S
        p = torch.softmax((t[1][:n] @ t[0][i]) / np.sqrt(D), dim=0)
        rows.append(p @ t[2][:n])
    out = torch.stack(rows)
    out.backward(torch.tensor(np.asarray(dout, np.float64)[0, :, 0]))
    return [a[None, :, None].detach().numpy() for a in (out, *(x.grad for x in t))]


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "avx512_bf16"])
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("where", [("q", 5), ("q", 66), ("k", 2), ("k", 67), ("v", 11), ("v", 66)])
def test_nan_propagates_like_torch_on_every_isa(isa, dtype, causal, where, restore_threads):
    """A NaN score is NaN in every row that sees it, on every ISA (AVX-512's vmaxps clamp used to
    turn it into probability 0); a NaN query row is a NaN row; forward and backward.

    Exact NaN pattern for the output of a NaN score (q or k). A NaN in v, and every gradient, may
    also reach entries whose only contact with it is a masked 0 * NaN product inside a tile, as in
    torch's own blocked kernels (its CPU SDPA makes every output row NaN for a NaN in v even when
    causal); what must never happen is a NaN of the exact math coming out finite.
    """
    _core.set_isa_limit(isa)
    rng = np.random.default_rng(3)
    q, k, v, dout = _draw(rng, 1, 70, 70, 1, 1, 8, dtype)
    arrays = {"q": q, "k": k, "v": v}
    arrays[where[0]][0, where[1], 0, 3] = np.nan
    ours = _run(q, k, v, dout, causal)
    ref = _visible_keys_reference(q, k, v, dout, causal)
    tol = 2e-5 if dtype == np.float32 else 3e-2
    for name, g, r in zip(("out", "dq", "dk", "dv"), (ours[0], *ours[2:]), ref):
        g = np.asarray(g, np.float64)
        gnan, rnan = np.isnan(g).any(-1).ravel(), np.isnan(r).any(-1).ravel()
        assert np.all(gnan[rnan]), f"{name}: rows {np.flatnonzero(rnan & ~gnan)} are finite, torch float64 has NaN"
        if name == "out" and where[0] != "v":
            assert np.array_equal(gnan, rnan), f"{name}: NaN rows {np.flatnonzero(gnan)} vs {np.flatnonzero(rnan)}"
        fin = np.isfinite(r) & np.isfinite(g)
        assert np.abs(g[fin] - r[fin]).max(initial=0.0) <= tol * max(1.0, np.abs(r[fin]).max(initial=0.0)), name
    # lse is NaN exactly for the rows that see a NaN score (it never involves v)
    if where[0] != "v":
        assert np.array_equal(np.isnan(ours[1][0, 0]), np.isnan(ref[0][0, :, 0]).any(-1))
    else:
        assert np.isfinite(ours[1]).all()
    if not causal:  # no mask: torch's own SDPA (math backend, float64) gives the same NaN pattern
        torch = pytest.importorskip("torch")
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            tq, tk, tv = (torch.tensor(np.asarray(a, np.float64)).transpose(1, 2) for a in (q, k, v))
            o = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv).transpose(1, 2).numpy()
        assert np.array_equal(np.isnan(o).any(-1), np.isnan(np.asarray(ours[0], np.float64)).any(-1))
