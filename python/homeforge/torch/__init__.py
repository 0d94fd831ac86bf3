"""PyTorch drop-ins backed by homeforge's kernels (importing this module imports torch).

>>> import torch, homeforge.torch as hft
>>> q = torch.randn(1, 2, 4, 32, requires_grad=True)
>>> hft.scaled_dot_product_attention(q, q, q, is_causal=True).shape
torch.Size([1, 2, 4, 32])
"""

from ._attention import scaled_dot_product_attention

__all__ = ["scaled_dot_product_attention"]
