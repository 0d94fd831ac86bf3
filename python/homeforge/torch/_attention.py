"""``scaled_dot_product_attention`` for torch CPU tensors, on homeforge's fused kernels.

torch's layout is (B, H, T, D); the kernels' is (B, T, H, D). A tensor that is a
``.transpose(1, 2)`` view of a contiguous (B, T, H, D) tensor -- what a model gets from
``x.view(B, T, H, D).transpose(1, 2)`` -- crosses zero-copy (a numpy view of its memory). Any
other tensor (e.g. a contiguous (B, H, T, D) one) is copied once into (B, T, H, D) order; that
copy is the only extra pass and is measured in benchmarks/bench_attention.py. Outputs are
returned as (B, H, T, D) views of (B, T, H, D) memory, so ``out.transpose(1, 2).reshape(B, T,
H * D)`` after it is free. The backward copies ``grad_out`` the same way when needed.

bfloat16 tensors cross as uint16 numpy views of the same bits. Differences from torch:
``is_causal`` with T != S raises (torch aligns the first query with the first key, homeforge
the last with the last -- see homeforge.ops); no attn_mask or dropout; float32 and bfloat16 only.

>>> import torch
>>> from homeforge.torch import scaled_dot_product_attention as sdpa
>>> q = torch.randn(2, 8, 16, 64, requires_grad=True)
>>> k = torch.randn(2, 2, 16, 64, requires_grad=True); v = torch.randn(2, 2, 16, 64, requires_grad=True)
>>> out = sdpa(q, k, v, is_causal=True, enable_gqa=True)
>>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
>>> bool(torch.allclose(out, ref, atol=1e-5))
True
>>> out.sum().backward(); q.grad.shape
torch.Size([2, 8, 16, 64])
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _core

__all__ = ["scaled_dot_product_attention"]


def _to_kernel(t: torch.Tensor) -> np.ndarray:
    """(B, H, T, D) tensor -> (B, T, H, D) C-contiguous numpy array (a view when possible)."""
    x = t.detach()
    if x.dtype == torch.bfloat16:
        a = x.view(torch.int16).numpy().view(np.uint16)
    else:
        a = x.numpy()
    # The one copy when needed (documented above), done by numpy: torch's strided copy from
    # inside its OpenMP pool measured 10x slower here while our oneTBB workers were spinning.
    return np.ascontiguousarray(a.transpose(0, 2, 1, 3))


def _from_kernel(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """(B, T, H, D) numpy array from the kernels -> (B, H, T, D) tensor view of the same memory."""
    if dtype == torch.bfloat16:
        t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a)
    return t.transpose(1, 2)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float):  # type: ignore[override]
        qn, kn, vn = _to_kernel(q), _to_kernel(k), _to_kernel(v)
        out, lse = _core.attention(qn, kn, vn, causal, scale)
        ctx.save_for_backward(q, k, v)
        ctx.kernel = (qn, kn, vn, out, lse, causal, scale)
        return _from_kernel(out, q.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        qn, kn, vn, out, lse, causal, scale = ctx.kernel
        dq, dk, dv = _core.attention_backward(_to_kernel(grad_out.to(ctx.saved_tensors[0].dtype)), qn, kn, vn, out, lse,
                                              causal, scale)
        dtype = ctx.saved_tensors[0].dtype
        return _from_kernel(dq, dtype), _from_kernel(dk, dtype), _from_kernel(dv, dtype), None, None


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, is_causal: bool = False,
                                 scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention (no mask, no dropout) on homeforge's kernels.

    query (B, H, T, D), key/value (B, Hkv, S, D) CPU tensors, float32 or bfloat16; Hkv != H needs
    ``enable_gqa=True`` (as in torch). Differentiable in query, key and value.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU, got device {t.device}")
        if t.dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"{name} must be float32 or bfloat16, got {t.dtype}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, T, D), got shape {tuple(t.shape)}")
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"query, key and value must have one dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    if key.shape != value.shape:
        raise ValueError(f"key and value must have one shape, got {tuple(key.shape)} and {tuple(value.shape)}")
    shapes = f"(query {tuple(query.shape)}, key {tuple(key.shape)}, as (B, H, T, D))"
    if key.shape[0] != query.shape[0]:
        raise ValueError(f"query and key must have one batch size B (no batch broadcasting) {shapes}")
    if key.shape[3] != query.shape[3]:
        raise ValueError(f"query and key/value must have one head dim D {shapes}")
    if 0 in query.shape or 0 in key.shape:
        raise ValueError(f"query and key must not have an empty dimension {shapes}")
    if key.shape[1] != query.shape[1] and enable_gqa and query.shape[1] % key.shape[1] != 0:
        raise ValueError(f"query's {query.shape[1]} heads must be a multiple of key's {key.shape[1]} {shapes}")
    if key.shape[1] != query.shape[1] and not enable_gqa:
        raise ValueError(f"query has {query.shape[1]} heads and key {key.shape[1]}: pass enable_gqa=True for GQA "
                         f"(query {tuple(query.shape)}, key {tuple(key.shape)})")
    if is_causal and query.shape[2] != key.shape[2]:
        raise ValueError(f"is_causal with T={query.shape[2]} != S={key.shape[2]} is not supported: torch aligns the "
                         "first query with the first key, homeforge's kernel the last with the last")
    if scale is None:
        s = 0.0
    else:
        s = float(scale)
        if not math.isfinite(s) or s == 0.0:
            raise ValueError(f"scale must be finite and non-zero, got {scale}")
    return _Attention.apply(query, key, value, bool(is_causal), s)
