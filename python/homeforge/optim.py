"""Fused optimizer steps on numpy arrays: AdamW, Lion and SGD, updated in place at memory speed.

One step is a single parallel pass (C++, oneTBB, AVX-512/AVX2/scalar) over every parameter of
every group: the gradient is read once, clipping and ``grad_scale`` are folded into the update as
one multiplier, and the gradient is never written. Parameters are float32, or bfloat16
(``ml_dtypes.bfloat16`` or a ``uint16`` view) with float32 master weights and float32 moments.

>>> import numpy as np
>>> from homeforge.optim import AdamW
>>> w = np.ones(4, np.float32); g = np.full(4, 0.5, np.float32)
>>> opt = AdamW([w], [g], lr=0.1, weight_decay=0.0)
>>> r = opt.step()
>>> np.allclose(w, 0.9), r.finite, r.skipped, opt.step_count
(True, True, False, 1)

Semantics (shared by every optimizer here):

- ``grad_scale`` multiplies every gradient element inside the step (pass ``1/loss_scale`` to
  unscale mixed-precision gradients).
- ``grad_norm`` of :class:`StepResult` is the L2 norm of ``grad_scale * grad`` before clipping;
  ``max_grad_norm`` clips like ``torch.nn.utils.clip_grad_norm_`` (coefficient
  ``max_norm / (norm + 1e-6)``, capped at 1).
- With ``skip_nonfinite=True`` (default) a step whose gradients hold inf/NaN changes nothing and
  returns ``skipped=True``. Deciding that before touching a parameter needs the norm first, so
  the step then reads the gradient twice (once for the norm); with ``skip_nonfinite=False`` and
  no clipping the norm is accumulated inside the update pass at no extra cost.
- ``step(grad_norm=...)`` takes an already-reduced norm of the raw gradients (for example the
  all-reduced ``sqrt(sum of grad_sq_norm())`` of data-parallel ranks): no norm pass runs.
- A bfloat16 param edited in place between steps re-seeds its float32 master inside the next step
  (a param that is no rounding of its master is taken as the new value).
- SGD's per-param ``steps`` count the steps taken with momentum: the buffer starts at the first
  of them (undamped, as torch), also when momentum is switched on later.
- Params must not share memory with each other or with a grad (checked at construction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from . import _core

__all__ = ["AdamW", "Lion", "SGD", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`step` saw and did."""

    grad_norm: float  #: L2 norm of grad_scale * grad, before clipping (nan/inf when not finite)
    finite: bool  #: every gradient element was finite
    skipped: bool  #: the step changed nothing (non-finite gradients with skip_nonfinite=True)
    clip_coef: float  #: multiplier applied to the gradients by clipping (1.0 when not clipped)


def _is_bf16(a: np.ndarray) -> bool:
    return a.dtype == np.uint16 or a.dtype.name == "bfloat16"


def _check_array(a: Any, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32 and not _is_bf16(a):
        raise ValueError(f"{what} must be float32 or bfloat16 (ml_dtypes.bfloat16 or uint16), got {a.dtype}")
    return a


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        byte_bounds = np.byte_bounds
    return byte_bounds(a)


def _check_no_overlap(params: list[np.ndarray], grads: list[np.ndarray]) -> None:
    """ValueError when a param's memory overlaps another param's or any grad's.

    One sort of the byte ranges and a sweep (the bounds of each array, not np.shares_memory's exact
    and possibly slow search): strided views whose ranges interleave without sharing an element are
    rejected too. Grads may overlap each other: the step only reads them.
    """
    spans = []
    for kind, arrays in (("params", params), ("grads", grads)):
        for i, a in enumerate(arrays):
            if a.size and a.flags.c_contiguous:  # a strided view is refused later, with the fix in the message
                lo, hi = _byte_bounds(a)
                spans.append((lo, hi, kind, i))
    spans.sort(key=lambda t: t[0])
    last_param: tuple[int, str] = (0, "")  # largest end of a param range so far, and its name
    last_grad: tuple[int, str] = (0, "")
    for lo, hi, kind, i in spans:
        name = f"{kind}[{i}]"
        if lo < last_param[0]:
            why = "every param needs memory of its own" if kind == "params" else "a grad may not alias a param"
            raise ValueError(f"{name} overlaps the memory of {last_param[1]} ({why})")
        if kind == "params" and lo < last_grad[0]:
            raise ValueError(f"{name} overlaps the memory of {last_grad[1]} (a grad may not alias a param)")
        if kind == "params":
            last_param = max(last_param, (hi, name))
        else:
            last_grad = max(last_grad, (hi, name))


def _real(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what} must be a real number, got {type(x).__name__}")
    v = float(x)
    if math.isnan(v):
        raise ValueError(f"{what} is NaN")
    if math.isinf(v):
        raise ValueError(f"{what} is infinite")
    return v


def _check_hyper(algo: str, g: dict[str, Any], where: str) -> tuple[float, float, float, float, float, bool]:
    """Validate one group's hyperparameters; return the (lr, b1, b2, eps, wd, nesterov) tuple of the core."""
    lr = _real(g["lr"], f"{where}lr")
    if lr < 0:
        raise ValueError(f"{where}lr must be >= 0, got {lr}")
    wd = _real(g["weight_decay"], f"{where}weight_decay")
    if wd < 0:
        raise ValueError(f"{where}weight_decay must be >= 0, got {wd}")
    if algo == "sgd":
        mom = _real(g["momentum"], f"{where}momentum")
        damp = _real(g["dampening"], f"{where}dampening")
        if mom < 0:
            raise ValueError(f"{where}momentum must be >= 0, got {mom}")
        nesterov = bool(g["nesterov"])
        if nesterov and (mom <= 0 or damp != 0):
            raise ValueError(f"{where}nesterov momentum requires momentum > 0 and dampening == 0")
        return (lr, mom, damp, 0.0, wd, nesterov)
    betas = g["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{where}betas must be a pair (beta1, beta2), got {betas!r}")
    b1, b2 = _real(betas[0], f"{where}betas[0]"), _real(betas[1], f"{where}betas[1]")
    for i, b in enumerate((b1, b2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{where}betas[{i}] must be in [0, 1), got {b}")
    eps = 0.0
    if algo == "adamw":
        eps = _real(g["eps"], f"{where}eps")
        if eps < 0:
            raise ValueError(f"{where}eps must be >= 0, got {eps}")
    return (lr, b1, b2, eps, wd, False)


def _sr_key(seed: int, step: int) -> int:
    h = _core._optim_hash32
    return h((seed & 0xFFFFFFFF) ^ h(step & 0xFFFFFFFF) ^ h(((step >> 32) + 0x632BE5AB) & 0xFFFFFFFF))


def _count(v: Any, what: str, allow_negative: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(v).__name__}")
    if v < 0 and not allow_negative:
        raise ValueError(f"{what} must be >= 0, got {v}")
    return int(v)


def _check_max_norm(v: Any) -> float:
    x = _real(v, "max_grad_norm")
    if x <= 0:
        raise ValueError(f"max_grad_norm must be > 0, got {x}")
    return x


def _fused_step(plan: Any, hypers: list[tuple[float, float, float, float, float, bool]], mgn: float | None,
                grad_scale: float, grad_norm: float | None, skip_nonfinite: bool, stochastic: bool,
                key: int) -> StepResult:
    """Norm (if needed), skip decision, clip coefficient, then the one fused pass."""
    scale = _real(grad_scale, "grad_scale")
    if abs(scale) > float(np.finfo(np.float32).max):
        raise ValueError(f"grad_scale={scale} overflows float32 (the step multiplies float32 gradients by it)")
    norm: float | None
    if grad_norm is not None:
        if isinstance(grad_norm, bool) or not isinstance(grad_norm, (int, float, np.floating, np.integer)):
            raise TypeError(f"grad_norm must be a real number, got {type(grad_norm).__name__}")
        norm = float(grad_norm)  # may be inf/nan: that is how ranks report non-finite grads
        if norm < 0:
            raise ValueError(f"grad_norm must be >= 0, got {norm}")
    elif mgn is not None or skip_nonfinite:
        norm = math.sqrt(plan.grad_sumsq())
    else:
        norm = None  # accumulated inside the update pass
    clip = 1.0
    scaled = math.nan
    finite = True
    if norm is not None:
        scaled = norm * abs(scale)
        finite = math.isfinite(scaled)
        if not finite and skip_nonfinite:
            return StepResult(scaled, False, True, 1.0)
        if mgn is not None and finite:
            # float32 arithmetic, as torch.nn.utils.clip_grad_norm_ does on float32 gradients.
            c = np.float32(mgn) / (np.float32(scaled) + np.float32(1e-6))
            clip = float(min(c, np.float32(1.0)))
    mul = float(np.float32(scale) * np.float32(clip))
    sumsq = plan.step(hypers, mul, stochastic, key, norm is None)
    if norm is None:
        scaled = math.sqrt(sumsq) * abs(scale)
        finite = math.isfinite(scaled)
    return StepResult(float(scaled), bool(finite), False, float(clip))


class _FusedOptimizer:
    _algo = ""
    _hyper_keys: tuple[str, ...] = ()

    def __init__(self, params: Any, grads: Any, defaults: dict[str, Any], *, max_grad_norm: float | None,
                 stochastic_rounding: bool, shard: tuple[int, int] | None, seed: int) -> None:
        self.defaults = dict(defaults)
        _check_hyper(self._algo, self.defaults, "")
        self.max_grad_norm = None if max_grad_norm is None else _check_max_norm(max_grad_norm)
        self.stochastic_rounding = bool(stochastic_rounding)
        self.seed = int(seed)
        self.step_count = 0
        self.shard = None if shard is None else (int(shard[0]), int(shard[1]))
        self.param_groups: list[dict[str, Any]] = self._parse(params, grads)
        flat_p: list[np.ndarray] = []
        flat_g: list[np.ndarray] = []
        group_of: list[int] = []
        for gi, g in enumerate(self.param_groups):
            _check_hyper(self._algo, g, f"param_groups[{gi}]: ")
            flat_p += g["params"]
            flat_g += g["grads"]
            group_of += [gi] * len(g["params"])
        if not flat_p:
            raise ValueError("optimizer got an empty parameter list")
        _check_no_overlap(flat_p, flat_g)
        index_base = 0
        if self.shard is not None:
            b, e = self.shard
            if len(flat_p) != 1 or flat_p[0].ndim != 1:
                raise ValueError("shard=(begin, end) needs a single flat (1-D) params array and grads array")
            n = flat_p[0].shape[0]
            if not 0 <= b <= e <= n:
                raise ValueError(f"shard=({b}, {e}) is not a slice of the {n} flat params")
            if flat_g[0].shape != flat_p[0].shape:
                raise ValueError(f"grads has shape {flat_g[0].shape} but params has shape {flat_p[0].shape}")
            self._full = (flat_p[0], flat_g[0])
            flat_p, flat_g, index_base = [flat_p[0][b:e]], [flat_g[0][b:e]], b
        self._sizes = [int(p.size) for p in flat_p]
        total = sum(self._sizes)
        self._bf16 = _is_bf16(flat_p[0])
        self._steps = np.zeros(len(flat_p), np.int64)
        self._m = np.zeros(total, np.float32) if self._needs_m() else None
        self._v = np.zeros(total, np.float32) if self._algo == "adamw" else None
        self._master = None
        if self._bf16:
            import ml_dtypes

            self._master = np.concatenate([p.reshape(-1).view(ml_dtypes.bfloat16).astype(np.float32) for p in flat_p]) \
                if total else np.zeros(0, np.float32)
        self._plan = _core._OptimPlan(self._algo, flat_p, group_of, self._m, self._v, self._master, self._steps, index_base)
        self._plan.set_grads(flat_g)

    # ---- construction helpers -----------------------------------------------------------------
    def _needs_m(self) -> bool:
        if self._algo != "sgd":
            return True
        # SGD keeps a momentum buffer only if some group uses momentum (4 bytes/param otherwise wasted)
        return any(g["momentum"] != 0 for g in self.param_groups)

    def _parse(self, params: Any, grads: Any) -> list[dict[str, Any]]:
        if isinstance(params, np.ndarray):
            _check_array(params, "params")
            if grads is None:
                raise ValueError("grads are required: pass a grads array of params' shape")
            if not isinstance(grads, np.ndarray):
                raise TypeError(f"params is one array, so grads must be one array too, got {type(grads).__name__}")
            return [self._group({"params": [params], "grads": [grads]})]
        if not isinstance(params, (list, tuple)):
            params = list(params) if isinstance(params, Iterable) else params
            if not isinstance(params, list):
                raise TypeError(f"params must be an array, a list of arrays or a list of group dicts, got {type(params).__name__}")
        if params and all(isinstance(p, dict) for p in params):
            if grads is not None:
                raise ValueError("with parameter-group dicts, give each group's grads under its 'grads' key")
            return [self._group(dict(g)) for g in params]
        if grads is None:
            raise ValueError("grads are required: pass a list of arrays matching params")
        if isinstance(grads, np.ndarray) or len(grads) != len(params):
            raise ValueError(f"got {len(grads) if not isinstance(grads, np.ndarray) else 'one array of'} grads for {len(params)} params")
        return [self._group({"params": list(params), "grads": list(grads)})]

    def _group(self, g: dict[str, Any]) -> dict[str, Any]:
        if "params" not in g or "grads" not in g:
            raise ValueError("each parameter group needs 'params' and 'grads' lists")
        ps, gs = g["params"], g["grads"]
        if isinstance(ps, np.ndarray):
            ps = [ps]
        if isinstance(gs, np.ndarray):
            gs = [gs]
        ps, gs = list(ps), list(gs)
        if len(ps) != len(gs):
            raise ValueError(f"a parameter group has {len(ps)} params but {len(gs)} grads")
        for i, (p, q) in enumerate(zip(ps, gs)):
            _check_array(p, f"params[{i}]")
            _check_array(q, f"grads[{i}]")
            if p.shape != q.shape:
                raise ValueError(f"grads[{i}] has shape {q.shape} but params[{i}] has shape {p.shape}")
            if p.dtype != q.dtype and not (_is_bf16(p) and _is_bf16(q)):
                raise ValueError(f"grads[{i}] has dtype {q.dtype} but params[{i}] has dtype {p.dtype}")
        unknown = set(g) - {"params", "grads", *self._hyper_keys}
        if unknown:
            raise ValueError(f"unknown parameter-group keys {sorted(unknown)}; expected {list(self._hyper_keys)}")
        out = {k: self.defaults[k] for k in self._hyper_keys}
        out.update(g)
        out["params"], out["grads"] = ps, gs
        return out

    # ---- stepping -----------------------------------------------------------------------------
    def grad_sq_norm(self) -> float:
        """Sum of squares (float64) of this optimizer's raw gradients (its shard only, when sharded)."""
        return float(self._plan.grad_sumsq())

    def step(self, lr: float | None = None, *, max_grad_norm: float | None = None, grad_scale: float = 1.0,
             grad_norm: float | None = None, skip_nonfinite: bool = True) -> StepResult:
        """One update of every parameter. ``lr`` (if given) replaces every group's lr from now on."""
        if lr is not None:
            lr = _real(lr, "lr")
            if lr < 0:
                raise ValueError(f"lr must be >= 0, got {lr}")
            for g in self.param_groups:
                g["lr"] = lr
        hypers = [_check_hyper(self._algo, g, f"param_groups[{i}]: ") for i, g in enumerate(self.param_groups)]
        mgn = _check_max_norm(max_grad_norm) if max_grad_norm is not None else self.max_grad_norm
        res = _fused_step(self._plan, hypers, mgn, grad_scale, grad_norm, skip_nonfinite,
                          self.stochastic_rounding, _sr_key(self.seed, self.step_count + 1))
        if not res.skipped:
            self.step_count += 1
        return res

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Copies of the state (numpy arrays and plain scalars); :meth:`load_state_dict` continues exactly."""
        groups = []
        for g in self.param_groups:
            d = {k: (tuple(g[k]) if k == "betas" else g[k]) for k in self._hyper_keys}
            d["num_params"] = len(g["params"])
            groups.append(d)
        state: dict[str, np.ndarray] = {"steps": self._steps.copy()}
        for name, buf in (("exp_avg", self._m), ("exp_avg_sq", self._v), ("master", self._master)):
            if buf is not None:
                state[name] = buf.copy()
        return {"algorithm": self._algo, "step_count": self.step_count, "seed": self.seed, "sizes": list(self._sizes),
                "shard": self.shard, "stochastic_rounding": self.stochastic_rounding,
                "max_grad_norm": self.max_grad_norm, "param_groups": groups, "state": state}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of an optimizer of the same kind over the same shapes.

        Everything is validated as the constructor validates it before anything is changed: a bad
        state_dict raises ValueError/TypeError and leaves this optimizer as it was.
        """
        if not isinstance(sd, dict):
            raise TypeError(f"state_dict must be a dict, got {type(sd).__name__}")
        if sd.get("algorithm") != self._algo:
            raise ValueError(f"state_dict is for {sd.get('algorithm')!r}, this optimizer is {self._algo!r}")
        for key in ("sizes", "param_groups", "state", "step_count"):
            if key not in sd:
                raise ValueError(f"state_dict has no {key!r} entry")
        if list(sd["sizes"]) != self._sizes:
            raise ValueError("state_dict's parameter sizes differ from this optimizer's")
        if len(sd["param_groups"]) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(sd['param_groups'])} groups, this optimizer has {len(self.param_groups)}")
        groups = []
        for i, (mine, theirs) in enumerate(zip(self.param_groups, sd["param_groups"])):
            if theirs.get("num_params") != len(mine["params"]):
                raise ValueError(f"param_groups[{i}] has {len(mine['params'])} params, state_dict's has {theirs.get('num_params')}")
            missing = [k for k in self._hyper_keys if k not in theirs]
            if missing:
                raise ValueError(f"state_dict param_groups[{i}] lacks {missing}")
            hp = {k: (tuple(theirs[k]) if k == "betas" else theirs[k]) for k in self._hyper_keys}
            _check_hyper(self._algo, hp, f"state_dict param_groups[{i}]: ")
            groups.append(hp)
        mgn = sd.get("max_grad_norm", self.max_grad_norm)
        mgn = None if mgn is None else _check_max_norm(mgn)
        step_count = _count(sd["step_count"], "state_dict step_count")
        seed = _count(sd.get("seed", self.seed), "state_dict seed", allow_negative=True)
        sr = sd.get("stochastic_rounding", self.stochastic_rounding)
        if not isinstance(sr, (bool, np.bool_)):
            raise TypeError(f"state_dict stochastic_rounding must be a bool, got {type(sr).__name__}")
        st = sd["state"]
        if not isinstance(st, dict):
            raise TypeError(f"state_dict state must be a dict, got {type(st).__name__}")
        if self._algo == "sgd":
            uses = [i for i, g in enumerate(groups) if g["momentum"] != 0]
            if self._m is None and uses:
                raise ValueError(f"state_dict param_groups{uses} use momentum but this SGD was built without a "
                                 "momentum buffer (momentum 0 in every group): build it with momentum > 0")
            if self._m is not None and "exp_avg" not in st:
                # Saved by an SGD without momentum: no buffer yet, as torch.optim.SGD loading a state
                # without momentum_buffer; the first step with momentum starts it.
                st = {**st, "exp_avg": np.zeros_like(self._m), "steps": np.zeros_like(self._steps)}
        loads = []
        for name, buf in (("steps", self._steps), ("exp_avg", self._m), ("exp_avg_sq", self._v), ("master", self._master)):
            if buf is None:
                continue
            if name not in st:
                raise ValueError(f"state_dict state has no {name!r} (saved by a differently configured optimizer?)")
            src = np.asarray(st[name])
            if src.shape != buf.shape:
                raise ValueError(f"state_dict's {name} has shape {src.shape}, expected {buf.shape}")
            if name == "steps":
                if not (np.issubdtype(src.dtype, np.integer) or np.issubdtype(src.dtype, np.floating)) \
                        or src.dtype == np.bool_:
                    raise TypeError(f"state_dict's steps must be integers, got dtype {src.dtype}")
                if not np.all(np.isfinite(src)) or np.any(src < 0) or np.any(src != np.floor(src)):
                    raise ValueError(f"state_dict's steps must be non-negative integers, got {src.tolist()[:8]}")
                src = src.astype(np.int64)
            elif not np.issubdtype(src.dtype, np.floating):
                raise TypeError(f"state_dict's {name} must be floating point, got dtype {src.dtype}")
            loads.append((buf, src))
        # Validated: now change this optimizer.
        for buf, src in loads:
            np.copyto(buf, src, casting="unsafe")
        for mine, hp in zip(self.param_groups, groups):
            mine.update(hp)
        self.step_count = step_count
        self.seed = seed
        self.stochastic_rounding = bool(sr)
        self.max_grad_norm = mgn
        if self._master is not None:  # the bf16 params are the rounding of the restored master weights
            self._write_params_from_master()

    def _write_params_from_master(self) -> None:
        import ml_dtypes

        off = 0
        params = [self._full[0][self.shard[0]:self.shard[1]]] if self.shard else [p for g in self.param_groups for p in g["params"]]
        for p, n in zip(params, self._sizes):
            p.reshape(-1).view(ml_dtypes.bfloat16)[...] = self._master[off:off + n].astype(ml_dtypes.bfloat16)
            off += n

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={self.param_groups[0][k]!r}" for k in self._hyper_keys)
        return f"{type(self).__name__}({sum(self._sizes)} elements in {len(self.param_groups)} groups, {hp})"


class AdamW(_FusedOptimizer):
    """AdamW as ``torch.optim.AdamW``: decoupled weight decay, bias correction, eps outside the sqrt.

    >>> import numpy as np
    >>> p = [np.zeros((2, 3), np.float32), np.zeros(5, np.float32)]
    >>> g = [np.ones((2, 3), np.float32), -np.ones(5, np.float32)]
    >>> opt = AdamW(p, g, lr=0.01)
    >>> _ = opt.step(); round(float(p[0][0, 0]), 6), round(float(p[1][0]), 6)
    (-0.01, 0.01)
    """

    _algo = "adamw"
    _hyper_keys = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params: Any, grads: Any = None, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, *, max_grad_norm: float | None = None,
                 stochastic_rounding: bool = False, shard: tuple[int, int] | None = None, seed: int = 0) -> None:
        super().__init__(params, grads, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay},
                         max_grad_norm=max_grad_norm, stochastic_rounding=stochastic_rounding, shard=shard, seed=seed)


class Lion(_FusedOptimizer):
    """Lion (Chen et al. 2023): ``p -= lr * (sign(b1*m + (1-b1)*g) + wd*p)``; ``m = b2*m + (1-b2)*g``.

    >>> import numpy as np
    >>> p = np.zeros(3, np.float32); g = np.array([1.0, -2.0, 0.0], np.float32)
    >>> _ = Lion(p, g, lr=0.5).step(); p.tolist()
    [-0.5, 0.5, 0.0]
    """

    _algo = "lion"
    _hyper_keys = ("lr", "betas", "weight_decay")

    def __init__(self, params: Any, grads: Any = None, lr: float = 1e-4, betas: Sequence[float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, max_grad_norm: float | None = None, stochastic_rounding: bool = False,
                 shard: tuple[int, int] | None = None, seed: int = 0) -> None:
        super().__init__(params, grads, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay},
                         max_grad_norm=max_grad_norm, stochastic_rounding=stochastic_rounding, shard=shard, seed=seed)


class SGD(_FusedOptimizer):
    """SGD as ``torch.optim.SGD``: momentum, dampening, Nesterov and (coupled) weight decay.

    >>> import numpy as np
    >>> p = np.ones(2, np.float32); g = np.ones(2, np.float32)
    >>> opt = SGD(p, g, lr=0.1, momentum=0.9)
    >>> _ = opt.step(); _ = opt.step(); p.tolist()  # 1 - 0.1*1 - 0.1*1.9
    [0.7099999785423279, 0.7099999785423279]
    """

    _algo = "sgd"
    _hyper_keys = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params: Any, grads: Any = None, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, max_grad_norm: float | None = None,
                 stochastic_rounding: bool = False, shard: tuple[int, int] | None = None, seed: int = 0) -> None:
        super().__init__(params, grads, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                         "weight_decay": weight_decay, "nesterov": bool(nesterov)},
                         max_grad_norm=max_grad_norm, stochastic_rounding=stochastic_rounding, shard=shard, seed=seed)
