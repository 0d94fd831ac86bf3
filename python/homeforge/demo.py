"""``homeforge demo``: the whole pipeline in a few minutes, on text every Python install carries.

1. the corpus: the running Python's standard-library sources (``sysconfig.get_paths()["stdlib"]``,
   ``*.py``, test suites and vendored packages left out, sorted by path, up to ``max_mb``), or the
   user's own files/folders with ``--corpus``;
2. a byte-level BPE tokenizer trained on it (o200k pre-tokenization, ``<|endoftext|>``);
3. data preparation: cleaning, deduplication, a 2% validation split, token shards;
4. training a small Llama-style model (preset "1m" by default) with AdamW, warmup + cosine, printing
   the loss as it falls, the validation loss and a generated sample;
5. a checkpoint, and the commands to generate from it, chat with it and export it.

>>> files = stdlib_corpus(max_bytes=200_000)
>>> 0 < sum(f.stat().st_size for f in files) <= 200_000, all(f.suffix == ".py" for f in files)
(True, True)
"""

from __future__ import annotations

import os
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["stdlib_corpus", "run_demo"]

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo",
              "ensurepip", "pydoc_data", "encodings"}


def stdlib_corpus(max_bytes: int = 8 << 20, root: str | None = None) -> list[Path]:
    """The standard library's ``*.py`` files (sorted; tests and vendored packages skipped), up to max_bytes."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise FileNotFoundError(f"the standard library sources are not at {base}; pass --corpus PATH")
    out: list[Path] = []
    total = 0
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).parts
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel[:-1]) or rel[-1].startswith("test_"):
            continue
        try:
            size = p.stat().st_size
        except OSError:
            continue
        if total + size > max_bytes:
            continue
        out.append(p)
        total += size
    if not out:
        raise ValueError(f"no *.py files found under {base}")
    return out


def _check_args(*, steps: int | None, minutes: float, preset: str, vocab_size: int, seq_len: int, batch_size: int,
                max_mb: float, lr: float, sample_every: int) -> None:
    """Every setting checked before the (minutes-long) tokenizer and data steps; errors name the flag."""
    import math

    from .model import _PRESETS

    def positive_int(name: str, v: Any, low: int = 1) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} (--{name.replace('_', '-')}) must be an int, got {v!r}")
        if v < low:
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be >= {low}, got {v}")

    def positive_float(name: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} (--{name.replace('_', '-')}) must be a number, got {v!r}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a finite number > 0, got {v}")

    if steps is not None:
        positive_int("steps", steps)
    for name, v in (("vocab_size", vocab_size), ("seq_len", seq_len), ("batch_size", batch_size)):
        positive_int(name, v)
    positive_int("sample_every", sample_every, 0)
    for name, v in (("minutes", minutes), ("max_mb", max_mb), ("lr", lr)):
        positive_float(name, v)
    if preset not in _PRESETS:
        raise ValueError(f"preset (--preset) must be one of {sorted(_PRESETS)}, got {preset!r}")


def run_demo(*, corpus: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None, out: str = "runs/demo", steps: int | None = None,
             minutes: float = 4.0, preset: str = "1m",
             vocab_size: int = 2048, seq_len: int = 128, batch_size: int = 16, max_mb: float = 8.0,
             lr: float = 3e-3, threads: int | None = None, sample_every: int = 0,
             log: Callable[[str], None] = print) -> dict:
    """Run the demo (see the module docstring); returns the training summary plus the paths.

    Every setting is checked first (ValueError / TypeError naming it and its flag), before any work.

    ``steps=None`` sizes the run to ``minutes`` of training: the first steps (all inside the LR
    warmup, whose schedule does not depend on the total) are timed, then the total is fixed, so the
    run is exactly the one a config with that many steps would give.
    """
    from .config import RunConfig
    from .data import PrepareConfig, expand_inputs, prepare
    from .tokenizer import Tokenizer
    from .trainer import Trainer

    _check_args(steps=steps, minutes=minutes, preset=preset, vocab_size=vocab_size, seq_len=seq_len,
                batch_size=batch_size, max_mb=max_mb, lr=lr, sample_every=sample_every)
    t_start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if corpus:
        corpus = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)  # one path, or several
        files = expand_inputs(corpus)
        what = ", ".join(map(os.fspath, corpus))
    else:
        files = stdlib_corpus(int(max_mb * (1 << 20)))
        what = f"Python {sys.version.split()[0]} standard library ({sysconfig.get_paths()['stdlib']})"
    mb = sum(f.stat().st_size for f in files) / 1e6
    log(f"[1/4] corpus: {len(files)} files, {mb:.1f} MB from {what}")

    t0 = time.perf_counter()
    tok_path = out_dir / "tokenizer.hftok"
    tok = Tokenizer.train([Path(f) for f in files], vocab_size, pattern="o200k", special_tokens=("<|endoftext|>",),
                          progress=sys.stderr.isatty())
    tok.save(tok_path)
    log(f"[2/4] tokenizer: {tok.n_vocab} tokens trained in {time.perf_counter() - t0:.1f}s -> {tok_path}")

    t0 = time.perf_counter()
    data_dir = out_dir / "data"
    m = prepare(files, data_dir, tok, config=PrepareConfig(val_fraction=0.02), overwrite=True,
                progress=sys.stderr.isatty())
    c = m["counts"]
    log(f"[3/4] data: {c['docs']} documents ({c['duplicates']} duplicates, {c['bad_lines']} bad lines dropped), "
        f"{m['splits']['train']['tokens']:,} train + {m['splits']['val']['tokens']:,} val tokens "
        f"({c['bytes_in'] / max(1, m['splits']['train']['tokens'] + m['splits']['val']['tokens']):.2f} bytes/token) "
        f"in {time.perf_counter() - t0:.1f}s -> {data_dir}")

    planned = steps if steps is not None else 100_000
    warmup = max(1, min(100, planned // 10))
    cfg = RunConfig.from_dict({
        "model": {"preset": preset},
        "data": {"path": str(data_dir), "seq_len": seq_len, "batch_size": batch_size},
        "optim": {"lr": lr, "warmup_steps": warmup, "weight_decay": 0.1},
        "train": {"steps": planned, "out_dir": str(out_dir / "run"), "log_every": max(1, planned // 20),
                  "eval_every": max(1, planned // 4), "eval_batches": 8, "sample_every": sample_every,
                  "sample_prompt": "def ", "sample_tokens": 96, "threads": threads},
    })
    trainer = Trainer(cfg, tokenizer=tok, log=log)
    if steps is None:
        # time a few warmup steps quietly, then fix the total so training takes about `minutes`
        calib = min(12, warmup - 1)
        trainer._log = lambda s: None
        trainer.config.train.log_every = 10**9
        trainer.config.train.eval_every = 0
        trainer.fit(until=2, save=False, overwrite=True)  # a demo run again starts over
        t0 = time.perf_counter()
        trainer.fit(until=calib, save=False)
        per_step = (time.perf_counter() - t0) / max(1, calib - 2)
        total = int(max(warmup + 10, min(50_000, minutes * 60.0 / max(per_step, 1e-6))))
        t = trainer.config.train
        t.steps, t.log_every, t.eval_every = total, max(1, total // 20), max(1, total // 4)
        trainer._log = log
        log(f"[4/4] training {preset} for {total} steps of {batch_size}x{seq_len} tokens "
            f"(~{minutes:g} min at the measured {per_step * 1e3:.0f} ms/step)")
    else:
        log(f"[4/4] training {preset} for {steps} steps of {batch_size}x{seq_len} tokens")
    summary = trainer.fit(overwrite=True)
    first = next((r["loss"] for r in trainer.history if "loss" in r), float("nan"))
    log(f"loss: {first:.3f} at step 1 -> {summary['loss']:.3f} at step {summary['step']}"
        + (f" (validation {summary['val_loss']:.3f})" if summary.get("val_loss") is not None else ""))
    sample = trainer.sample("def ", 120, seed=0)
    log("sample (prompt 'def '):\n" + "-" * 60 + "\n" + sample + "\n" + "-" * 60)
    ck = summary["checkpoint"]
    log(f"checkpoint: {ck}")
    log(f"next: homeforge generate --model {out_dir / 'run'} --prompt 'import '   |   "
        f"homeforge chat --model {out_dir / 'run'}   |   homeforge export --model {out_dir / 'run'} --format hf --out {out_dir / 'hf'}")
    log(f"demo finished in {time.perf_counter() - t_start:.0f}s")
    summary.update({"first_loss": first, "sample": sample, "tokenizer": str(tok_path), "data": str(data_dir)})
    return summary
