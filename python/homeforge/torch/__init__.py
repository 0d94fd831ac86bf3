"""homeforge on torch CPU tensors: fused optimizers that are drop-ins for torch.optim.

Importing this subpackage imports torch; ``import homeforge`` alone never does.
"""

from __future__ import annotations

from ._optim import SGD, AdamW, Lion

__all__ = ["AdamW", "Lion", "SGD"]
