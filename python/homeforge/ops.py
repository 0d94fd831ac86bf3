"""Fused kernels on numpy arrays: flash-style attention (forward and FlashAttention-2 backward).

Layouts (C-contiguous): ``q``, ``out``, ``dout``: (B, T, H, D); ``k``, ``v``: (B, S, Hkv, D);
``lse``: float32 (B, H, T). All of one dtype: ``float32``, or bfloat16 as ``ml_dtypes.bfloat16``
or a ``uint16`` view of the same bits (results come back in the dtype of ``q``; accumulation is
float32). ``H % Hkv == 0``: query head ``h`` uses kv head ``h // (H // Hkv)`` (GQA; MQA when
Hkv = 1). The calls are zero-copy and release the GIL.

Causal convention: query ``i`` sees keys ``j <= i + (S - T)``, i.e. the last query is aligned
with the last key (torch's ``is_causal`` for T == S; for T != S torch aligns the *first* query
with the first key instead). A query that sees no key (only when T > S) gets ``out = 0``,
``lse = -inf`` and zero gradients.

>>> import numpy as np
>>> from homeforge.ops import attention, attention_backward
>>> rng = np.random.default_rng(0)
>>> q = rng.standard_normal((1, 5, 4, 32), dtype=np.float32)
>>> k = rng.standard_normal((1, 5, 2, 32), dtype=np.float32); v = k.copy()
>>> out, lse = attention(q, k, v, causal=True)
>>> out.shape, lse.shape, lse.dtype.name
((1, 5, 4, 32), (1, 4, 5), 'float32')
>>> bool(np.allclose(out[0, 0, 0], v[0, 0, 0]))   # the first query sees only the first key
True
>>> dq, dk, dv = attention_backward(np.ones_like(out), q, k, v, out, lse)
>>> dq.shape, dk.shape, dv.shape
((1, 5, 4, 32), (1, 5, 2, 32), (1, 5, 2, 32))
"""

from __future__ import annotations

import math

import numpy as np

from . import _core

__all__ = ["attention", "attention_backward"]


def _scale_arg(scale: float | None) -> float:
    if scale is None:
        return 0.0  # the core's "1/sqrt(D)"
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    s = float(scale)
    if not math.isfinite(s) or s == 0.0:
        raise ValueError(f"scale must be finite and non-zero, got {scale}")
    return s


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool = True,
              scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """softmax(scale * q k^T + mask) v over key blocks with an online softmax (O(B*H*T) extra memory).

    Returns ``(out, lse)``: out (B, T, H, D) in q's dtype and the per-row natural-log logsumexp,
    float32 (B, H, T), which :func:`attention_backward` needs. ``scale`` defaults to 1/sqrt(D).

    >>> import numpy as np
    >>> q = np.zeros((1, 3, 2, 16), np.float32); k = np.zeros((1, 3, 1, 16), np.float32)
    >>> v = np.arange(48, dtype=np.float32).reshape(1, 3, 1, 16)
    >>> out, lse = attention(q, k, v, causal=False)    # uniform weights: the mean of v's rows
    >>> float(out[0, 0, 1, 0]), round(float(lse[0, 0, 0]), 4)
    (16.0, 1.0986)
    """
    return _core.attention(q, k, v, bool(causal), _scale_arg(scale))


def attention_backward(dout: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray,
                       lse: np.ndarray, causal: bool = True,
                       scale: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dq, dk, dv)`` of :func:`attention` (FlashAttention-2: P recomputed from lse).

    dk and dv are summed over the query heads that share a kv head. ``causal`` and ``scale``
    must be those of the forward call.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> q, k, v = (rng.standard_normal((2, 4, 2, 32), dtype=np.float32) for _ in range(3))
    >>> out, lse = attention(q, k, v)
    >>> dq, dk, dv = attention_backward(np.zeros_like(out), q, k, v, out, lse)
    >>> float(abs(dq).max()), float(abs(dk).max()), float(abs(dv).max())
    (0.0, 0.0, 0.0)
    """
    return _core.attention_backward(dout, q, k, v, out, lse, bool(causal), _scale_arg(scale))
