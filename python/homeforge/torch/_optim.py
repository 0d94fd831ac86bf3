"""torch.optim.Optimizer subclasses running homeforge's fused C++ step zero-copy on CPU tensors.

``homeforge.torch.AdamW(model.parameters(), lr=..., betas=..., eps=..., weight_decay=...)`` is a
drop-in for ``torch.optim.AdamW``: param_groups, lr schedulers, ``zero_grad``, hooks, parameters
whose ``.grad`` is None (skipped, as torch does), per-parameter ``state[p]["step"]`` /
``"exp_avg"`` / ``"exp_avg_sq"`` (``"momentum_buffer"`` for SGD) and ``state_dict`` /
``load_state_dict`` in torch's layout, so checkpoints move between the two.

The per-parameter state tensors are views of one flat float32 buffer per kind that the C++ step
walks in a single parallel pass. bfloat16 parameters get float32 master weights (state key
``"master_param"``), with optional stochastic rounding.

>>> import torch, homeforge.torch as ht
>>> w = torch.nn.Parameter(torch.ones(3))
>>> opt = ht.AdamW([w], lr=0.1, weight_decay=0.0)
>>> w.grad = torch.full((3,), 0.5)
>>> opt.step()
>>> [round(x, 4) for x in w.tolist()]
[0.9, 0.9, 0.9]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch

from .. import _core
from ..optim import StepResult, _check_hyper, _check_max_norm, _fused_step, _sr_key

__all__ = ["AdamW", "Lion", "SGD"]


def _np_view(t: torch.Tensor, what: str) -> np.ndarray:
    if t.device.type != "cpu":
        raise ValueError(f"{what} is on {t.device}; homeforge optimizers run on CPU tensors")
    if t.is_sparse:
        raise ValueError(f"{what} is sparse; homeforge optimizers need dense tensors")
    if not t.is_contiguous():
        raise ValueError(f"{what} is not contiguous (shape {tuple(t.shape)}, strides {t.stride()})")
    t = t.detach()
    if t.dtype == torch.float32:
        return t.numpy()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    raise ValueError(f"{what} has dtype {t.dtype}; homeforge optimizers take float32 or bfloat16")


def _plain(g: dict[str, Any]) -> dict[str, Any]:
    """The group's hyperparameters with one-element tensors (torch accepts lr=torch.tensor(0.1) and
    tensor betas) as Python floats; tensors of other sizes are rejected as torch rejects them."""
    def num(x: Any, what: str) -> Any:
        if isinstance(x, torch.Tensor):
            if x.numel() != 1:
                raise ValueError(f"Tensor {what} must be 1-element, got shape {tuple(x.shape)}")
            return float(x)
        return x

    out = {k: num(v, k) for k, v in g.items() if k != "params"}
    if isinstance(out.get("betas"), (tuple, list)):
        out["betas"] = tuple(num(b, f"betas[{i}]") for i, b in enumerate(out["betas"]))
    return out


class _State(dict):
    """Per-parameter state whose item assignment marks the optimizer's plan stale (an O(1) check
    per step, where comparing every state tensor's data_ptr() cost ~10 ms per 10,000 tensors).
    Pickles and copies as a plain dict."""

    def __init__(self, items: dict[str, Any], stale: list[bool]) -> None:
        super().__init__(items)
        self._stale = stale

    def _touch(self) -> None:
        self._stale[0] = True

    def __setitem__(self, k: str, v: Any) -> None:
        self._touch()
        super().__setitem__(k, v)

    def __delitem__(self, k: str) -> None:
        self._touch()
        super().__delitem__(k)

    def update(self, *a: Any, **kw: Any) -> None:  # type: ignore[override]
        self._touch()
        super().update(*a, **kw)

    def pop(self, *a: Any) -> Any:  # type: ignore[override]
        self._touch()
        return super().pop(*a)

    def setdefault(self, *a: Any) -> Any:  # type: ignore[override]
        self._touch()
        return super().setdefault(*a)

    def clear(self) -> None:
        self._touch()
        super().clear()

    def popitem(self) -> Any:
        self._touch()
        return super().popitem()

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


class _FusedTorchOptimizer(torch.optim.Optimizer):
    _algo = ""
    _state_keys: tuple[str, ...] = ()

    def __init__(self, params: Any, defaults: dict[str, Any], stochastic_rounding: bool, seed: int) -> None:
        _check_hyper(self._algo, _plain(defaults), "")
        super().__init__(params, defaults)
        self.stochastic_rounding = bool(stochastic_rounding)
        self.seed = int(seed)
        self.step_count = 0
        self.last_result: StepResult | None = None
        self._plan: Any = None
        self._stale = [False]  # set by _State when a state entry is assigned: rebuild before stepping
        self._sig: tuple[Any, ...] | None = None

    # ---- the flat state and the plan ----------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _signature(self) -> list[int]:
        # Identity of the parameter list (ids only: cheap for 10,000 params). Storage moves of the
        # same parameter objects (p.data = ..., share_memory_()) are caught by _memory() below.
        return list(map(id, self._params()))

    def _memory(self, params: list[torch.Tensor]) -> list[int]:
        """The addresses the plan writes through: every parameter's (grads are checked as they are read).

        Checked on every step (with the grads' data_ptr() in _step: ~1.5 ms per 10,000 tensors):
        ``p.data = ...`` or ``p.share_memory_()`` move memory under the plan, which must then be
        rebuilt, never written through. The state tensors are views of the optimizer's own flat buffers, which never move;
        assigning a new state tensor (``opt.state[p]["exp_avg"] = t``) marks the plan stale through
        _State instead of a per-step check of every state tensor.
        """
        return list(map(torch.Tensor.data_ptr, params))

    def _build(self) -> None:
        """(Re)build the flat buffers and the segment table; existing per-param state is copied in."""
        params = self._params()
        views = [_np_view(p, f"param {i}") for i, p in enumerate(params)]
        dtypes = {v.dtype for v in views}
        if len(dtypes) > 1:
            raise ValueError("all parameters of one homeforge optimizer must share a dtype (float32 or bfloat16)")
        self._bf16 = views[0].dtype == np.uint16 if views else False
        sizes = [int(v.size) for v in views]
        total = sum(sizes)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._m = np.zeros(total, np.float32)
        self._v = np.zeros(total, np.float32) if self._algo == "adamw" else None
        self._master = np.zeros(total, np.float32) if self._bf16 else None
        self._steps = np.zeros(len(params), np.int64)
        self._steps_f32 = np.zeros(len(params), np.float32)
        group_of = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]
        self._group_of = group_of
        for i, p in enumerate(params):
            st = self.state.get(p)
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            if self._master is not None:
                self._master[lo:hi] = p.detach().reshape(-1).float().numpy()
            if not st:
                continue
            for key, buf in self._buffers():
                t = st.get(key)
                if t is not None:
                    buf[lo:hi] = t.detach().reshape(-1).to(torch.float32).numpy()
            if self._algo == "sgd":
                self._steps[i] = 1 if st.get("momentum_buffer") is not None else 0
            else:
                self._steps[i] = int(float(st["step"])) if "step" in st else 0
            self._install_state(i, p)
        self._steps_f32[:] = self._steps
        self._plan = _core._OptimPlan(self._algo, views, group_of, self._m, self._v, self._master, self._steps, 0)
        self._grad_cache: list[Any] = [None] * len(params)
        self._grad_ptrs: list[int] = [0] * len(params)
        self._grad_views: list[Any] = [None] * len(params)
        self._initialized = [bool(x) for x in self._steps]
        self._sig = self._signature()
        self._mem = self._memory(params)
        self._stale[0] = False

    @property
    def _state_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self._buffers())

    def _buffers(self) -> list[tuple[str, np.ndarray]]:
        out = [("exp_avg" if self._algo != "sgd" else "momentum_buffer", self._m)]
        if self._v is not None:
            out.append(("exp_avg_sq", self._v))
        if self._master is not None:
            out.append(("master_param", self._master))
        return out

    def _install_state(self, i: int, p: torch.Tensor) -> None:
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        if self._algo == "sgd" and self.param_groups[self._group_of[i]]["momentum"] == 0:
            return  # torch's SGD keeps no state without momentum
        st: dict[str, Any] = {}
        if self._algo != "sgd":
            st["step"] = torch.from_numpy(self._steps_f32[i:i + 1]).reshape(())
        for key, buf in self._buffers():
            st[key] = torch.from_numpy(buf[lo:hi]).view(p.shape)
        self.state[p] = _State(st, self._stale)

    # ---- torch.optim.Optimizer API --------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # Copy the loaded tensors into fresh flat buffers now: torch's loader may hand us the very
        # tensors of another optimizer, which must not be read later after that one has moved on.
        self._build()
        self.step_count = int(state_dict.get("homeforge_step_count", self.step_count))

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["state"] = {k: dict(v) for k, v in sd["state"].items()}  # plain dicts, as torch's (see _State)
        sd["homeforge_step_count"] = self.step_count
        return sd

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, max_grad_norm: float | None = None,
             grad_scale: float = 1.0, grad_norm: float | None = None, skip_nonfinite: bool = False) -> Any:
        """One fused step over every parameter that has a gradient (torch semantics; extras keyword-only).

        The :class:`homeforge.optim.StepResult` of the step is kept in ``self.last_result``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step(max_grad_norm, grad_scale, grad_norm, skip_nonfinite)
        return loss

    def _step(self, max_grad_norm: float | None, grad_scale: float, grad_norm: float | None,
              skip_nonfinite: bool) -> None:
        if self._plan is None or self._sig != self._signature():
            self._build()
        params = self._params()
        if self._stale[0] or self._memory(params) != self._mem:  # re-point the plan, keep the state
            self._build()
        cache, gptrs, views, init = self._grad_cache, self._grad_ptrs, self._grad_views, self._initialized
        fresh: list[int] = []
        any_grad = False
        for i, g in enumerate([p.grad for p in params]):
            if g is None:
                views[i] = None
                continue
            any_grad = True
            gp = g.data_ptr()
            # A new grad tensor (zero_grad(set_to_none=True) makes one each step), or the same one
            # whose storage moved (g.data = ..., share_memory_()): view it afresh.
            if cache[i] is not g or gptrs[i] != gp or views[i] is None:
                p = params[i]
                if g.dtype != p.dtype or g.shape != p.shape:
                    raise ValueError(f"param {i}: grad has dtype {g.dtype} shape {tuple(g.shape)}, "
                                     f"param has {p.dtype} {tuple(p.shape)}")
                views[i] = _np_view(g, f"grad of param {i}")
                cache[i], gptrs[i] = g, gp
            if not init[i]:
                fresh.append(i)
        if not any_grad:
            return
        grads = views
        self._plan.set_grads(grads)
        hypers = [self._hyper(g, i) for i, g in enumerate(self.param_groups)]
        mgn = _check_max_norm(max_grad_norm) if max_grad_norm is not None else None
        res = _fused_step(self._plan, hypers, mgn, grad_scale, grad_norm, skip_nonfinite,
                          self.stochastic_rounding, _sr_key(self.seed, self.step_count + 1))
        self.last_result = res
        if not res.skipped:
            self.step_count += 1
            np.copyto(self._steps_f32, self._steps, casting="unsafe")
            for i in fresh:
                self._install_state(i, params[i])
                init[i] = bool(self._steps[i])  # SGD without momentum keeps no state (yet)

    def _hyper(self, g: dict[str, Any], i: int) -> tuple[float, float, float, float, float, bool]:
        for key, bad in (("amsgrad", True), ("maximize", True), ("capturable", True), ("differentiable", True)):
            if g.get(key) is bad:
                raise ValueError(f"param_groups[{i}]: {key}=True is not supported by homeforge's fused optimizers")
        return _check_hyper(self._algo, _plain(g), f"param_groups[{i}]: ")


class AdamW(_FusedTorchOptimizer):
    """Drop-in for ``torch.optim.AdamW`` (fp32, or bf16 params with fp32 master weights)."""

    _algo = "adamw"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, stochastic_rounding: bool = False, seed: int = 0) -> None:
        for name, val in (("amsgrad", amsgrad), ("maximize", maximize), ("capturable", capturable),
                          ("differentiable", differentiable)):
            if val:
                raise ValueError(f"{name}=True is not supported by homeforge.torch.AdamW")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "amsgrad": False,
                    "maximize": False, "foreach": foreach, "capturable": False, "differentiable": False,
                    "fused": fused}
        super().__init__(params, defaults, stochastic_rounding, seed)


class Lion(_FusedTorchOptimizer):
    """Lion (Chen et al. 2023) on torch CPU tensors; state key ``exp_avg``."""

    _algo = "lion"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, stochastic_rounding: bool = False, seed: int = 0) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay},
                         stochastic_rounding, seed)


class SGD(_FusedTorchOptimizer):
    """Drop-in for ``torch.optim.SGD`` (momentum, dampening, Nesterov, weight decay)."""

    _algo = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None,
                 stochastic_rounding: bool = False, seed: int = 0) -> None:
        if maximize or differentiable:
            raise ValueError("maximize/differentiable=True is not supported by homeforge.torch.SGD")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": bool(nesterov), "maximize": False, "foreach": foreach, "differentiable": False,
                    "fused": fused}
        super().__init__(params, defaults, stochastic_rounding, seed)
