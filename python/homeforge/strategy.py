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
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["LocalStrategy", "param_groups", "param_layout", "export_optimizer_state", "import_optimizer_state"]


def _offset(view: np.ndarray, flat: np.ndarray) -> int:
    return (view.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // flat.itemsize


def param_layout(model: Any) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """AdamW groups over the model's parameter views (decay on >= 2-D weights, none on 1-D ones; views
    in flat-buffer order inside each group, the decay group first) and each view's [begin, end) range
    in the flat parameter buffer, in the optimizer's order."""
    params = model.named_parameters()
    grads = model.named_grads()
    flat = model.flat_params()
    order = sorted(params, key=lambda n: _offset(params[n], flat))
    groups, ranges = [], []
    for decay in (True, False):
        names = [n for n in order if (params[n].ndim >= 2) == decay]
        if names:
            groups.append({"params": [params[n] for n in names], "grads": [grads[n] for n in names],
                           "weight_decay": None if decay else 0.0})
            ranges += [(_offset(params[n], flat), _offset(params[n], flat) + params[n].size) for n in names]
    return groups, ranges


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """The AdamW groups of :func:`param_layout`, with ``weight_decay`` on the decay group."""
    groups, _ = param_layout(model)
    for g in groups:
        g["weight_decay"] = float(weight_decay) if g["weight_decay"] is None else 0.0
    return groups


def export_optimizer_state(sd: dict[str, Any], ranges: list[tuple[int, int]], n: int) -> dict[str, Any]:
    """An optimizer state_dict in the world-size independent form shared with homeforge.distributed:
    ``{"arrays": {key: float32 array over the whole flat parameter buffer}, "scalars": {key: value}}``,
    keys being dotted paths in the state_dict; per-element arrays are mapped from the optimizer's view
    order (``ranges``) to flat-buffer order."""
    total = sum(b - a for a, b in ranges)
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.size == total and total > 0 \
                and not (v.dtype.kind in "iu" and v.size < 4):
            src = v.reshape(-1)
            full = np.zeros(n, dtype=np.float32)
            pos = 0
            for a, b in ranges:
                full[a:b] = src[pos:pos + b - a]
                pos += b - a
            arrays[prefix] = full
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            scalars[prefix] = v

    walk("", sd)
    return {"scalars": scalars, "arrays": arrays}


def import_optimizer_state(canon: dict[str, Any], template: dict[str, Any], ranges: list[tuple[int, int]],
                           n: int) -> dict[str, Any]:
    """Inverse of :func:`export_optimizer_state`, shaped like ``template`` (this optimizer's state_dict)."""
    t_arrays = export_optimizer_state(template, ranges, n)["arrays"]
    src, scal = canon.get("arrays", {}), canon.get("scalars", {})
    missing = [k for k in t_arrays if k not in src]
    if missing:
        raise ValueError(f"optimizer state is missing arrays {missing}")

    def rebuild(prefix: str, v: Any) -> Any:
        if prefix in t_arrays:
            full = np.asarray(src[prefix]).reshape(-1)
            if full.size != n:
                raise ValueError(f"optimizer state array {prefix!r} has {full.size} elements, the model has {n} parameters")
            return np.concatenate([full[a:b] for a, b in ranges]).astype(v.dtype).reshape(v.shape)
        if isinstance(v, dict):
            return {k: rebuild(f"{prefix}.{k}" if prefix else str(k), x) for k, x in v.items()}
        return scal.get(prefix, v)

    return rebuild("", template)


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
        groups, self._ranges = param_layout(model)
        for g in groups:
            g["weight_decay"] = float(weight_decay) if g["weight_decay"] is None else 0.0
        self._n = int(model.flat_params().size)
        self.optimizer = AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
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
        self.model.zero_grad()
        losses = []
        tokens = 0
        for x, y in batches:
            losses.append(float(self.model.forward_backward(x, y)))
            tokens += int(np.asarray(x).size)
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
        """``{"mode", "step", "optimizer": {"arrays", "scalars"}, "skipped_steps"}``: the layout the
        distributed strategies use too, so a checkpoint moves between 1 and N ranks."""
        return {"mode": "local", "step": self.step_count, "skipped_steps": self.skipped_steps,
                "optimizer": export_optimizer_state(self.optimizer.state_dict(), self._ranges, self._n)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not isinstance(sd, dict) or "optimizer" not in sd:
            raise ValueError("strategy state_dict must be a mapping with an 'optimizer' entry")
        template = self.optimizer.state_dict()
        self.optimizer.load_state_dict(import_optimizer_state(sd["optimizer"], template, self._ranges, self._n))
        self.step_count = int(sd.get("step", 0))
        self.skipped_steps = int(sd.get("skipped_steps", 0))
