"""The ``homeforge`` command line.

::

    homeforge demo [--corpus PATH ...] [--minutes 4 | --steps N] [--preset 1m] [--vocab-size N] [--out DIR]
    homeforge tokenizer train|encode ...
    homeforge data prepare INPUT ... --tokenizer TOK --out DIR [--jsonl-field text] [--val-fraction 0.005]
    homeforge train --config run.toml [--set section.key=value ...] [--resume [CKPT] | --overwrite]
    homeforge generate --model RUN_OR_CKPT --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
    homeforge chat --model RUN_OR_CKPT
    homeforge eval --model RUN_OR_CKPT --file TEXT_FILE
    homeforge export --model RUN_OR_CKPT --format hf|gguf --out PATH
    homeforge merge CKPT CKPT ... [--weights W W ...] --out NEW_DIR [--overwrite]

Errors in the input (bad config, missing files, ...) print ``homeforge: error: ...`` and exit 2.

>>> build_parser().parse_args(["train", "--config", "run.toml", "--set", "optim.lr=1e-3"]).overrides
['optim.lr=1e-3']
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


def _int_at_least(low: int, high: int | None = None) -> Any:
    """An argparse type: an int >= ``low`` (and <= ``high``; argparse names the flag in its error)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {v}")
        return v

    parse.__name__ = "int"
    return parse


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40, help="sample among the k most likely tokens (0: no top-k)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    from .shards import MAX_SHARD_TOKENS

    ap = argparse.ArgumentParser(prog="homeforge", description="Train small language models on CPUs.")
    ap.add_argument("--threads", type=int, default=None, help="threads for homeforge's kernels (default: all cores)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a tokenizer and a small model on Python's own sources (~5 min)")
    p.add_argument("--corpus", nargs="+", default=None, help="files/folders/globs to train on instead of the stdlib")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: as many as fit in --minutes)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time when --steps is not given")
    p.add_argument("--preset", default="1m")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-mb", type=float, default=8.0, help="size bound of the default corpus")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--out", default="runs/demo")

    try:
        from . import tokenizer_cli
    except ImportError as e:  # the tokenizer module failed to import: say why when the command is used
        p = sub.add_parser("tokenizer", help="train a tokenizer, or encode text into token shards")
        p.set_defaults(_tokenizer_error=str(e))
    else:
        tokenizer_cli.add_subcommands(sub)  # adds `tokenizer train|encode`

    p = sub.add_parser("data", help="prepare training data")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("prepare", help="clean, deduplicate, split and tokenize text into shards")
    q.add_argument("inputs", nargs="+", help="files, folders, globs; *.jsonl files are read as JSON lines")
    q.add_argument("--tokenizer", required=True, help="a saved homeforge tokenizer")
    q.add_argument("--out", required=True)
    q.add_argument("--jsonl-field", default="text")
    q.add_argument("--doc-unit", choices=["file", "paragraph", "line"], default="file")
    q.add_argument("--val-fraction", type=float, default=0.005)
    q.add_argument("--include", nargs="*", default=[], help="name globs for files inside folders, e.g. '*.txt'")
    q.add_argument("--shard-tokens", type=_int_at_least(1, MAX_SHARD_TOKENS), default=1 << 26,
                   help="tokens per shard file (default 2^26, at most 2^32)")
    q.add_argument("--no-dedup", action="store_true")
    q.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("train", help="train a model from a TOML config")
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--resume", nargs="?", const=True, default=None,
                   help="continue from the latest checkpoint of train.out_dir, or from the one given")
    p.add_argument("--until", type=_int_at_least(1), default=None,
                   help="stop after this step (the schedule still spans train.steps)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a train.out_dir that holds an earlier run, removing its checkpoints and metrics")

    p = sub.add_parser("generate", help="generate text from a prompt, streamed")
    p.add_argument("--model", required=True, help="a run directory, checkpoint, or exported HF directory")
    p.add_argument("--prompt", default="")
    _add_sampling(p)

    p = sub.add_parser("chat", help="a simple interactive loop (reads stdin)")
    p.add_argument("--model", required=True)
    _add_sampling(p)

    p = sub.add_parser("eval", help="loss and perplexity on a text file")
    p.add_argument("--model", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--seq-len", type=_int_at_least(1), default=None)
    p.add_argument("--batch-size", type=_int_at_least(1), default=8)

    p = sub.add_parser("export", help="export to a Hugging Face directory or a GGUF file")
    p.add_argument("--model", required=True)
    p.add_argument("--format", choices=["hf", "gguf"], required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("merge", help="weighted average of checkpoints with the same architecture")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--weights", type=float, nargs="+", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing non-empty --out (otherwise refused)")
    return ap


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if args.threads is not None:
        from .runtime import set_num_threads

        set_num_threads(args.threads)
    if cmd == "demo":
        from .demo import run_demo

        run_demo(corpus=args.corpus, out=args.out, steps=args.steps, minutes=args.minutes, preset=args.preset,
                 vocab_size=args.vocab_size,
                 seq_len=args.seq_len, batch_size=args.batch_size, max_mb=args.max_mb, lr=args.lr,
                 sample_every=args.sample_every)
        return 0
    if cmd == "tokenizer":
        if getattr(args, "_tokenizer_error", None):
            raise ImportError(f"the tokenizer CLI could not be loaded: {args._tokenizer_error}")
        from . import tokenizer_cli

        return int(tokenizer_cli.run(args) or 0)
    if cmd == "data":
        from .data import PrepareConfig, prepare

        cfg = PrepareConfig(jsonl_field=args.jsonl_field, doc_unit=args.doc_unit, val_fraction=args.val_fraction,
                            include=tuple(args.include), shard_tokens=args.shard_tokens, dedup=not args.no_dedup)
        m = prepare(args.inputs, args.out, args.tokenizer, config=cfg, overwrite=args.overwrite,
                    progress=sys.stderr.isatty())
        c = m["counts"]
        print(f"{c['docs']} documents ({c['duplicates']} duplicates, {c['bad_lines']} bad lines, "
              f"{c['empty_lines']} empty lines, {c.get('empty_records', 0)} empty records dropped); train {m['splits']['train']['tokens']} tokens, "
              f"val {m['splits']['val']['tokens']} tokens -> {args.out}")
        for line in m["bad_lines"][:20]:
            print(f"  bad line: {line}", file=sys.stderr)
        for w in m.get("warnings", []):
            print(f"homeforge: warning: {w}", file=sys.stderr)
        return 0
    if cmd == "train":
        from .config import RunConfig
        from .trainer import Trainer

        cfg = RunConfig.from_toml(args.config, args.overrides)
        trainer = Trainer(cfg)
        summary = trainer.fit(resume=args.resume, until=args.until, overwrite=args.overwrite)
        if trainer.is_main:
            print(json.dumps(summary, default=str))
        return 0
    if cmd in ("generate", "chat", "eval", "export"):
        from .inference import check_sampling, load_model

        if cmd in ("generate", "chat"):  # before loading the model or printing anything
            args.top_k = check_sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                        top_k=args.top_k, top_p=args.top_p)
        model, tok = load_model(args.model)
        if cmd == "generate":
            from .inference import generate_text

            sys.stdout.write(args.prompt)
            sys.stdout.flush()

            def emit(s: str) -> None:
                sys.stdout.write(s)
                sys.stdout.flush()

            generate_text(model, tok, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed, on_text=emit)
            sys.stdout.write("\n")
            return 0
        if cmd == "chat":
            return _chat(model, tok, args)
        if cmd == "eval":
            from .inference import eval_text

            try:
                text = Path(args.file).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise FileNotFoundError(f"file not found: {args.file}") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"{args.file}: not valid UTF-8 at byte {e.start}") from None
            if args.seq_len is not None and args.seq_len > model.config.max_seq_len:
                raise ValueError(f"--seq-len {args.seq_len} exceeds the model's max_seq_len {model.config.max_seq_len}")
            r = eval_text(model, tok, text, seq_len=args.seq_len, batch_size=args.batch_size)
            print(json.dumps({"loss": r["loss"], "perplexity": r["perplexity"], "tokens": int(r["tokens"])}))
            return 0
        from .export import export_gguf, export_hf

        path = export_hf(model, tok, args.out) if args.format == "hf" else export_gguf(model, tok, args.out)
        print(f"exported ({args.format}) -> {path}")
        return 0
    if cmd == "merge":
        from .inference import merge_checkpoints

        path = merge_checkpoints(args.checkpoints, args.out, args.weights, overwrite=args.overwrite)
        print(f"merged {len(args.checkpoints)} checkpoints -> {path}")
        return 0
    raise ValueError(f"unknown command {cmd}")


def _chat(model, tok, args: argparse.Namespace) -> int:
    """Read a line from stdin, answer it; the conversation so far is the prompt. Empty line or EOF ends."""
    from .inference import generate_text

    history = ""
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat: type a message; an empty line or Ctrl-D ends.")
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line or not line.strip():
            break
        history += f"User: {line.strip()}\nAssistant:"
        pieces: list[str] = []

        def emit(s: str) -> None:
            pieces.append(s)

        reply = generate_text(model, tok, history, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed, on_text=emit)
        reply = reply.split("\nUser:")[0].rstrip()
        print(f"assistant:{reply}", flush=True)
        history += reply + "\n"
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, FileNotFoundError, OSError, ImportError, FloatingPointError) as e:
        print(f"homeforge: error: {e}", file=sys.stderr)
        from .distributed import abort_job_if_distributed

        abort_job_if_distributed(2)  # under mpirun the other ranks would wait for this one until timeout_s
        return 2
    except KeyboardInterrupt:
        print("homeforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
