"""PyTorch drop-ins backed by homeforge's kernels: fused attention and fused optimizers.

Importing this subpackage imports torch; ``import homeforge`` alone never does.

>>> import torch, homeforge.torch as hft
>>> q = torch.randn(1, 2, 4, 32, requires_grad=True)
>>> hft.scaled_dot_product_attention(q, q, q, is_causal=True).shape
torch.Size([1, 2, 4, 32])
>>> opt = hft.AdamW([q], lr=1e-3)
"""

from __future__ import annotations

from ._attention import scaled_dot_product_attention
from ._optim import SGD, AdamW, Lion

__all__ = ["scaled_dot_product_attention", "AdamW", "Lion", "SGD"]
