"""Data preparation (raw text -> token shards) and the packed-sequence loader that feeds training.

``prepare(inputs, out_dir, tokenizer)`` (CLI: ``homeforge data prepare``) streams text from files,
folders, globs and jsonl files (one named field per record), cleans it, removes exact duplicate
documents, splits train/validation deterministically, tokenizes in parallel and writes token shards
(:mod:`homeforge.shards`) plus ``manifest.json``. The cleaning rules, in order:

1. a UTF-8 byte order mark at the start of a file is dropped; bytes are decoded as strict UTF-8
   line by line; a line that is not valid UTF-8 (or a jsonl record that is not valid JSON, or whose
   field is not a string) is dropped and reported by file and line number
   (``manifest["bad_lines"]``, the first 1,000; ``counts["bad_lines"]`` counts all);
2. newlines are normalised: ``\\r\\n`` and lone ``\\r`` become ``\\n``;
3. empty (whitespace-only) lines are dropped;
4. a document is the cleaned lines of one text file (``doc_unit="file"``, split at line boundaries
   past ``max_doc_bytes``), of one paragraph (``"paragraph"``), of one line (``"line"``), or one
   jsonl record (one whose text is empty after cleaning is counted in ``counts["empty_records"]``);
   documents whose exact text was seen before are dropped. The duplicate filter keeps a set of
   16-byte BLAKE2b digests (memory: ~90 bytes per distinct document);
5. a document goes to validation when the first 8 bytes of its digest, read as a fraction of 2**64,
   fall below ``val_fraction``: deterministic, independent of order and of the thread count.

Each document is followed by the tokenizer's ``<|endoftext|>`` token. Work proceeds in chunks of
about ``chunk_bytes`` of text; after each chunk its shards and duplicate digests are on disk and
``.progress.json`` records where the chunk ended (source, byte offset, line), so an interrupted run
started again with the same arguments resumes after the last finished chunk and produces the same
shards as an uninterrupted run. Every file is written atomically.

:class:`TokenLoader` serves packed (tokens, targets) windows of ``seq_len`` (+1 shifted) from the
memory-mapped shards in a seeded random order per epoch; rank ``r`` of ``W`` takes its own disjoint
``batch_size`` windows of every global step, and ``state_dict()`` saves the position exactly.

>>> import numpy as np, tempfile, os
>>> from homeforge.shards import write_shard
>>> d = tempfile.mkdtemp()
>>> write_shard(os.path.join(d, "train_000000.bin"), np.arange(100) % 50, 50, "ab" * 32)
>>> loader = TokenLoader([os.path.join(d, "train_000000.bin")], seq_len=8, batch_size=2, seed=0)
>>> x, y = loader.next_batch()
>>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
((2, 8), True)
>>> state = loader.state_dict(); a = loader.next_batch()[0]
>>> loader.load_state_dict(state); bool((loader.next_batch()[0] == a).all())
True
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ._atomic import atomic_write
from .shards import MAX_SHARD_TOKENS, ShardWriter, read_shard, shard_info

__all__ = ["PrepareConfig", "prepare", "clean_lines", "iter_documents", "expand_inputs", "TokenLoader",
           "load_manifest", "TOKEN_DTYPE"]

#: dtype of the (tokens, targets) arrays the loader returns.
TOKEN_DTYPE = np.int32
MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
TOKENIZER_FILE = "tokenizer.hftok"
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_MAX_BAD_REPORTED = 1000
_BOM = b"\xef\xbb\xbf"


# ----------------------------------------------------------------------------------------------
# sources and cleaning


def expand_inputs(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                  include: str | Sequence[str] = (),
                  exclude: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """Files named by ``inputs``: files, folders (recursive; hidden entries skipped; ``include`` globs
    filter names, e.g. ``["*.py"]``; one string is one pattern) and glob patterns. ``inputs`` may be
    one path or a list of them. Sorted within each input; duplicates dropped. Files inside an
    ``exclude`` folder (e.g. the output of :func:`prepare`) are left out.

    >>> expand_inputs(["/definitely/not/here.txt"])
    Traceback (most recent call last):
    ...
    FileNotFoundError: input not found: /definitely/not/here.txt
    """
    out: list[Path] = []
    seen: set[Path] = set()
    inputs = _as_list(inputs, "inputs")
    include = _patterns(include)
    skip = [Path(e).resolve() for e in _as_list(exclude, "exclude")]
    for item in inputs:
        s = os.fspath(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file()
                           and not any(part.startswith(".") or part == "__pycache__" for part in q.relative_to(p).parts)
                           and (not include or any(q.match(pat) for pat in include)))
        elif p.is_file():
            found = [p]
        elif any(c in s for c in "*?["):
            found = sorted(Path(q) for q in _glob.glob(s, recursive=True) if Path(q).is_file())
            if not found:
                raise FileNotFoundError(f"no files match {s}")
        else:
            raise FileNotFoundError(f"input not found: {s}")
        for q in found:
            r = q.resolve()
            if any(r.is_relative_to(e) for e in skip):
                continue
            if r not in seen:
                seen.add(r)
                out.append(q)
    return out


def _as_list(paths: Any, what: str) -> list[str | os.PathLike[str]]:
    """One path (str / PathLike) or an iterable of them, as a list (a str is one path, not characters)."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    try:
        items = list(paths)
    except TypeError:
        raise TypeError(f"{what} must be a path or a list of paths, got {type(paths).__name__}") from None
    for p in items:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"{what} must be a path or a list of paths, got an item {p!r}")
    return items


def _patterns(include: Any) -> tuple[str, ...]:
    """``include`` name globs as a tuple: one string is one pattern (not its characters)."""
    if isinstance(include, str):
        return (include,)
    try:
        pats = tuple(include)
    except TypeError:
        raise TypeError(f"include must be a glob string or a list of them, got {type(include).__name__}") from None
    for pat in pats:
        if not isinstance(pat, str):
            raise TypeError(f"include must be a glob string or a list of them, got an item {pat!r}")
    return pats


def clean_lines(text: str) -> list[str]:
    """Normalise newlines and drop empty lines; each kept line ends with ``\\n``.

    >>> clean_lines("a\\r\\nb\\r\\r\\n  \\nc")
    ['a\\n', 'b\\n', 'c\\n']
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [ln + "\n" for ln in text.split("\n") if ln.strip()]


@dataclass
class _Stats:
    docs: int = 0
    bytes_in: int = 0
    lines_kept: int = 0
    empty_lines: int = 0
    bad_lines: int = 0
    empty_records: int = 0
    duplicates: int = 0
    bad: list[str] = field(default_factory=list)

    def report_bad(self, path: Path, line_no: int, why: str) -> None:
        self.bad_lines += 1
        if len(self.bad) < _MAX_BAD_REPORTED:
            self.bad.append(f"{path}:{line_no}: {why}")


def _clean_counted(text: str, stats: _Stats) -> str:
    lines = clean_lines(text)
    stats.lines_kept += len(lines)
    return "".join(lines)


def iter_documents(path: Path, *, src_index: int = 0, start: tuple[int, int] = (0, 0), doc_unit: str = "file",
                   jsonl_field: str = "text", max_doc_bytes: int = 1 << 20,
                   stats: _Stats | None = None) -> Iterator[tuple[str, tuple[int, int, int]]]:
    """Yield ``(cleaned_document, (src_index, byte_offset_after, line_after))`` from one file.

    ``start`` = (byte offset, line number) resumes inside a file at a position a previous call yielded.
    """
    stats = stats if stats is not None else _Stats()
    is_jsonl = path.suffix.lower() in _JSONL_SUFFIXES
    offset, line_no = start
    buf: list[str] = []
    buf_bytes = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"input not found: {path}") from None
    with f:
        f.seek(offset)
        if not is_jsonl and doc_unit == "file":
            yield from _file_blocks(f, path, src_index, offset, line_no, max_doc_bytes, stats)
            return
        for raw in f:
            line_start = offset
            offset += len(raw)
            line_no += 1
            if line_start == 0 and raw.startswith(_BOM):  # a UTF-8 byte order mark is not text
                stats.bytes_in += len(_BOM)
                raw, line_start = raw[len(_BOM):], len(_BOM)
            try:
                text = raw.decode("utf-8", errors="strict")
            except UnicodeDecodeError as e:
                stats.bytes_in += len(raw)
                stats.report_bad(path, line_no, f"invalid UTF-8 at byte {e.start} of the line")
                continue
            if is_jsonl:
                stats.bytes_in += len(raw)
                if not text.strip():
                    stats.empty_lines += 1
                    continue
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as e:
                    stats.report_bad(path, line_no, f"invalid JSON ({e.msg})")
                    continue
                if not isinstance(rec, dict) or not isinstance(rec.get(jsonl_field), str):
                    stats.report_bad(path, line_no, f"no string field {jsonl_field!r}")
                    continue
                value = rec[jsonl_field]
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    stats.report_bad(path, line_no, "lone surrogate in the JSON string")
                    continue
                doc = _clean_counted(value, stats)
                if doc:
                    yield doc, (src_index, offset, line_no)
                else:
                    stats.empty_records += 1
                continue
            # plain text: one physical line, which lone \r splits into several lines. Each piece has
            # its own end position (byte offset after its \r; line number of the last complete
            # physical line), so a chunk that ends after a piece resumes at the next piece.
            n = len(raw)
            ending = 2 if raw.endswith(b"\r\n") else 1 if n and raw[-1] in (10, 13) else 0
            end = (src_index, offset, line_no)
            if raw.find(b"\r", 0, n - ending) < 0:  # the common case: one piece, already decoded
                # (each piece is a line of text ending in "\n", the one line ending documents keep)
                line = text if ending == 1 and raw[-1] == 10 else (text[:-ending] if ending else text) + "\n"
                pieces: Sequence[tuple[str, tuple[int, int, int], int]] = ((line, end, n),)
            else:
                pieces, at = [], line_start
                parts = raw[:n - ending].split(b"\r")
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    # \r is never inside a UTF-8 sequence: the parts decode
                    pieces.append((part.decode("utf-8") + "\n", end if last else (src_index, at + len(part) + 1, line_no - 1),
                                   offset - at if last else len(part) + 1))
                    at += len(part) + 1
            for line, here, piece_bytes in pieces:
                stats.bytes_in += piece_bytes
                if not line.strip():
                    stats.empty_lines += 1
                    if doc_unit == "paragraph" and buf:
                        doc = "".join(buf)
                        buf, buf_bytes = [], 0
                        yield doc, here
                    continue
                stats.lines_kept += 1
                if doc_unit == "line":
                    yield line, here
                    continue
                buf.append(line)
                buf_bytes += len(line)
            if buf and buf_bytes >= max_doc_bytes:
                doc = "".join(buf)
                buf, buf_bytes = [], 0
                yield doc, (src_index, offset, line_no)
        if buf:
            yield "".join(buf), (src_index, offset, line_no)


def _file_blocks(f: Any, path: Path, src_index: int, offset: int, line_no: int, block_bytes: int,
                 stats: _Stats) -> Iterator[tuple[str, tuple[int, int, int]]]:
    """doc_unit="file": one document per block of about ``block_bytes`` (whole lines), decoded and
    cleaned a block at a time (a block that is not valid UTF-8 is redone line by line to report the
    bad lines)."""
    while True:
        block = f.read(block_bytes)
        if not block:
            return
        if offset == 0 and block.startswith(_BOM):  # a UTF-8 byte order mark is not text
            stats.bytes_in += len(_BOM)
            offset, block = len(_BOM), block[len(_BOM):]
        if not block.endswith(b"\n"):
            block += f.readline()
        stats.bytes_in += len(block)
        ends_nl = block.endswith(b"\n")
        n_lines = block.count(b"\n") + (0 if ends_nl else 1)
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            parts = block.split(b"\n")
            if ends_nl:
                parts.pop()
            good = []
            for i, raw in enumerate(parts):
                try:
                    good.append(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    stats.report_bad(path, line_no + i + 1, f"invalid UTF-8 at byte {e.start} of the line")
            text = "\n".join(good) + ("\n" if good else "")
        pieces = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if pieces and pieces[-1] == "":
            pieces.pop()
        kept = [p for p in pieces if p.strip()]
        stats.lines_kept += len(kept)
        stats.empty_lines += len(pieces) - len(kept)
        offset += len(block)
        line_no += n_lines
        if kept:
            yield "\n".join(kept) + "\n", (src_index, offset, line_no)


def _digest(doc: str) -> bytes:
    return hashlib.blake2b(doc.encode("utf-8"), digest_size=16).digest()


def _is_val(digest: bytes, val_fraction: float) -> bool:
    return int.from_bytes(digest[:8], "little") < val_fraction * 2.0**64


# ----------------------------------------------------------------------------------------------
# prepare


@dataclass
class PrepareConfig:
    """Settings of one preparation; they are recorded in the manifest and must match to resume."""

    jsonl_field: str = "text"
    doc_unit: str = "file"  # file | paragraph | line
    val_fraction: float = 0.005
    max_doc_bytes: int = 1 << 20
    chunk_bytes: int = 64 << 20
    shard_tokens: int = 1 << 26
    batch_docs: int = 1024
    include: tuple[str, ...] = ()  # name globs for files inside folders; one string is one pattern
    dedup: bool = True

    def __post_init__(self) -> None:
        self.include = _patterns(self.include)

    def validate(self) -> None:
        if self.doc_unit not in ("file", "paragraph", "line"):
            raise ValueError(f"doc_unit must be 'file', 'paragraph' or 'line', got {self.doc_unit!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("max_doc_bytes", "chunk_bytes", "shard_tokens", "batch_docs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.shard_tokens > MAX_SHARD_TOKENS:
            raise ValueError(f"shard_tokens (--shard-tokens) must be at most {MAX_SHARD_TOKENS} (2**32), "
                             f"got {self.shard_tokens}")


def _load_tokenizer(tokenizer: Any) -> Any:
    if isinstance(tokenizer, (str, os.PathLike)):
        from .tokenizer import Tokenizer

        if not Path(tokenizer).is_file():
            raise FileNotFoundError(f"tokenizer not found: {tokenizer}")
        try:
            return Tokenizer.load(tokenizer)
        except ValueError:
            if not str(tokenizer).endswith(".json"):
                raise
        return Tokenizer.from_hf(tokenizer)  # a Hugging Face tokenizer.json
    return tokenizer


def _tokenize_docs(tok: Any, docs: list[str], eot: int, num_threads: int | None) -> np.ndarray:
    """Token ids of ``docs``, each followed by ``eot`` (uint32)."""
    if not docs:
        return np.zeros(0, dtype=np.uint32)
    # special-token text inside a document is ordinary text: only the separators are <|endoftext|>
    ids, offsets = tok.encode_batch_flat(docs, num_threads=num_threads, disallowed_special=())
    ids = np.asarray(ids, dtype=np.uint32)
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.insert(ids, offsets[1:], np.uint32(eot))


def _sources_record(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        st = p.stat()
        out.append({"path": str(p), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


def load_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a prepared data directory's manifest.json (FileNotFoundError / ValueError otherwise)."""
    d = Path(directory)
    p = d / MANIFEST
    if not p.is_file():
        if (d / PROGRESS).is_file():
            raise ValueError(f"{d}: data preparation did not finish (run `homeforge data prepare` again to resume)")
        raise FileNotFoundError(f"no prepared data in {d} (missing {MANIFEST}; run `homeforge data prepare`)")
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: corrupt manifest ({e})") from None
    if not isinstance(m, dict) or "splits" not in m:
        raise ValueError(f"{p}: not a homeforge data manifest")
    return m


def prepare(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], tokenizer: Any, *,
            config: PrepareConfig | None = None, num_threads: int | None = None, overwrite: bool = False,
            progress: bool = False, _stop_after_chunks: int | None = None) -> dict[str, Any]:
    """Clean, deduplicate, split and tokenize ``inputs`` into token shards in ``out_dir``.

    Returns the manifest (also written to ``out_dir/manifest.json``). ``tokenizer`` is a
    :class:`homeforge.Tokenizer` or the path of a saved one; it must have ``<|endoftext|>``.
    Calling again after an interruption resumes; calling again after completion returns the
    existing manifest when the inputs and settings are unchanged (``overwrite=True`` redoes it).

    Each document goes whole to one split, so a corpus of few documents (one small file with the
    default ``doc_unit="file"`` is one document) splits all-or-nothing: an empty train split is a
    ValueError; an empty validation split although ``val_fraction > 0`` is reported in
    ``manifest["warnings"]`` (the CLI prints it) and training then has no validation loss.
    """
    cfg = config or PrepareConfig()
    cfg.validate()
    tok = _load_tokenizer(tokenizer)
    eot = tok.eot_token
    if eot is None:
        raise ValueError("the tokenizer has no <|endoftext|> special token, which separates documents; "
                         "train it with special_tokens=['<|endoftext|>']")
    out = Path(out_dir)
    inputs = _as_list(inputs, "inputs")
    # Never read our own output: skip the output folder when it lies inside an input folder
    # (prepare corpus --out corpus/prepared); when an input lies inside the output folder (prepare
    # data/raw --out data), skip only the files prepare writes there.
    out_r = out.resolve()
    inputs_in_out = any(Path(i).resolve().is_relative_to(out_r) for i in inputs)
    sources = expand_inputs(inputs, include=cfg.include, exclude=[] if inputs_in_out else [out])
    sources = [q for q in sources if not (q.resolve().parent == out_r and _is_prepared_file(q))]
    if not sources:
        raise ValueError(f"no input files found in {', '.join(map(os.fspath, inputs))}"
                         + (f" matching include {list(cfg.include)}" if cfg.include else "")
                         + (f" (outside the output directory {out})" if out.exists() else ""))
    out.mkdir(parents=True, exist_ok=True)
    tok_hash = tok.hash()
    fingerprint = {"sources": _sources_record(sources), "tokenizer_hash": tok_hash, "config": _cfg_json(cfg)}

    if overwrite:
        _clear_prepared(out)
    if (out / MANIFEST).is_file():
        m = load_manifest(out)
        if m.get("fingerprint") == fingerprint:
            return m
        raise ValueError(f"{out} already holds prepared data from other inputs or settings; "
                         "pass overwrite=True (--overwrite) or choose another directory")
    state: dict[str, Any] = {"fingerprint": fingerprint, "chunks": []}
    if (out / PROGRESS).is_file():
        try:
            old = json.loads((out / PROGRESS).read_text())
        except json.JSONDecodeError:
            old = None
        if old and old.get("fingerprint") == fingerprint:
            state = old
        else:
            raise ValueError(f"{out} holds an unfinished preparation of other inputs or settings; "
                             "pass overwrite=True (--overwrite) or choose another directory")

    seen: set[bytes] = set()
    stats = _Stats()
    for ch in state["chunks"]:
        raw = (out / ch["digests"]).read_bytes()
        seen.update(raw[i:i + 16] for i in range(0, len(raw), 16))
        for k, v in ch["stats"].items():
            setattr(stats, k, getattr(stats, k) + v) if k != "bad" else stats.bad.extend(v)
    pos = tuple(state["chunks"][-1]["end"]) if state["chunks"] else (0, 0, 0)

    t0 = time.perf_counter()
    chunks_done_now = 0
    pool = ThreadPoolExecutor(max_workers=1)  # the tokenizer releases the GIL: it overlaps the reading
    try:
        total_bytes = sum(s["bytes"] for s in fingerprint["sources"])
        while pos[0] < len(sources):
            if _stop_after_chunks is not None and chunks_done_now >= _stop_after_chunks:
                return {}
            ci = len(state["chunks"])
            cstats = _Stats()
            pending: dict[str, list[str]] = {"train": [], "val": []}
            futs: dict[str, list[Any]] = {"train": [], "val": []}
            n_docs = {"train": 0, "val": 0}
            pending_bytes = {"train": 0, "val": 0}
            digests: list[bytes] = []
            chunk_text = 0
            end = pos
            src = pos[0]
            start = (pos[1], pos[2])
            while src < len(sources) and chunk_text < cfg.chunk_bytes:
                for doc, where in iter_documents(sources[src], src_index=src, start=start, doc_unit=cfg.doc_unit,
                                                 jsonl_field=cfg.jsonl_field, max_doc_bytes=cfg.max_doc_bytes,
                                                 stats=cstats):
                    end = where
                    d = _digest(doc)
                    if cfg.dedup:
                        if d in seen:
                            cstats.duplicates += 1
                            continue
                        seen.add(d)
                        digests.append(d)
                    cstats.docs += 1
                    chunk_text += len(doc)
                    split = "val" if _is_val(d, cfg.val_fraction) else "train"
                    pending[split].append(doc)
                    pending_bytes[split] += len(doc)
                    n_docs[split] += 1
                    if len(pending[split]) >= cfg.batch_docs or pending_bytes[split] >= (1 << 20):
                        # tokenize in the background while the next documents are read
                        futs[split].append(pool.submit(_tokenize_docs, tok, pending[split], eot, num_threads))
                        pending[split] = []
                        pending_bytes[split] = 0
                    if chunk_text >= cfg.chunk_bytes:
                        break
                else:
                    src += 1
                    start = (0, 0)
                    end = (src, 0, 0)
                    continue
                # chunk full inside this file
                if end[1] >= sources[src].stat().st_size:
                    end = (src + 1, 0, 0)
                break
            record: dict[str, Any] = {"index": ci, "end": list(end), "digests": f"dedup_{ci:05d}.bin"}
            for split in ("train", "val"):
                if pending[split]:
                    futs[split].append(pool.submit(_tokenize_docs, tok, pending[split], eot, num_threads))
                    pending[split] = []
                w = ShardWriter(out, f"{split}_c{ci:05d}", tok.n_vocab, tok_hash, shard_tokens=cfg.shard_tokens)
                n_tok = 0
                for fut in futs[split]:
                    ids = fut.result()
                    w.add(ids)
                    n_tok += ids.size
                paths = w.close()
                record[split] = {"shards": [p.name for p in paths], "tokens": n_tok, "docs": n_docs[split]}
            with atomic_write(out / record["digests"], "wb") as f:
                f.write(b"".join(digests))
            s = asdict(cstats)
            record["stats"] = s
            for k, v in s.items():
                setattr(stats, k, getattr(stats, k) + v) if k != "bad" else stats.bad.extend(v)
            state["chunks"].append(record)
            _write_json(out / PROGRESS, state)
            chunks_done_now += 1
            pos = tuple(end)
            if progress:
                done = sum(s["bytes"] for s in fingerprint["sources"][:pos[0]]) + (pos[1] if pos[0] < len(sources) else 0)
                el = time.perf_counter() - t0
                print(f"\rprepare: {done / 1e6:8.1f} / {total_bytes / 1e6:.1f} MB  {stats.docs} docs  "
                      f"{stats.bytes_in / 1e6 / max(el, 1e-9):6.1f} MB/s", end="", file=sys.stderr, flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if progress:
        print(file=sys.stderr)

    splits: dict[str, Any] = {}
    for split in ("train", "val"):
        shards = []
        for ch in state["chunks"]:
            for name in ch[split]["shards"]:
                shards.append({"file": name, "tokens": shard_info(out / name).n_tokens})
        splits[split] = {"shards": shards, "tokens": sum(s["tokens"] for s in shards),
                         "docs": sum(ch[split]["docs"] for ch in state["chunks"])}
    if stats.docs == 0:
        _clear_prepared(out)
        raise ValueError(f"empty corpus: no text left in {len(sources)} input file(s) after cleaning "
                         f"({stats.bad_lines} bad lines, {stats.empty_lines} empty lines)")
    unit = {"file": "a whole file (or 1 MiB of it)", "paragraph": "a paragraph", "line": "a line"}[cfg.doc_unit]
    if splits["train"]["docs"] == 0:
        _clear_prepared(out)
        raise ValueError(f"empty train split: all {stats.docs} document(s) went to validation (val_fraction "
                         f"{cfg.val_fraction}; each document goes whole to one split, and a document is {unit}). "
                         "Use smaller documents (doc_unit='paragraph' or 'line', --doc-unit), more input files, "
                         "or a smaller val_fraction (--val-fraction)")
    warnings: list[str] = []
    if splits["val"]["docs"] == 0 and cfg.val_fraction > 0:
        warnings.append(f"the validation split is empty: none of the {stats.docs} document(s) fell in val_fraction "
                        f"{cfg.val_fraction} (a document is {unit}); training will report no validation loss. "
                        "Use smaller documents (--doc-unit paragraph or line), more input files, "
                        "or a larger --val-fraction")
    tok.save(out / TOKENIZER_FILE)
    manifest = {
        "format": "homeforge-data/1",
        "fingerprint": fingerprint,
        "tokenizer_hash": tok_hash,
        "tokenizer_file": TOKENIZER_FILE,
        "vocab_size": tok.n_vocab,
        "eot_token": eot,
        "sources": fingerprint["sources"],
        "config": _cfg_json(cfg),
        "splits": splits,
        "chunks": len(state["chunks"]),
        "counts": {"docs": stats.docs, "bytes_in": stats.bytes_in, "lines_kept": stats.lines_kept,
                   "empty_lines": stats.empty_lines, "bad_lines": stats.bad_lines,
                   "empty_records": stats.empty_records, "duplicates": stats.duplicates},
        "bad_lines": stats.bad[:_MAX_BAD_REPORTED],
        "warnings": warnings,
    }
    _write_json(out / MANIFEST, manifest)
    (out / PROGRESS).unlink(missing_ok=True)
    return manifest


def _cfg_json(cfg: PrepareConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["include"] = list(cfg.include)
    return d


def _is_prepared_file(p: Path) -> bool:
    """A file prepare writes into its output directory (manifest, progress, tokenizer, shards)."""
    return (p.name in (MANIFEST, PROGRESS, TOKENIZER_FILE) or p.name.startswith("dedup_")
            or (p.suffix == ".bin" and p.name.startswith(("train_c", "val_c"))))


def _clear_prepared(out: Path) -> None:
    for p in out.iterdir():
        if _is_prepared_file(p):
            p.unlink()


# ----------------------------------------------------------------------------------------------
# loader


class TokenLoader:
    """Packed (tokens, targets) batches of shape (batch_size, seq_len) from memory-mapped shards.

    The concatenated shards are cut into windows of ``seq_len + 1`` tokens starting every
    ``seq_len`` tokens (targets are tokens shifted by one). Each epoch visits the windows in the
    order of a permutation seeded by ``(seed, epoch)`` (``shuffle=False``: in order). An optimizer
    step (:meth:`next_step`) consumes ``batch_size * grad_accum * world_size`` consecutive entries of
    that order (a new epoch starts when they do not fit in the current one); micro-batch ``m`` of
    rank ``r`` takes entries ``[(m * world_size + r) * batch_size, ... + batch_size)`` of them:
    disjoint across ranks, and the union over micro-batches and ranks is the same set of windows for
    every split of the same global batch into ``batch_size``, ``grad_accum`` and ``world_size``. The
    position (epoch, cursor) counts global windows, so it does not depend on that split.
    """

    def __init__(self, source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], seq_len: int,
                 batch_size: int, *, split: str = "train", seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, grad_accum: int = 1) -> None:
        for name, v in (("seq_len", seq_len), ("batch_size", batch_size), ("grad_accum", grad_accum),
                        ("seed", seed), ("rank", rank), ("world_size", world_size)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {v!r}")
        if seq_len < 1 or batch_size < 1 or grad_accum < 1:
            raise ValueError(f"seq_len, batch_size and grad_accum must be >= 1, got {seq_len}, {batch_size} and {grad_accum}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
            raise FileNotFoundError(f"no prepared data at {source} (run `homeforge data prepare`)")
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            m = load_manifest(source)
            if split not in m["splits"]:
                raise ValueError(f"no split {split!r} in {source} (have {sorted(m['splits'])})")
            paths = [Path(source) / s["file"] for s in m["splits"][split]["shards"]]
            self.vocab_size = int(m["vocab_size"])
        else:
            paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
            self.vocab_size = max((shard_info(p).vocab_size for p in paths), default=0)
        self.paths = paths
        self.shards = [read_shard(p) for p in paths]
        self.shards = [s for s in self.shards if s.size]
        sizes = np.array([s.size for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.total_tokens = int(self.starts[-1])
        self.seq_len, self.batch_size = int(seq_len), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.n_windows = max(0, (self.total_tokens - 1) // self.seq_len)
        self.grad_accum = int(grad_accum)
        self.global_batch = self.batch_size * self.world_size  # windows of one micro-batch, all ranks
        self.step_windows = self.global_batch * self.grad_accum  # windows of one optimizer step
        if self.n_windows < self.step_windows:
            raise ValueError(f"{split} data too small: {self.total_tokens} tokens give {self.n_windows} windows of "
                             f"{self.seq_len}+1 tokens, but one step needs {self.step_windows} "
                             f"(batch_size {self.batch_size} x grad_accum {self.grad_accum} x world_size {self.world_size})")
        self.epoch = 0
        self.cursor = 0
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    def _order_for(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            else:
                self._order = np.arange(self.n_windows)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def _window(self, w: int) -> np.ndarray:
        start = int(w) * self.seq_len
        n = self.seq_len + 1
        out = np.empty(n, dtype=TOKEN_DTYPE)
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while filled < n:
            shard = self.shards[k]
            off = start + filled - int(self.starts[k])
            take = min(n - filled, shard.size - off)
            out[filled:filled + take] = shard[off:off + take]
            filled += take
            k += 1
        return out

    def _batch(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.stack([self._window(w) for w in windows])
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])

    def next_step(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's ``grad_accum`` (tokens, targets) micro-batches of the next optimizer step;
        advances the position by ``step_windows``."""
        if self.cursor + self.step_windows > self.n_windows:
            self.epoch += 1
            self.cursor = 0
        order = self._order_for(self.epoch)
        out = []
        for m in range(self.grad_accum):
            lo = self.cursor + m * self.global_batch + self.rank * self.batch_size
            out.append(self._batch(order[lo:lo + self.batch_size]))
        self.cursor += self.step_windows
        return out

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's (tokens, targets) for the next global step (``grad_accum`` must be 1)."""
        if self.grad_accum != 1:
            raise ValueError(f"next_batch() reads one micro-batch per step; with grad_accum={self.grad_accum} "
                             "use next_step()")
        return self.next_step()[0]

    def eval_batches(self, max_batches: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """In-order batches for evaluation (position untouched); rank-sliced like next_batch."""
        n_steps = self.n_windows // self.global_batch
        if max_batches is not None:
            n_steps = min(n_steps, max_batches)
        for s in range(n_steps):
            lo = s * self.global_batch + self.rank * self.batch_size
            yield self._batch(np.arange(lo, lo + self.batch_size))

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step (all micro-batches, all ranks)."""
        return self.step_windows * self.seq_len

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "seq_len": self.seq_len,
                "n_windows": self.n_windows, "global_batch": self.global_batch, "step_windows": self.step_windows,
                "shuffle": int(self.shuffle)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not isinstance(sd, dict):
            raise TypeError(f"the data position must be a dict (from state_dict()), got {type(sd).__name__}")
        missing = [k for k in ("epoch", "cursor", "seed", "seq_len", "n_windows") if k not in sd]
        if missing:
            raise ValueError(f"the data position lacks key(s) {missing} (it must come from TokenLoader.state_dict())")
        for key in ("seq_len", "n_windows"):
            if int(sd[key]) != getattr(self, key):
                raise ValueError(f"data position was saved with {key}={sd[key]}, but this loader has "
                                 f"{key}={getattr(self, key)} (different data or sequence length)")
        # step_windows (batch_size x grad_accum x world_size) is the global batch; positions saved
        # before it was recorded have only global_batch (batch_size x world_size, one micro-batch).
        key, mine = ("step_windows", self.step_windows) if "step_windows" in sd else ("global_batch", self.global_batch)
        if int(sd.get(key, mine)) != mine:
            raise ValueError(f"data position was saved with {key}={sd[key]} windows; this run has {mine} "
                             f"(batch_size {self.batch_size} x "
                             + (f"grad_accum {self.grad_accum} x " if key == "step_windows" else "")
                             + f"world_size {self.world_size}); the global batch must stay the same to resume")
        self.seed = int(sd["seed"])
        self.shuffle = bool(sd.get("shuffle", 1))
        self._order_epoch = -1
        self.epoch, self.cursor = int(sd["epoch"]), int(sd["cursor"])
