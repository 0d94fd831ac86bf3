"""The training loop: ``homeforge.Trainer(config).fit()`` and ``homeforge train --config run.toml``.

One step: the LR for the step from the schedule (:func:`homeforge.config.lr_at`), ``grad_accum``
micro-batches from the loader, ``strategy.train_step`` (forward+backward per micro-batch, clipping,
AdamW), then logging. Every ``eval_every`` steps the validation loss, every ``sample_every`` steps a
generated sample, every ``checkpoint_every`` steps (and at the end) a checkpoint.

Output, under ``train.out_dir``: ``metrics.jsonl`` (one JSON object per logged step, evaluation and
sample), ``checkpoints/step_*/`` (see :mod:`homeforge.checkpoint`; each holds the run's
``tokenizer.hftok``), ``config.toml`` (the resolved config), and TensorBoard event files in ``tb/``
when ``tensorboard`` is installed.

MFU = tokens/s x ``model.flops_per_token(seq_len)`` / peak FLOP/s, where the peak is
``train.peak_gflops`` if set, else the GEMM limit benchmarks/bench_machine.py recorded
(benchmarks/results/machine.json, in a source checkout), else the oneDNN GEMM throughput measured
once at start-up with the run's threads (1024x1024x1024, fp32 or bf16 like the model, best run
in 0.3 s). The first console line states the peak used.

Resume (``fit(resume=...)``, ``homeforge train --resume``) restores the parameters, the optimizer
state, the data position, the RNG and the step, so N steps + resume + N steps gives bit for bit the
parameters of 2N uninterrupted steps (in one process and under ddp or zero1; DiLoCo's resume is
close but not exact, see docs/distributed.md). The global batch (``batch_size x grad_accum x world_size``)
and the keys of :data:`homeforge.config.RESUME_FIXED` (data seed and shuffle, optimizer betas, eps,
weight_decay) must keep their saved values (ValueError naming them otherwise); other keys (lr,
max_grad_norm, steps, ...) take the new value.

>>> import os, tempfile, homeforge
>>> from pathlib import Path
>>> from homeforge.data import prepare
>>> d = tempfile.mkdtemp()
>>> texts = [f"def f{i}(x):" + chr(10) + f"    return x * {i}" for i in range(200)]
>>> for i in range(4):
...     _ = Path(d, f"{i}.txt").write_text((2 * chr(10)).join(texts[i::4]))
>>> tok = homeforge.Tokenizer.train(texts, vocab_size=300, special_tokens=["<|endoftext|>"])
>>> _ = prepare([d], os.path.join(d, "data"), tok)
>>> cfg = {"model": {"preset": "none", "d_model": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2,
...                  "ffn_hidden": 64}, "data": {"path": os.path.join(d, "data"), "seq_len": 16, "batch_size": 2},
...        "train": {"steps": 4, "out_dir": os.path.join(d, "run"), "eval_every": 0, "progress": False,
...                  "tensorboard": False}}
>>> summary = Trainer(cfg, log=lambda line: None).fit()
>>> summary["step"], sorted(os.listdir(os.path.join(d, "run", "checkpoints")))
(4, ['step_00000004'])
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import RunConfig, check_resume, lr_at
from .data import TOKENIZER_FILE, TokenLoader, load_manifest

__all__ = ["Trainer", "build_model_config", "check_architecture", "peak_flops", "mpi_world_size"]

# Fields of ModelConfig that change the parameters' shapes or meaning (dtype/recompute do not).
ARCH_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "max_seq_len",
             "rope_theta", "norm_eps", "tie_embeddings")


def data_position(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's data position, with ``step_windows`` (the global batch in windows). Positions
    saved before the loader recorded it get it from the checkpoint's own run config and world size,
    whatever its ``global_batch`` meant in the version that wrote it.

    >>> data_position({"data": {"cursor": 8}, "config": {"data": {"batch_size": 4, "grad_accum": 2}}, "world_size": 2})
    {'cursor': 8, 'step_windows': 16}
    """
    pos = dict(state["data"])
    saved = (state.get("config") or {}).get("data") or {}
    if "step_windows" not in pos and "batch_size" in saved and "world_size" in state:
        pos["step_windows"] = int(saved["batch_size"]) * int(saved.get("grad_accum", 1)) * int(state["world_size"])
    return pos


def mpi_world_size() -> int:
    """Ranks of the MPI job this process was launched in (1 when not under mpirun), without importing MPI."""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 1


def build_model_config(cfg: RunConfig, n_vocab: int) -> Any:
    """The ModelConfig of a run: the preset's values, overridden by the [model] keys that are set."""
    from .model import ModelConfig

    m = cfg.model
    vocab = m.vocab_size if m.vocab_size is not None else n_vocab
    if vocab < n_vocab:
        raise ValueError(f"config key model.vocab_size={vocab} is smaller than the tokenizer's {n_vocab} tokens")
    if m.preset is not None:
        base = ModelConfig.preset(m.preset, vocab).to_dict()
    else:
        base = {"vocab_size": vocab}
    for f in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "max_seq_len", "rope_theta", "norm_eps",
              "tie_embeddings"):
        v = getattr(m, f)
        if v is not None:
            base[f] = v
    missing = [f for f in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden") if base.get(f) is None]
    if missing:
        raise ValueError(f"config keys model.{', model.'.join(missing)} must be set when model.preset is not")
    seq = cfg.data.seq_len
    if m.max_seq_len is None:
        base["max_seq_len"] = max(int(base.get("max_seq_len") or 0), seq)
    elif m.max_seq_len < seq:
        raise ValueError(f"config key data.seq_len={seq} exceeds model.max_seq_len={m.max_seq_len}")
    base["vocab_size"] = vocab
    base["dtype"] = m.dtype
    base["recompute"] = m.recompute
    return ModelConfig.from_dict(base)


def check_architecture(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """ValueError naming every architecture field in which ``saved`` and ``current`` differ."""
    diffs = [f"{k}: {saved.get(k)!r} there, {current.get(k)!r} here" for k in ARCH_KEYS if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(f"{where} is from another architecture ({'; '.join(diffs)})")


def copy_params(model: Any, params: dict[str, np.ndarray], where: str) -> None:
    """Copy named arrays into the model's parameters, checking names and shapes."""
    own = model.named_parameters()
    missing = sorted(set(own) - set(params))
    extra = sorted(set(params) - set(own))
    if missing or extra:
        raise ValueError(f"{where} does not match this model's parameters (missing: {missing[:5]}, unexpected: {extra[:5]})")
    for name, dst in own.items():
        src = params[name]
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{where}: parameter {name} has shape {tuple(src.shape)}, this model has {tuple(dst.shape)}")
        np.copyto(dst, src.astype(dst.dtype, copy=False))


_PEAK_CACHE: dict[tuple[str, int], float] = {}


def _benchmarked_peak(dtype: str, threads: int) -> float | None:
    """The GEMM peak that benchmarks/bench_machine.py recorded, when running from a source checkout
    on the machine it was measured on with the same threads."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "machine.json"
    try:
        data = json.loads(path.read_text())
        limits = data["limits"]
        info = data.get("machine", {})
        if int(info.get("cores", -1)) != len(os.sched_getaffinity(0)) or threads != len(os.sched_getaffinity(0)):
            return None
        return 1e9 * float(limits["gemm_bf16_gflops" if dtype == "bf16" else "gemm_f32_gflops"])
    except (OSError, KeyError, ValueError, TypeError, AttributeError):
        return None


def peak_flops(dtype: str = "fp32") -> float:
    """This machine's GEMM peak in FLOP/s with the current threads: benchmarks/results/machine.json
    from bench_machine when present (source checkout, same core count), else oneDNN 1024^3 measured
    now, best of the runs in 0.3 s (lower than the true peak if other jobs held the cores all along)."""
    from . import _core
    from .runtime import get_num_threads

    key = (dtype, get_num_threads())
    if key not in _PEAK_CACHE:
        recorded = _benchmarked_peak(dtype, key[1])
        if recorded:
            _PEAK_CACHE[key] = recorded
            return recorded
        n = 1024
        if dtype == "bf16":
            import ml_dtypes

            a = np.ones((n, n), dtype=ml_dtypes.bfloat16)
        else:
            a = np.ones((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        _core.gemm(a, a, c)
        best = math.inf
        start = time.perf_counter()
        runs = 0
        # best of many runs over ~0.3 s: on a shared machine the best run is the one that had the cores
        while runs < 5 or (time.perf_counter() - start < 0.3 and runs < 200):
            t0 = time.perf_counter()
            _core.gemm(a, a, c)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        _PEAK_CACHE[key] = 2.0 * n**3 / best
    return _PEAK_CACHE[key]


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _fmt_rate(x: float) -> str:
    return f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


class Trainer:
    """Train a model on prepared data (``data.path``), as configured by a :class:`RunConfig`.

    ``config`` is a RunConfig, a nested dict, or the path of a TOML file. ``log`` receives every
    console line (default: print to stdout, only on the main rank).
    """

    def __init__(self, config: RunConfig | dict[str, Any] | str | os.PathLike[str], *, tokenizer: Any = None,
                 log: Callable[[str], None] | None = None, strategy: Any = None) -> None:
        if isinstance(config, RunConfig):
            cfg = config
        elif isinstance(config, dict):
            cfg = RunConfig.from_dict(config)
        else:
            cfg = RunConfig.from_toml(config)
        self.config = cfg
        if cfg.train.threads is not None:
            from .runtime import set_num_threads

            set_num_threads(cfg.train.threads)
        if not cfg.data.path:
            raise ValueError("config key data.path is not set (a directory made by `homeforge data prepare`)")
        self.data_dir = Path(cfg.data.path)
        self.manifest = load_manifest(self.data_dir)
        if tokenizer is None:
            from .tokenizer import Tokenizer

            tokenizer = Tokenizer.load(self.data_dir / self.manifest.get("tokenizer_file", TOKENIZER_FILE))
        if tokenizer.hash() != self.manifest["tokenizer_hash"]:
            raise ValueError(f"the tokenizer does not match the one {self.data_dir} was prepared with (hash differs)")
        self.tokenizer = tokenizer
        self.model_config = build_model_config(cfg, tokenizer.n_vocab)
        from .model import Model

        self.model = Model(self.model_config, seed=cfg.model.seed)
        if strategy is None:
            if cfg.distributed.mode != "none" or mpi_world_size() > 1:
                from .distributed import make_strategy

                strategy = make_strategy(cfg.distributed.strategy_config(cfg), self.model)
            else:
                from .strategy import LocalStrategy

                o = cfg.optim
                strategy = LocalStrategy(self.model, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                                         max_grad_norm=o.max_grad_norm, nonfinite=o.nonfinite)
        self.strategy = strategy
        self.rank, self.world_size = int(strategy.rank), int(strategy.world_size)
        self.is_main = bool(strategy.is_main())
        self._log = log if log is not None else (print if self.is_main else (lambda s: None))
        d = cfg.data
        self.loader = TokenLoader(self.data_dir, d.seq_len, d.batch_size, split="train", seed=d.seed, rank=self.rank,
                                  world_size=self.world_size, shuffle=d.shuffle, grad_accum=d.grad_accum)
        self.val_loader: TokenLoader | None = None
        if self.manifest["splits"].get("val", {}).get("tokens", 0) > 0 and cfg.train.eval_every:
            try:
                self.val_loader = TokenLoader(self.data_dir, d.seq_len, d.batch_size, split="val", seed=0,
                                              rank=self.rank, world_size=self.world_size, shuffle=False)
            except ValueError as e:
                self._log(f"note: no validation loss ({e})")
        self.out_dir = Path(cfg.train.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.step = 0
        self.rng = np.random.default_rng(cfg.train.seed)
        self.best_val = math.inf
        self.last_val: float | None = None
        self.last_val_step: int | None = None  # the step last_val was measured at
        self.history: list[dict[str, Any]] = []
        self._tb: Any = None
        self._peak: float | None = None

    # ------------------------------------------------------------------ state

    @property
    def tokens_per_step(self) -> int:
        return self.loader.tokens_per_step

    def lr(self, step: int) -> float:
        o = self.config.optim
        return lr_at(step, lr=o.lr, warmup_steps=o.warmup_steps, total_steps=self.config.train.steps,
                     min_lr=o.lr * o.min_lr_ratio, schedule=o.schedule)

    def _tokenizer_file(self) -> Path:
        return self.data_dir / self.manifest.get("tokenizer_file", TOKENIZER_FILE)

    def save(self, metric: float | None = None) -> Path | None:
        """Write a checkpoint of the current step (all ranks must call it; the main rank writes)."""
        opt_state = self.strategy.state_dict()
        path = None
        if self.is_main:
            state = {
                "config": self.config.to_dict(),
                "model_config": self.model_config.to_dict(),
                "data": self.loader.state_dict(),
                "rng": self.rng.bit_generator.state,
                "best_val": None if not math.isfinite(self.best_val) else self.best_val,
                "world_size": self.world_size,
                "tokenizer_hash": self.tokenizer.hash(),
            }
            files = {}
            if self._tokenizer_file().is_file():
                files[TOKENIZER_FILE] = self._tokenizer_file()
            path = save_checkpoint(self.ckpt_dir, self.step, params=self.model.named_parameters(), optimizer=opt_state,
                                   state=state, files=files, metric=metric, keep_last=self.config.train.keep_last)
        self.strategy.barrier()
        return path

    def load(self, path: str | os.PathLike[str]) -> Checkpoint:
        """Restore a checkpoint (a step directory, or a run's checkpoints/ or out_dir: the latest)."""
        p = Path(path)
        if (p / "checkpoints").is_dir():
            p = p / "checkpoints"
        ck = load_checkpoint(p)
        check_architecture(ck.state.get("model_config", {}), self.model_config.to_dict(), f"checkpoint {ck.path}")
        check_resume(ck.state.get("config", {}), self.config.to_dict(), f"checkpoint {ck.path}")
        copy_params(self.model, ck.params, f"checkpoint {ck.path}")
        self.strategy.load_state_dict(ck.optimizer)
        self.loader.load_state_dict(data_position(ck.state))
        self.rng.bit_generator.state = ck.state["rng"]
        bv = ck.state.get("best_val")
        self.best_val = math.inf if bv is None else float(bv)
        self.step = ck.step
        # the checkpoint's metric is the validation loss of its step (None: not evaluated there)
        self.last_val = None if ck.metric is None else float(ck.metric)
        self.last_val_step = None if ck.metric is None else ck.step
        return ck

    # ------------------------------------------------------------------ evaluation / samples

    def evaluate(self, max_batches: int | None = None) -> float | None:
        """Mean validation loss over up to ``eval_batches`` batches (all ranks), or None without val data."""
        if self.val_loader is None:
            return None
        n = self.config.train.eval_batches if max_batches is None else max_batches
        losses = [float(self.model.loss(x, y)) for x, y in self.val_loader.eval_batches(n)]
        local = float(np.mean(losses)) if losses else float("nan")
        return self.strategy.allreduce_mean(local)

    def sample(self, prompt: str | None = None, max_new_tokens: int | None = None, *, seed: int | None = None) -> str:
        """``prompt`` (default ``train.sample_prompt``) and its generated continuation, up to
        ``<|endoftext|>``; the same generation as ``homeforge generate``
        (:func:`homeforge.inference.generate_text`: capped to max_seq_len, tokenizer ids only)."""
        from .inference import generate_text

        t = self.config.train
        prompt = t.sample_prompt if prompt is None else prompt
        if seed is None:
            seed = int(self.rng.integers(2**31))
        return prompt + generate_text(self.model, self.tokenizer, prompt, max_new_tokens=max_new_tokens or t.sample_tokens,
                                      temperature=t.sample_temperature, top_k=t.sample_top_k, seed=seed)

    # ------------------------------------------------------------------ logging

    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if not self.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, rec["step"])

    def _open_outputs(self) -> None:
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        from ._atomic import atomic_write

        with atomic_write(self.out_dir / "config.toml", "w") as f:
            f.write(self.config.to_toml())
        if self.config.train.tensorboard and importlib.util.find_spec("tensorboard") is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs torch + tensorboard

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:
                self._tb = None

    def peak(self) -> float:
        if self._peak is None:
            g = self.config.train.peak_gflops
            self._peak = g * 1e9 if g else peak_flops("bf16" if self.model_config.dtype == "bf16" else "fp32")
        return self._peak

    # ------------------------------------------------------------------ the loop

    def _claim_out_dir(self, overwrite: bool) -> None:
        """A fresh run must not mix with an earlier one in ``out_dir`` (its checkpoints would be
        overwritten step by step and later resumed, its metrics appended to): ValueError, or with
        ``overwrite`` the earlier run's checkpoints/, metrics.jsonl and tb/ are removed first."""
        old: list[Path] = []
        if self.is_main:
            old = [p for p in (self.ckpt_dir, self.out_dir / "metrics.jsonl", self.out_dir / "tb") if p.exists()]
            if overwrite:
                for p in old:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                old = []
            elif not (self.out_dir / "metrics.jsonl").exists() and not any(self.ckpt_dir.glob("step_*")):
                old = []  # nothing of a run yet (an empty checkpoints/ or a tb/ alone)
        # every rank raises, not only the main one that looked
        if self.strategy.allreduce_mean(1.0 if old else 0.0) > 0:
            found = ", ".join(p.name for p in old) or "files of an earlier run"
            raise ValueError(f"train.out_dir {self.out_dir} already holds a run ({found}); continue it with --resume "
                             "(fit(resume=True)), start over with --overwrite (fit(overwrite=True)), or choose "
                             "another train.out_dir")

    def fit(self, *, resume: str | os.PathLike[str] | bool | None = None, until: int | None = None,
            save: bool = True, overwrite: bool = False) -> dict[str, Any]:
        """Train to ``train.steps`` (or stop early after step ``until``); returns a summary.

        A checkpoint is written every ``checkpoint_every`` steps and, with ``save``, at the end.
        ``resume=True`` continues from the latest checkpoint in ``out_dir`` (or starts fresh if there
        is none); a path continues from that checkpoint. A fresh run (no ``resume``) into an
        ``out_dir`` that holds an earlier run's checkpoints or metrics raises ValueError, unless
        ``overwrite`` removes them first.
        """
        cfg = self.config
        t = cfg.train
        if resume is True:
            if (self.ckpt_dir).is_dir() and any(self.ckpt_dir.glob("step_*")):
                self.load(self.ckpt_dir)
        elif resume:
            self.load(resume)
        if self.step == 0 and not resume:
            self._claim_out_dir(overwrite)
        self._open_outputs()
        total = t.steps
        stop = total if until is None else min(until, total)
        seq = cfg.data.seq_len
        flops_tok = float(self.model.flops_per_token(seq))
        peak = self.peak()
        if self.step == 0 or resume:
            n_params = self.model.num_parameters()
            self._log(f"model: {n_params / 1e6:.2f}M parameters ({self.model_config.d_model}d x {self.model_config.n_layers} "
                      f"layers, vocab {self.model_config.vocab_size}, {self.model_config.dtype}); "
                      f"{self.tokens_per_step} tokens/step; {self.world_size} rank(s); "
                      f"steps {self.step}->{stop} of {total}; MFU vs {peak / 1e9:.0f} GFLOP/s GEMM peak")
        tty = sys.stdout.isatty() and t.progress
        window_tokens, window_time = 0, 0.0
        run_t0 = time.perf_counter()
        run_tokens = 0
        train_seconds = 0.0
        last_saved = -1
        out: dict[str, Any] = {}
        loss_ema: float | None = None
        while self.step < stop:
            lr = self.lr(self.step)
            t0 = time.perf_counter()
            batches = self.loader.next_step()
            out = self.strategy.train_step(batches, lr)
            dt = time.perf_counter() - t0
            self.step += 1
            window_tokens += int(out["tokens"])
            window_time += dt
            train_seconds += dt
            run_tokens += int(out["tokens"])
            loss = float(out["loss"])
            if math.isfinite(loss):
                loss_ema = loss if loss_ema is None else 0.9 * loss_ema + 0.1 * loss
            if self.step % max(1, t.log_every) == 0 or self.step == stop or self.step == 1:
                tps = window_tokens / max(window_time, 1e-9)
                mfu = tps * flops_tok / (peak * self.world_size)  # each rank's peak is measured with its own threads
                rec = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": float(out["grad_norm"]),
                       "skipped": bool(out["skipped"]), "tokens_per_s": tps, "mfu": mfu,
                       "tokens": self.step * self.tokens_per_step, "time": time.time()}
                self._record(rec)
                elapsed = time.perf_counter() - run_t0
                done_here = run_tokens / max(self.tokens_per_step, 1)
                eta = (stop - self.step) * elapsed / max(done_here, 1e-9)
                width = 24
                fill = int(width * self.step / max(total, 1))
                line = (f"step {self.step:>{len(str(total))}}/{total} [{'#' * fill}{'.' * (width - fill)}] "
                        f"loss {loss:.4f} | lr {lr:.2e} | {_fmt_rate(tps)} tok/s | MFU {100 * mfu:.1f}% | "
                        f"ETA {_fmt_time(eta)}" + (" | skipped" if out["skipped"] else ""))
                if tty:
                    sys.stdout.write("\r" + line + "\033[K")
                    sys.stdout.flush()
                else:
                    self._log(line)
                window_tokens, window_time = 0, 0.0
            val = None
            if t.eval_every and (self.step % t.eval_every == 0 or self.step == total):
                val = self.evaluate()
                if val is not None:
                    self.last_val, self.last_val_step = val, self.step
                    self.best_val = min(self.best_val, val)
                    self._record({"step": self.step, "val_loss": val, "val_ppl": math.exp(min(val, 700.0))})
                    if tty:
                        sys.stdout.write("\n")
                    self._log(f"step {self.step}: val loss {val:.4f} (ppl {math.exp(min(val, 700.0)):.2f})")
            if t.sample_every and self.step % t.sample_every == 0:
                text = self.sample()
                self._record({"step": self.step, "sample": text})
                if tty:
                    sys.stdout.write("\n")
                self._log(f"step {self.step}: sample: {text!r}")
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self.save(metric=val)
                last_saved = self.step
        if tty:
            sys.stdout.write("\n")
            sys.stdout.flush()
        path = None
        if save and last_saved != self.step:
            path = self.save(metric=self.last_val if self.last_val_step == self.step else None)
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        wall = time.perf_counter() - run_t0
        summary = {"step": self.step, "loss": out.get("loss"), "loss_ema": loss_ema, "val_loss": self.last_val,
                   "tokens": run_tokens, "seconds": wall, "train_seconds": train_seconds,
                   "tokens_per_s": run_tokens / max(train_seconds, 1e-9),
                   "checkpoint": str(path) if path else str(self.ckpt_dir / f"step_{self.step:08d}")}
        return summary


def _replace(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with some section fields replaced."""
    kw = {}
    for sec, values in sections.items():
        kw[sec] = dataclasses.replace(getattr(cfg, sec), **values)
    return dataclasses.replace(cfg, **kw)
