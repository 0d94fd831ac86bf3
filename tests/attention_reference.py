"""Float64 numpy reference of attention forward and backward (vectorised; shared by the attention tests).

Written from the definition: S = scale q k^T (+ causal mask: query i sees keys j <= i + S - T),
P = softmax(S), out = P v, lse = logsumexp(S); dP = dO v^T, dS = P (dP - rowsum(dO o)),
dq = scale dS k, dk = scale dS^T q, dv = P^T dO, GQA grads summed over the sharing heads.
The G query heads of a kv head are stacked into one (G*T, D) matrix per kv head, so every product
is one batched GEMM over (B, Hkv) and the sums over the group fall out of the GEMMs.
"""

from __future__ import annotations

import numpy as np


def reference(q, k, v, dout=None, causal=True, scale=None):
    """q (B, T, H, D), k/v (B, S, Hkv, D), any float dtype -> float64 (out, lse[, dq, dk, dv])."""
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    G = H // Hkv
    sc = 1.0 / np.sqrt(D) if scale is None else scale

    def stack(x):  # (B, T, H, D) -> (B, Hkv, G*T, D), row g*T + t
        return np.ascontiguousarray(x.astype(np.float64).reshape(B, T, Hkv, G, D).transpose(0, 2, 3, 1, 4)).reshape(B, Hkv, G * T, D)

    def unstack(x):  # inverse of stack
        return x.reshape(B, Hkv, G, T, D).transpose(0, 3, 1, 2, 4).reshape(B, T, H, D)

    qs = stack(q)
    kh = np.ascontiguousarray(k.astype(np.float64).transpose(0, 2, 1, 3))             # (B, Hkv, S, D)
    vh = np.ascontiguousarray(v.astype(np.float64).transpose(0, 2, 1, 3))
    # In-place steps on the (B, Hkv, G*T, S) arrays: the reference dominates the grid test's time.
    s = qs @ kh.transpose(0, 1, 3, 2)
    s *= sc
    if causal:
        mask = np.arange(S)[None, :] <= np.arange(T)[:, None] + (S - T)
        s += np.tile(np.where(mask, 0.0, -np.inf), (G, 1))
    m = s.max(-1, keepdims=True)
    m[~np.isfinite(m)] = 0.0
    s -= m
    p = np.exp(s, out=s)
    l = p.sum(-1, keepdims=True)
    seen = l > 0
    p /= np.where(seen, l, 1.0)
    o = p @ vh                                                                        # (B, Hkv, G*T, D)
    lse = np.where(seen[..., 0], np.log(np.where(seen, l, 1.0))[..., 0] + m[..., 0], -np.inf)
    lse = lse.reshape(B, H, T)
    out = unstack(o)
    if dout is None:
        return out, lse
    do = stack(dout)
    dv = p.transpose(0, 1, 3, 2) @ do                                                 # (B, Hkv, S, D)
    dp = do @ vh.transpose(0, 1, 3, 2)
    dp -= (do * o).sum(-1, keepdims=True)
    dp *= p                                                                           # dS
    dq = (dp @ kh) * sc
    dk = (dp.transpose(0, 1, 3, 2) @ qs) * sc
    return out, lse, unstack(dq), dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)
