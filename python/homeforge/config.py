"""The typed configuration of a training run, read from TOML with ``--set key=value`` overrides.

A run config has five sections; every key is typed, and an unknown key or a value of the wrong
type raises ValueError naming the key::

    [model]                 # a preset and/or explicit ModelConfig fields
    preset = "1m"
    dtype = "fp32"          # or "bf16"
    [data]
    path = "data/prepared"  # a directory made by `homeforge data prepare`
    seq_len = 256
    batch_size = 8          # sequences per micro-batch per rank
    grad_accum = 1
    [optim]
    lr = 3e-3
    warmup_steps = 100
    [train]
    steps = 1000
    out_dir = "runs/demo"
    [distributed]
    mode = "none"           # none | ddp | zero1 | diloco (mpirun with >1 rank and "none" means ddp)

>>> cfg = RunConfig.from_dict({"optim": {"lr": 1e-3}}, overrides=["train.steps=50", "model.preset='10m'"])
>>> cfg.optim.lr, cfg.train.steps, cfg.model.preset
(0.001, 50, '10m')
>>> RunConfig.from_dict({"optim": {"lr": "fast"}})
Traceback (most recent call last):
...
ValueError: config key optim.lr: expected float, got str ('fast')
>>> RunConfig.from_dict({}, overrides=["optim.lrr=1"])
Traceback (most recent call last):
...
ValueError: unknown config key optim.lrr (optim has: betas, eps, lr, max_grad_norm, min_lr_ratio, name, nonfinite, schedule, warmup_steps, weight_decay)
>>> [round(lr_at(s, lr=1.0, warmup_steps=2, total_steps=6, min_lr=0.0), 3) for s in range(6)]
[0.5, 1.0, 1.0, 0.75, 0.25, 0.0]
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["ModelSection", "DataSection", "OptimSection", "TrainSection", "DistributedSection", "RunConfig",
           "lr_at", "check_resume", "RESUME_FIXED"]


@dataclass
class ModelSection:
    """The model: ``preset`` ("1m", "10m", "nano", "mini") gives defaults; set fields override them."""

    preset: str | None = "1m"  # None (TOML: "none"): every shape field must be set
    vocab_size: int | None = None  # default: the tokenizer's n_vocab
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    ffn_hidden: int | None = None
    max_seq_len: int | None = None  # default: at least data.seq_len
    rope_theta: float | None = None
    norm_eps: float | None = None
    tie_embeddings: bool | None = None
    dtype: str = "fp32"
    recompute: bool = False
    seed: int = 0


@dataclass
class DataSection:
    path: str = ""
    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    shuffle: bool = True


@dataclass
class OptimSection:
    name: str = "adamw"
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | linear | constant (after the linear warmup)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    max_grad_norm: float | None = 1.0
    nonfinite: str = "skip"  # skip | abort


@dataclass
class TrainSection:
    steps: int = 1000
    out_dir: str = "runs/run"
    log_every: int = 10
    eval_every: int = 100  # 0: never
    eval_batches: int = 20
    sample_every: int = 0  # 0: never
    sample_prompt: str = ""
    sample_tokens: int = 64
    sample_temperature: float = 0.8
    sample_top_k: int | None = 40
    checkpoint_every: int = 0  # 0: only at the end
    keep_last: int = 3
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = True
    peak_gflops: float | None = None  # for MFU; default: measured
    seed: int = 0


@dataclass
class DistributedSection:
    """MPI data parallelism (homeforge.distributed; its DistConfig documents each key).

    ``mode = "none"`` trains in one process, unless launched by mpirun with more than one rank,
    which means "ddp". The optimizer keys come from [optim] and the threads from train.threads.
    """

    mode: str = "none"  # none | ddp | zero1 | diloco
    bucket_mb: float | None = None  # None: homeforge.distributed's measured default
    overlap: bool = True
    diloco_h: int = 50
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    outer_nesterov: bool = True
    inner_optimizer: str = "adamw"
    wire_dtype: str = "f32"
    checksum_every: int = 100
    timeout_s: float = 300.0
    straggler_ratio: float = 1.5

    def strategy_config(self, cfg: RunConfig) -> dict[str, Any]:
        """The mapping homeforge.distributed.make_strategy takes."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if d["mode"] == "none":
            d["mode"] = "ddp"
        o = cfg.optim
        d.update(lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm,
                 nonfinite=o.nonfinite, threads=cfg.train.threads)
        return d


# Keys a resumed run takes from its checkpoint and so cannot change: the data order (the loader's
# position is an index into it) and the optimizer hyper-parameters restored with its state. The
# trainer raises naming them rather than silently ignoring a new value (see check_resume).
RESUME_FIXED = ("data.seed", "data.shuffle", "optim.betas", "optim.eps", "optim.weight_decay")


def check_resume(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """ValueError naming every :data:`RESUME_FIXED` key whose value in ``current`` (a
    :meth:`RunConfig.to_dict`) differs from ``saved`` (the config stored in a checkpoint).

    >>> a = RunConfig().to_dict()
    >>> check_resume(a, RunConfig.from_dict({}, ["optim.lr=1.0"]).to_dict(), "checkpoint x")  # lr may change
    >>> check_resume(a, RunConfig.from_dict({}, ["data.seed=7"]).to_dict(), "checkpoint x")
    Traceback (most recent call last):
    ...
    ValueError: checkpoint x cannot be resumed with changed settings (data.seed: 0 saved, 7 now); set them back or start a new run in another train.out_dir
    """
    diffs = []
    for key in RESUME_FIXED:
        sec, name = key.split(".")
        if name not in saved.get(sec, {}):
            continue
        old, new = saved[sec][name], current[sec][name]
        if isinstance(old, (list, tuple)):
            old, new = list(old), list(new)
        if old != new:
            diffs.append(f"{key}: {old!r} saved, {new!r} now")
    if diffs:
        raise ValueError(f"{where} cannot be resumed with changed settings ({'; '.join(diffs)}); "
                         "set them back or start a new run in another train.out_dir")


_SECTIONS = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "train": TrainSection,
             "distributed": DistributedSection}


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to float, lists to tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ValueError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"config key {key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key}: expected float, got {type(value).__name__} ({value!r})")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key}: expected int, got {type(value).__name__} ({value!r})")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ValueError(f"config key {key}: expected {tp.__name__}, got {type(value).__name__} ({value!r})")
        return value
    raise TypeError(f"unsupported config annotation {tp} for {key}")


def _parse_value(text: str) -> Any:
    """A --set value: a TOML value (``3``, ``1e-3``, ``true``, ``"x"``, ``[0.9, 0.95]``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    @classmethod
    def from_dict(cls, d: dict[str, Any], overrides: Sequence[str] = ()) -> RunConfig:
        """Build from a nested dict, then apply ``section.key=value`` overrides; validate."""
        d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like section.key=value")
            key, text = item.split("=", 1)
            parts = key.strip().split(".")
            if len(parts) != 2:
                raise ValueError(f"override key {key.strip()!r} must be section.key (sections: {', '.join(_SECTIONS)})")
            sec, name = parts
            if sec not in _SECTIONS:
                raise ValueError(f"unknown config section {sec!r} in override {item!r} (sections: {', '.join(_SECTIONS)})")
            d.setdefault(sec, {})
            if not isinstance(d[sec], dict):
                raise ValueError(f"config key {sec} must be a table")
            d[sec][name] = _parse_value(text.strip())
        kwargs = {}
        for sec, values in d.items():
            if sec not in _SECTIONS:
                raise ValueError(f"unknown config section {sec!r} (sections: {', '.join(_SECTIONS)})")
            if not isinstance(values, dict):
                raise ValueError(f"config key {sec} must be a table, got {type(values).__name__}")
            sec_cls = _SECTIONS[sec]
            hints = typing.get_type_hints(sec_cls)
            fields = {f.name for f in dataclasses.fields(sec_cls)}
            sk = {}
            for name, value in values.items():
                if name not in fields:
                    raise ValueError(f"unknown config key {sec}.{name} ({sec} has: {', '.join(sorted(fields))})")
                sk[name] = _coerce(f"{sec}.{name}", value, hints[name])
            kwargs[sec] = sec_cls(**sk)
        cfg = cls(**kwargs)
        if cfg.model.preset in ("none", ""):
            cfg.model.preset = None
        cfg.validate()
        return cfg

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {p}") from None
        try:
            d = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: invalid TOML ({e})") from None
        return cls.from_dict(d, overrides)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["optim"]["betas"] = list(self.optim.betas)
        return out

    def to_toml(self) -> str:
        """TOML text that from_toml reads back (None values are left out: they mean "default")."""
        lines = []
        for sec, values in self.to_dict().items():
            lines.append(f"[{sec}]")
            for k, v in values.items():
                if v is None and sec == "model" and k == "preset":
                    v = "none"  # TOML has no null; "none" reads back as None
                if v is None:
                    continue
                lines.append(f"{k} = {_toml_value(v)}")
            lines.append("")
        return "\n".join(lines)

    def validate(self) -> None:
        def pos(key: str, v: int | float | None, allow_zero: bool = False) -> None:
            if v is not None and (not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero)):
                raise ValueError(f"config key {key} must be {'>= 0' if allow_zero else '> 0'} and finite, got {v}")

        pos("data.seq_len", self.data.seq_len)
        pos("data.batch_size", self.data.batch_size)
        pos("data.grad_accum", self.data.grad_accum)
        pos("optim.lr", self.optim.lr, allow_zero=True)
        pos("optim.eps", self.optim.eps, allow_zero=True)
        pos("optim.weight_decay", self.optim.weight_decay, allow_zero=True)
        pos("optim.max_grad_norm", self.optim.max_grad_norm)
        pos("optim.warmup_steps", self.optim.warmup_steps, allow_zero=True)
        pos("train.steps", self.train.steps)
        pos("train.keep_last", self.train.keep_last)
        pos("train.threads", self.train.threads)
        for k in ("log_every", "eval_every", "sample_every", "checkpoint_every"):  # 0: never
            pos(f"train.{k}", getattr(self.train, k), allow_zero=True)
        pos("train.eval_batches", self.train.eval_batches)
        pos("train.sample_tokens", self.train.sample_tokens)
        pos("train.peak_gflops", self.train.peak_gflops)
        if not self.train.sample_temperature >= 0.0 or math.isinf(self.train.sample_temperature):
            raise ValueError(f"config key train.sample_temperature must be a finite number >= 0 (0: greedy), "
                             f"got {self.train.sample_temperature}")
        pos("train.sample_top_k", self.train.sample_top_k)
        if not 0.0 <= self.optim.min_lr_ratio <= 1.0:
            raise ValueError(f"config key optim.min_lr_ratio must be in [0, 1], got {self.optim.min_lr_ratio}")
        for i, b in enumerate(self.optim.betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"config key optim.betas[{i}] must be in [0, 1), got {b}")
        choices = {"optim.name": (self.optim.name, ("adamw",)),
                   "optim.schedule": (self.optim.schedule, ("cosine", "linear", "constant")),
                   "optim.nonfinite": (self.optim.nonfinite, ("skip", "abort")),
                   "model.dtype": (self.model.dtype, ("fp32", "bf16")),
                   "distributed.mode": (self.distributed.mode, ("none", "ddp", "zero1", "diloco")),
                   "distributed.wire_dtype": (self.distributed.wire_dtype, ("f32", "bf16")),
                   "distributed.inner_optimizer": (self.distributed.inner_optimizer, ("adamw", "sgd"))}
        for key, (v, allowed) in choices.items():
            if v not in allowed:
                raise ValueError(f"config key {key} must be one of {', '.join(map(repr, allowed))}, got {v!r}")


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # a TOML basic string: backslash, quote and every control character (U+0000-U+001F, U+007F) escaped
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                             for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, min_lr: float,
          schedule: str = "cosine") -> float:
    """Learning rate of 0-based ``step``: linear warmup to ``lr`` over ``warmup_steps`` steps
    (``lr * (step + 1) / warmup_steps``), then cosine (or linear) decay to ``min_lr`` at
    ``total_steps - 1``, or constant."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, total_steps - 1 - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "linear":
        return lr + (min_lr - lr) * t
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))
