"""How one training step runs: the seam between the trainer and data parallelism.

The trainer only talks to a *strategy*. :class:`LocalStrategy` is the single-process one; the MPI
strategies in :mod:`homeforge.distributed` (DDP, ZeRO-1, DiLoCo) implement the same interface:

- ``rank``, ``world_size``, ``is_main()``, ``barrier()``, ``allreduce_mean(x: float) -> float``;
- ``train_step(batches, lr) -> dict(loss, grad_norm, skipped, tokens)``: ``batches`` is this rank's
  list of (tokens, targets) micro-batches; ``loss`` is the mean over micro-batches and ranks,
  ``tokens`` the global tokens of the step;
- ``state_dict()`` / ``load_state_dict(sd)``: optimizer state independent of the world size (full
  unsharded arrays and scalars), stored in checkpoints.

``LocalStrategy`` builds AdamW with two parameter groups over views of the model's flat buffers:
weight decay on matrices (2-D), none on norm weights (1-D). A step zeroes the gradients, runs
forward+backward on each micro-batch (gradients accumulate), and steps with ``grad_scale=1/n_micro``
so the accumulated gradient is the mean over micro-batches; clipping and the non-finite check happen
inside the optimizer step. ``nonfinite="skip"`` skips a step whose loss or gradient is not finite
(parameters and optimizer state untouched); ``"abort"`` raises FloatingPointError.

>>> import numpy as np, homeforge
>>> cfg = homeforge.ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2,
...                             ffn_hidden=64, max_seq_len=16)
>>> s = LocalStrategy(homeforge.Model(cfg, seed=0), lr=1e-2)
>>> x = np.arange(16).reshape(2, 8) % 64
>>> first = s.train_step([(x, np.roll(x, -1, axis=1))], lr=1e-2)
>>> later = [s.train_step([(x, np.roll(x, -1, axis=1))], lr=1e-2) for _ in range(5)][-1]
>>> sorted(first), first["tokens"], bool(later["loss"] < first["loss"])
(['grad_norm', 'loss', 'skipped', 'tokens'], 16, True)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["LocalStrategy", "param_groups", "run_micro_batches"]


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over the model's parameter views: the >= 2-D weights (with ``weight_decay``), then
    the 1-D norm weights (none), each in ``named_parameters()`` order. homeforge.distributed builds
    its optimizer over the same order, so the optimizer state_dict is the same at any world size."""
    params = model.named_parameters()
    grads = model.named_grads()
    groups = []
    for decay, wd in ((True, float(weight_decay)), (False, 0.0)):
        names = [n for n, p in params.items() if (p.ndim >= 2) == decay]
        if names:
            groups.append({"params": [params[n] for n in names], "grads": [grads[n] for n in names], "weight_decay": wd})
    return groups


def run_micro_batches(model: Any, batches: Sequence) -> tuple[list[float], int]:
    """Zero the gradients and run forward+backward on each (tokens, targets) micro-batch, so the
    gradients accumulate; returns (the micro-batch losses, target tokens). The first backward may
    overwrite the zeroed gradients (``zero_grad(overwrite_next=True)``): nothing writes them between."""
    model.zero_grad(overwrite_next=True)
    losses, tokens = [], 0
    for x, y in batches:
        losses.append(float(model.forward_backward(x, y)))
        tokens += int(np.asarray(y).size)
    return losses, tokens


class LocalStrategy:
    """Single-process training steps (see the module docstring)."""

    rank = 0
    world_size = 1

    def __init__(self, model: Any, *, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1, max_grad_norm: float | None = 1.0, nonfinite: str = "skip") -> None:
        from .optim import AdamW

        if nonfinite not in ("skip", "abort"):
            raise ValueError(f"nonfinite must be 'skip' or 'abort', got {nonfinite!r}")
        self.model = model
        self.max_grad_norm = max_grad_norm
        self.nonfinite = nonfinite
        self.optimizer = AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                               max_grad_norm=max_grad_norm)
        self.skipped_steps = 0
        self.step_count = 0

    def is_main(self) -> bool:
        return True

    def barrier(self) -> None:
        return None

    def allreduce_mean(self, x: float) -> float:
        return float(x)

    def train_step(self, batches: Sequence[tuple[np.ndarray, np.ndarray]], lr: float) -> dict[str, Any]:
        if not batches:
            raise ValueError("train_step needs at least one micro-batch")
        losses, tokens = run_micro_batches(self.model, batches)
        loss = float(np.mean(losses))
        n = len(batches)
        if not math.isfinite(loss):
            if self.nonfinite == "abort":
                raise FloatingPointError(f"non-finite loss {loss}; stopping (optim.nonfinite = 'abort')")
            self.skipped_steps += 1
            return {"loss": loss, "grad_norm": float("nan"), "skipped": True, "tokens": tokens}
        res = self.optimizer.step(lr, max_grad_norm=self.max_grad_norm, grad_scale=1.0 / n,
                                  skip_nonfinite=self.nonfinite == "skip")
        if not res.finite and self.nonfinite == "abort":
            raise FloatingPointError(f"non-finite gradient (norm {res.grad_norm}); stopping (optim.nonfinite = 'abort')")
        if res.skipped:
            self.skipped_steps += 1
        self.step_count += 1
        return {"loss": loss, "grad_norm": float(res.grad_norm), "skipped": bool(res.skipped), "tokens": tokens}

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": AdamW's state_dict over the whole model, "skipped_steps", "mode", "step"}``:
        the layout the distributed strategies save too, so a checkpoint moves between 1 and N ranks."""
        return {"optimizer": self.optimizer.state_dict(), "skipped_steps": self.skipped_steps, "mode": "local",
                "step": self.step_count}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not isinstance(sd, dict) or "optimizer" not in sd:
            raise ValueError("strategy state_dict must be a mapping with an 'optimizer' entry")
        self.optimizer.load_state_dict(sd["optimizer"])
        self.step_count = int(sd.get("step", 0))
        self.skipped_steps = int(sd.get("skipped_steps", 0))
