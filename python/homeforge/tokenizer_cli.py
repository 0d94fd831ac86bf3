"""``homeforge tokenizer train|encode``: the tokenizer's command-line interface.

The main CLI (homeforge.cli) calls :func:`add_subcommands` on its subparsers and dispatches to
:func:`run` (also set as the parser's ``func`` default).

  homeforge tokenizer train  --input corpus.txt data.jsonl --vocab-size 32000 --pattern o200k \\
                             --special-token '<|endoftext|>' --output tok.hft [--hf tokenizer.json]
  homeforge tokenizer encode --tokenizer tok.hft --input corpus.txt --output-dir shards/ --prefix train

``encode`` writes token shards (homeforge.shards: 64-byte header, uint16 tokens when the
vocabulary has at most 65,536 ids, else uint32); each document (a plain-text file, or one jsonl
record) is followed by the end-of-text token when the tokenizer has one. Special-token text inside
documents is encoded as ordinary text. A text file is read in blocks of about ``--batch-bytes``,
cut only where the ids of the blocks equal those of the whole file (``tok.encode_ordinary(text)``;
proven for the named patterns, not for a custom regex);
text with no such point (no ASCII letter before a space and no newline between printable ASCII)
is read on until one comes, so memory grows with the longest such stretch.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="homeforge"); _ = add_subcommands(p.add_subparsers(dest="command"))
>>> a = p.parse_args(["tokenizer", "train", "--input", "x.txt", "--vocab-size", "300", "--output", "t.hft"])
>>> a.tokenizer_command, a.vocab_size, a.pattern
('train', 300, 'o200k')
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["add_subcommands", "run"]


def add_subcommands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``tokenizer train`` and ``tokenizer encode`` to an argparse subparsers object."""
    p = subparsers.add_parser("tokenizer", help="train a BPE tokenizer, or encode text into token shards")
    sub = p.add_subparsers(dest="tokenizer_command", required=True)

    t = sub.add_parser("train", help="train a byte-level BPE tokenizer")
    t.add_argument("--input", "-i", nargs="+", required=True, type=Path,
                   help="text files (UTF-8) or .jsonl/.ndjson files")
    t.add_argument("--vocab-size", type=int, required=True, help="256 bytes + merges + special tokens")
    t.add_argument("--pattern", default="o200k", help="gpt2, cl100k, o200k, or a regex (default o200k)")
    t.add_argument("--special-token", action="append", default=None,
                   help="special token text (repeatable; default <|endoftext|>); pass --no-special to have none")
    t.add_argument("--no-special", action="store_true", help="train with no special tokens")
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--jsonl-field", default="text", help="field of each jsonl record holding the text")
    t.add_argument("--output", "-o", type=Path, required=True, help="tokenizer file (homeforge format)")
    t.add_argument("--hf", type=Path, default=None, help="also write a Hugging Face tokenizer.json here")
    t.add_argument("--tiktoken", type=Path, default=None, help="also write a tiktoken rank file here")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser("encode", help="encode text files into token shards")
    e.add_argument("--tokenizer", "-t", type=Path, required=True, help="homeforge tokenizer file or tokenizer.json")
    e.add_argument("--input", "-i", nargs="+", required=True, type=Path)
    e.add_argument("--output-dir", "-o", type=Path, required=True)
    e.add_argument("--prefix", default="tokens", help="shard file prefix (shards are PREFIX_000000.bin, ...)")
    e.add_argument("--shard-tokens", type=int, default=1 << 26, help="tokens per shard (default 2^26)")
    e.add_argument("--jsonl-field", default="text")
    e.add_argument("--no-eot", action="store_true", help="do not append the end-of-text token after documents")
    e.add_argument("--threads", dest="encode_threads", metavar="THREADS", type=int, default=None,
                   help="encoding threads (default: homeforge's, set by the global --threads)")
    e.add_argument("--batch-bytes", type=int, default=16 << 20,
                   help="text per parallel batch (>= 64); a text file is cut only where the ids stay "
                        "those of the whole file (proven for the named patterns; with a custom regex a "
                        "piece can be cut), so a stretch without such a point is read whole")
    e.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``tokenizer`` subcommand; returns the exit status."""
    try:
        if args.tokenizer_command == "train":
            return _train(args)
        if args.tokenizer_command == "encode":
            return _encode(args)
    except (ValueError, OSError, TypeError) as exc:  # the CLI's error convention (docs/cli.md)
        print(f"homeforge: error: tokenizer {args.tokenizer_command}: {exc}", file=sys.stderr)
        return 2
    print(f"unknown tokenizer command {args.tokenizer_command!r}", file=sys.stderr)
    return 2


def _train(args: argparse.Namespace) -> int:
    from .tokenizer import Tokenizer

    specials = [] if args.no_special else (args.special_token or ["<|endoftext|>"])
    for out in (args.output, args.hf, args.tiktoken):  # before training, not after minutes of it
        if out is not None and not Path(out).parent.is_dir():
            raise OSError(f"output folder {Path(out).parent} does not exist (for {out})")
        if out is not None and Path(out).is_dir():
            raise OSError(f"{out} is a directory; give a file path")
    t0 = time.perf_counter()
    tok = Tokenizer.train(list(args.input), args.vocab_size, pattern=args.pattern, special_tokens=specials,
                          min_frequency=args.min_frequency, jsonl_field=args.jsonl_field, progress=not args.quiet)
    tok.save(args.output)
    if args.hf:
        tok.save_hf(args.hf)
    if args.tiktoken:
        tok.save_tiktoken(args.tiktoken)
    if tok.n_vocab < args.vocab_size:  # not an error (the Python API allows it), but say so
        print(f"homeforge: note: the corpus gave {tok.n_vocab} tokens of the requested --vocab-size {args.vocab_size} "
              "(too little text: no pair left that occurs --min-frequency times)", file=sys.stderr)
    if not args.quiet:
        print(f"trained {tok} in {time.perf_counter() - t0:.1f} s -> {args.output} (sha256 {tok.hash()[:16]}...)")
    return 0


def _documents(paths: list[Path], jsonl_field: str, block: int) -> Iterator[tuple[str, bool]]:
    """(text, ends_document) pieces: plain files stream in blocks, the last block ends the document."""
    from .tokenizer import _iter_file

    for path in paths:
        if path.suffix in (".jsonl", ".ndjson"):
            for doc in _iter_file(path, jsonl_field, block):
                yield doc, True
        else:
            prev = None
            for chunk in _iter_file(path, jsonl_field, block):
                if prev is not None:
                    yield prev, False
                prev = chunk
            yield (prev if prev is not None else ""), True


def _encode(args: argparse.Namespace) -> int:
    from ._atomic import staged_files
    from .shards import ShardWriter
    from .tokenizer import Tokenizer, _batch_bytes

    _batch_bytes(args.batch_bytes, "--batch-bytes")

    stale = sorted(Path(args.output_dir).glob(f"{args.prefix}_*.bin")) if Path(args.output_dir).is_dir() else []
    if stale:  # new shards beside old ones would read as one data set
        raise OSError(f"{args.output_dir} already holds {len(stale)} shard(s) named {args.prefix}_*.bin (e.g. "
                      f"{stale[0].name}); remove them or choose another --output-dir or --prefix")
    path = args.tokenizer
    tok = Tokenizer.from_hf(path) if path.suffix == ".json" else Tokenizer.load(path)
    eot = None if args.no_eot else tok.eot_token
    # All or nothing: shards go to a staging folder inside the output folder and are renamed into
    # place only when every input has been encoded, so an error or Ctrl-C leaves no partial set.
    with staged_files(args.output_dir, args.prefix) as staging:
        _encode_into(args, tok, eot, ShardWriter(staging, args.prefix, vocab_size=tok.n_vocab,
                                                 tokenizer_hash=tok.hash(), shard_tokens=args.shard_tokens))
    return 0


def _encode_into(args: argparse.Namespace, tok: Any, eot: int | None, writer: Any) -> None:
    """Encode args.input into writer's shards."""
    t0 = time.perf_counter()
    n_bytes = 0
    batch: list[tuple[str, bool]] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if not batch:
            return
        ids, offsets = tok.encode_batch_flat([t for t, _ in batch], num_threads=args.encode_threads,
                                             disallowed_special=())
        if eot is not None:  # the end-of-text token after each document that ends in this batch
            ends = np.array([e for _, e in batch], dtype=bool)
            ids = np.insert(ids, offsets[1:][ends], np.uint32(eot))
        writer.add(ids)
        batch, size = [], 0

    for text, ends in _documents(list(args.input), args.jsonl_field, args.batch_bytes):
        batch.append((text, ends))
        size += len(text)
        n_bytes += len(text)
        if size >= args.batch_bytes:
            flush()
            if not args.quiet:
                dt = time.perf_counter() - t0
                sys.stderr.write(f"\rencoded {n_bytes / 1e6:.1f} MB, {writer.n_tokens} tokens, {n_bytes / 1e6 / dt:.1f} MB/s")
    flush()
    paths = writer.close()
    if not args.quiet:
        dt = time.perf_counter() - t0
        sys.stderr.write("\n")
        print(f"wrote {writer.n_tokens} tokens in {len(paths)} shard(s) to {args.output_dir} "
              f"({dt:.1f} s, dtype {writer.dtype})")
