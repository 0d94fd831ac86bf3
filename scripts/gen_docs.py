"""Generate the reference pages that must match the code: docs/cli.md and docs/config.md.

    PYTHONPATH=python python scripts/gen_docs.py          # rewrite both files
    PYTHONPATH=python python scripts/gen_docs.py --check  # exit 1 if either is out of date

docs/cli.md is walked from ``homeforge.cli.build_parser()`` (every subcommand, every flag, its
default and help); docs/config.md from the dataclasses of ``homeforge.config`` (every key, its type
and default), with the one-line descriptions below. tests/test_docs.py checks that every flag and
every key is documented, so a new flag or key without a line here fails the suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["COLUMNS"] = "100"  # argparse wraps usage lines at the terminal width: make it fixed

# Help for CLI flags whose parser gives none ("subcommand --flag": text).
CLI_HELP: dict[str, str] = {
    "demo --preset": "model preset: 1m, 10m, nano, mini (see docs/config.md, model.preset)",
    "demo --vocab-size": "tokenizer vocabulary size",
    "demo --seq-len": "tokens per training sequence",
    "demo --batch-size": "sequences per step",
    "demo --lr": "peak learning rate (warmup, then cosine decay)",
    "demo --sample-every": "steps between generated samples (0: only at the end)",
    "demo --out": "run directory (tokenizer, data, checkpoints, metrics.jsonl)",
    "data prepare --out": "output directory: shards, manifest.json, the tokenizer",
    "data prepare --jsonl-field": "field of each jsonl record holding the text",
    "data prepare --doc-unit": "what one document is in plain-text files (dedup and the split work per document)",
    "data prepare --val-fraction": "fraction of documents sent to validation (by hash: deterministic)",
    "data prepare --shard-tokens": "tokens per shard file (at most 2^32)",
    "data prepare --no-dedup": "keep exact duplicate documents",
    "data prepare --overwrite": "redo a finished preparation (otherwise it is reused or resumed)",
    "train --config": "the run's TOML file (docs/config.md)",
    "generate --prompt": "text to continue (empty: start from <|endoftext|>)",
    "generate --max-new-tokens": "tokens to generate",
    "generate --temperature": "sampling temperature (0: greedy)",
    "generate --top-k": "sample among the k most likely tokens (0: no top-k)",
    "generate --top-p": "nucleus sampling: smallest set with this much probability",
    "generate --seed": "sampling seed (default: random)",
    "chat --model": "a run directory, checkpoint, or exported HF directory",
    "chat --max-new-tokens": "tokens per reply at most",
    "chat --temperature": "sampling temperature",
    "chat --top-k": "sample among the k most likely tokens (0: no top-k)",
    "chat --top-p": "nucleus sampling threshold",
    "chat --seed": "sampling seed",
    "eval --model": "a run directory, checkpoint, or exported HF directory",
    "eval --file": "UTF-8 text file to score",
    "eval --seq-len": "window length, at most the model's max_seq_len (default: max_seq_len)",
    "eval --batch-size": "windows per forward pass (>= 1)",
    "export --model": "a run directory or checkpoint",
    "export --format": "hf: a transformers directory; gguf: a llama.cpp file",
    "export --out": "output directory (hf) or file (gguf)",
    "merge checkpoints": "checkpoints (or run directories) with the same architecture",
    "merge --weights": "one weight per checkpoint (default: equal); normalised to sum 1",
    "merge --out": "a new (or empty) directory; the merged checkpoint is written as OUT/step_00000000 (load it with --model OUT)",
    "merge --overwrite": "write into an existing non-empty --out (replacing its step_00000000); otherwise refused",
    "tokenizer encode --input": "text files or .jsonl files",
    "tokenizer encode --output-dir": "directory for the shards",
    "tokenizer encode --quiet": "no progress output",
    "tokenizer encode --jsonl-field": "field of each jsonl record holding the text",
    "train --set": "override one config key, e.g. optim.lr=1e-3 (repeatable; the value is read as TOML)",
    "tokenizer train --min-frequency": "stop merging when the best pair occurs fewer times",
}

# One line per config key. A key missing here is written with an empty description and
# tests/test_docs.py fails, which is the point.
CONFIG_DESCRIPTIONS: dict[str, str] = {
    # [model]
    "model.preset": 'Named shape: "1m", "10m", "nano", "mini" (see `ModelConfig.preset`); `"none"` means every shape key below must be set.',
    "model.vocab_size": "Embedding rows. Default: the tokenizer's `n_vocab`; may be larger (padding), never smaller.",
    "model.d_model": "Width of the residual stream (overrides the preset).",
    "model.n_layers": "Transformer blocks (overrides the preset).",
    "model.n_heads": "Query heads; `d_model` must be divisible by it.",
    "model.n_kv_heads": "Key/value heads (grouped-query attention); divides `n_heads`.",
    "model.ffn_hidden": "Hidden width of the SwiGLU MLP.",
    "model.max_seq_len": "Longest sequence the rotary tables cover. Default: the preset's, raised to at least `data.seq_len`.",
    "model.rope_theta": "Rotary embedding base (default 10000 via the preset).",
    "model.norm_eps": "RMSNorm epsilon.",
    "model.tie_embeddings": "Share the input embedding and the output projection.",
    "model.dtype": '`"fp32"`, or `"bf16"`: bf16 GEMM inputs and attention with f32 accumulation and f32 master weights.',
    "model.recompute": "Re-run each layer's forward during backward instead of keeping its activations (less memory, ~1/3 more compute).",
    "model.seed": "Seed of the parameter initialisation.",
    # [data]
    "data.path": "Directory written by `homeforge data prepare` (manifest.json, shards, tokenizer). Required.",
    "data.seq_len": "Tokens per training sequence.",
    "data.batch_size": "Sequences per micro-batch **per rank**.",
    "data.grad_accum": "Micro-batches per optimizer step. Global batch = batch_size x grad_accum x ranks.",
    "data.seed": "Seed of the loader's per-epoch shuffle of windows.",
    "data.shuffle": "Shuffle windows each epoch (false: read the shards in order).",
    # [optim]
    "optim.name": '`"adamw"` (the only trainer optimizer; `homeforge.optim` also has Lion and SGD for the Python API).',
    "optim.lr": "Peak learning rate, reached at the end of the warmup.",
    "optim.min_lr_ratio": "Final learning rate as a fraction of `lr` (cosine/linear decay), in [0, 1].",
    "optim.warmup_steps": "Linear warmup steps: step s uses lr x (s + 1) / warmup_steps.",
    "optim.schedule": '`"cosine"`, `"linear"` or `"constant"` after the warmup; decays to `lr x min_lr_ratio` at `train.steps - 1`.',
    "optim.betas": "AdamW (beta1, beta2), each in [0, 1).",
    "optim.eps": "AdamW epsilon.",
    "optim.weight_decay": "Decoupled weight decay, on 2-D weights only (not on norms).",
    "optim.max_grad_norm": "Clip the global gradient norm to this (TOML has no null: a very large value turns clipping off).",
    "optim.nonfinite": '`"skip"`: a step with a NaN/Inf gradient is skipped (and logged); `"abort"`: the run stops.',
    # [train]
    "train.steps": "Optimizer steps of the whole run (the schedule spans them; `--until` stops earlier).",
    "train.out_dir": "Run directory: metrics.jsonl, config.toml, tokenizer, checkpoints/, tb/.",
    "train.log_every": "Steps between console lines and metrics.jsonl records.",
    "train.eval_every": "Steps between validation-loss evaluations (0: never).",
    "train.eval_batches": "Validation batches per evaluation.",
    "train.sample_every": "Steps between generated samples (0: never).",
    "train.sample_prompt": "Prompt of the samples (empty: start from the end-of-text token).",
    "train.sample_tokens": "Tokens generated per sample (capped so that prompt + sample fit in model.max_seq_len).",
    "train.sample_temperature": "Sampling temperature of the samples (>= 0; 0: greedy).",
    "train.sample_top_k": "Top-k of the samples (>= 1).",
    "train.checkpoint_every": "Steps between checkpoints (0: only at the end).",
    "train.keep_last": "Checkpoints kept (the best by validation loss is kept too).",
    "train.threads": "Threads for homeforge's kernels (default: all cores; under mpirun: cores / ranks on the host).",
    "train.progress": "Show the progress bar (loss, tokens/s, MFU, ETA).",
    "train.tensorboard": "Write TensorBoard event files to out_dir/tb when `tensorboard` is installed.",
    "train.peak_gflops": "Peak GFLOP/s for MFU. Default: benchmarks/results/machine.json, else a oneDNN GEMM measured at start-up.",
    "train.seed": "Seed of the trainer's RNG (sampling).",
    # [distributed]
    "distributed.mode": '`"none"` (one process; under mpirun with >1 rank it means `"ddp"`), `"ddp"`, `"zero1"` or `"diloco"`.',
    "distributed.bucket_mb": "DDP/ZeRO-1 gradient bucket size in MiB (omit: homeforge.distributed.DEFAULT_BUCKET_MB, set by measurement).",
    "distributed.overlap": "Launch each bucket's allreduce as soon as its gradients are final (overlap with backward).",
    "distributed.diloco_h": "DiLoCo: local AdamW steps between two synchronisations.",
    "distributed.outer_lr": "DiLoCo outer SGD learning rate.",
    "distributed.outer_momentum": "DiLoCo outer momentum.",
    "distributed.outer_nesterov": "DiLoCo outer step uses Nesterov momentum.",
    "distributed.inner_optimizer": '`"adamw"`, or `"sgd"` (plain SGD: the degenerate DiLoCo = DDP identity).',
    "distributed.wire_dtype": '`"f32"` or `"bf16"`: dtype of the DiLoCo pseudo-gradients on the wire.',
    "distributed.checksum_every": "Steps between cross-rank parameter checksums (0: never); a mismatch names the rank.",
    "distributed.timeout_s": "Seconds a collective may wait before the job is aborted with a message naming it.",
    "distributed.straggler_ratio": "Log a straggler when the slowest rank's step time exceeds the median by this factor.",
}


def _type_str(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        return "[" + ", ".join(_type_str(a) for a in args) + "]"
    if args and type(None) in args:
        return " or ".join(_type_str(a) for a in args if a is not type(None)) + " (optional)"
    return getattr(tp, "__name__", str(tp))


def _toml(v) -> str:
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, str):
        return f'`"{v}"`'
    if isinstance(v, tuple):
        return "`[" + ", ".join(repr(x) for x in v) + "]`"
    return f"`{v!r}`"


def config_md() -> str:
    from homeforge import config

    out = [
        "# Config reference (`homeforge train --config run.toml`)",
        "",
        "<!-- generated by scripts/gen_docs.py from homeforge.config; edit the descriptions there -->",
        "",
        "A run is configured by one TOML file with up to five tables. Every key is optional except",
        "`data.path`; every key is typed, and an unknown key or a value of the wrong type is an error that",
        "names the key. Any key can be overridden on the command line:",
        "",
        "```bash",
        "homeforge train --config run.toml --set optim.lr=1e-3 --set train.steps=200 --set model.preset=10m",
        "```",
        "",
        "A `--set` value is read as a TOML value (`3`, `1e-3`, `true`, `\"x\"`, `[0.9, 0.95]`), else as a",
        "plain string. Python: `homeforge.RunConfig.from_toml(path, overrides)` /",
        "`RunConfig.from_dict(d, overrides)`; `Trainer(config)` takes either.",
        "",
        "A minimal file:",
        "",
        "```toml",
        "[model]",
        'preset = "1m"',
        "[data]",
        'path = "data/prepared"',
        "seq_len = 256",
        "batch_size = 8",
        "[optim]",
        "lr = 3e-3",
        "[train]",
        "steps = 1000",
        'out_dir = "runs/first"',
        "```",
        "",
        "Keys shown as *unset* have no default in the file: leave them out (TOML has no null) and",
        "homeforge fills them in as described.",
        "",
        "On `--resume` the new config applies, except that the global batch (`data.batch_size` x",
        "`data.grad_accum` x ranks) and these keys must keep the values saved in the checkpoint (the",
        "data order and the optimizer state depend on them; a changed one is an error naming it):",
        ", ".join(f"`{k}`" for k in config.RESUME_FIXED) + ".",
        "A fresh run (without `--resume`) into a `train.out_dir` that holds an earlier run's checkpoints",
        "or metrics is an error; `homeforge train --overwrite` (`Trainer.fit(overwrite=True)`) removes them",
        "and starts over.",
        "",
    ]
    sections = config._SECTIONS
    for sec, cls in sections.items():
        hints = typing.get_type_hints(cls)
        out += [f"## [{sec}]", ""]
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(cls.__name__ + "("):
            out += [" ".join(doc.split()), ""]
        out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        inst = cls()
        for f in dataclasses.fields(cls):
            desc = CONFIG_DESCRIPTIONS.get(f"{sec}.{f.name}", "")
            out.append(f"| `{sec}.{f.name}` | {_type_str(hints[f.name])} | {_toml(getattr(inst, f.name))} | {desc} |")
        out.append("")
    return "\n".join(out)


def _flag_row(a: argparse.Action, path: list[str]) -> str:
    names = ", ".join(f"`{s}`" for s in a.option_strings) if a.option_strings else f"`{a.dest}` (positional)"
    if a.nargs in ("+", "*"):
        names += " ..." if a.option_strings else ""
    if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        default = "off"
    elif a.required:
        default = "required"
    elif a.default is None or a.default == argparse.SUPPRESS:
        default = ""
    else:
        default = f"`{a.default!r}`" if not isinstance(a.default, str) else f'`"{a.default}"`'
    if a.choices:
        default = (default + "; " if default else "") + "one of " + ", ".join(f"`{c}`" for c in a.choices)
    key = " ".join(path[1:]) + " " + (a.option_strings[-1] if a.option_strings else a.dest)
    if len(a.option_strings) > 1:
        key = " ".join(path[1:]) + " " + max(a.option_strings, key=len)
    help_ = (a.help or CLI_HELP.get(key, "")).replace("|", "\\|").replace("%%", "%")
    return f"| {names} | {default} | {help_} |"


def _walk(parser: argparse.ArgumentParser, path: list[str], out: list[str]) -> None:
    actions = [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    title = " ".join(path)
    out += [f"{'#' * min(len(path) + 1, 4)} `{title}`", ""]
    if parser.description:
        out += [parser.description, ""]
    out += ["```text", parser.format_usage().strip(), "```", ""]
    if actions:
        out += ["| argument | default | meaning |", "| --- | --- | --- |"]
        out += [_flag_row(a, path) for a in actions]
        out.append("")
    for s in subs:
        helps = {c.dest: c.help for c in s._choices_actions}
        for name, child in s.choices.items():
            if helps.get(name) and not child.description:
                child.description = helps[name][0].upper() + helps[name][1:] + "."
            _walk(child, path + [name], out)


def cli_md() -> str:
    from homeforge.cli import build_parser

    out = [
        "# CLI reference",
        "",
        "<!-- generated by scripts/gen_docs.py from homeforge.cli.build_parser() -->",
        "",
        "`homeforge` (also `python -m homeforge`) is installed with the package. Errors in the input",
        "(a bad config key, a missing file, an empty corpus, ...) print `homeforge: error: ...` and exit",
        "with status 2; nothing is left half-written. Under `mpirun`, `homeforge train` runs one rank",
        "per process (see [distributed.md](distributed.md)).",
        "",
        "A typical session:",
        "",
        "```bash",
        "homeforge tokenizer train --input corpus.txt --vocab-size 8192 --output tok.hft",
        "homeforge data prepare corpus.txt --tokenizer tok.hft --doc-unit paragraph --out data/prepared",
        "# one file with the default --doc-unit file is one document, which goes whole to train or val",
        "homeforge train --config run.toml                  # see config.md",
        "homeforge generate --model runs/first --prompt 'def main('",
        "homeforge export --model runs/first --format hf --out exported/",
        "```",
        "",
    ]
    parser = build_parser()
    parser.description = (parser.description or "") + " Global options go before the subcommand."
    _walk(parser, ["homeforge"], out)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated file differs")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args(argv)
    from _write_or_check import write_or_check

    files = {args.out / name: fn().rstrip() + "\n" for name, fn in (("cli.md", cli_md), ("config.md", config_md))}
    return write_or_check(files, args.check, "scripts/gen_docs.py")


if __name__ == "__main__":
    sys.exit(main())
