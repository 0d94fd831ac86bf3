"""Float64 numpy reference of attention forward and backward (vectorised; shared by the attention tests).

Written from the definition: S = scale q k^T (+ causal mask: query i sees keys j <= i + S - T),
P = softmax(S), out = P v, lse = logsumexp(S); dP = dO v^T, dS = P (dP - rowsum(dO o)),
dq = scale dS k, dk = scale dS^T q, dv = P^T dO, GQA grads summed over the sharing heads.
"""

from __future__ import annotations

import numpy as np


def reference(q, k, v, dout=None, causal=True, scale=None):
    """q (B, T, H, D), k/v (B, S, Hkv, D), any float dtype -> float64 (out, lse[, dq, dk, dv])."""
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    G = H // Hkv
    sc = 1.0 / np.sqrt(D) if scale is None else scale
    qh = np.ascontiguousarray(q.astype(np.float64).transpose(0, 2, 1, 3))            # (B, H, T, D)
    kh = np.repeat(k.astype(np.float64).transpose(0, 2, 1, 3), G, axis=1)            # (B, H, S, D)
    vh = np.repeat(v.astype(np.float64).transpose(0, 2, 1, 3), G, axis=1)
    s = (qh @ kh.transpose(0, 1, 3, 2)) * sc                                          # (B, H, T, S)
    if causal:
        mask = np.arange(S)[None, :] <= np.arange(T)[:, None] + (S - T)
        s = np.where(mask, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    seen = l > 0
    p /= np.where(seen, l, 1.0)
    o = p @ vh                                                                        # (B, H, T, D)
    lse = np.where(seen[..., 0], np.log(np.where(seen, l, 1.0))[..., 0] + m[..., 0], -np.inf)
    out = o.transpose(0, 2, 1, 3)
    if dout is None:
        return out, lse
    do = dout.astype(np.float64).transpose(0, 2, 1, 3)
    dv = (p.transpose(0, 1, 3, 2) @ do).reshape(B, Hkv, G, S, D).sum(2)
    dp = do @ vh.transpose(0, 1, 3, 2)
    dp -= (do * o).sum(-1, keepdims=True)
    dp *= p                                                                           # dS
    dq = (dp @ kh) * sc
    dk = ((dp.transpose(0, 1, 3, 2) @ qh) * sc).reshape(B, Hkv, G, S, D).sum(2)
    return out, lse, dq.transpose(0, 2, 1, 3), dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)
