"""Token shards: the on-disk format between tokenization and training.

A shard is one file: a 64-byte little-endian header, then the tokens.

====== ======= ==============================================================
offset size    field
====== ======= ==============================================================
0      8       magic ``b"HFTOKENS"``
8      4       format version (uint32, currently 1)
12     4       bytes per token: 2 (uint16, vocabularies <= 65,536) or 4 (uint32)
16     8       number of tokens (uint64)
24     8       vocabulary size (uint64); every token is < this
32     4       CRC-32 of the token bytes (uint32)
36     4       reserved, zero
40     24      the first 24 bytes of the tokenizer's sha256 (``Tokenizer.hash()``)
====== ======= ==============================================================

Documents are concatenated, each followed by the tokenizer's end-of-text token when it has one.
Shards are written atomically (temporary file, fsync, rename), and :func:`read_shard` checks the
header against the file size, so a truncated shard is an error, never silently short data.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "s.bin")
>>> write_shard(path, np.array([1, 2, 3]), vocab_size=300, tokenizer_hash="ab" * 32)
>>> read_shard(path).tolist()
[1, 2, 3]
>>> shard_info(path).dtype
dtype('uint16')
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_write

MAGIC = b"HFTOKENS"
VERSION = 1
HEADER_SIZE = 64
_HEADER = struct.Struct("<8sIIQQII24s")
assert _HEADER.size == HEADER_SIZE
#: Largest ``shard_tokens`` a :class:`ShardWriter` accepts: 2**32 tokens (16 GiB of uint32 per shard;
#: keep shards far smaller, the default is 2**26). The writer's buffer grows with the data, so a
#: large limit costs memory only when that many tokens arrive.
MAX_SHARD_TOKENS = 1 << 32
_INITIAL_BUFFER = 1 << 16

__all__ = ["MAX_SHARD_TOKENS", "ShardInfo", "ShardWriter", "read_shard", "shard_info", "token_dtype", "write_shard"]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32."""
    if vocab_size < 1 or vocab_size > 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _hash_bytes(tokenizer_hash: str) -> bytes:
    try:
        raw = bytes.fromhex(tokenizer_hash)
    except (ValueError, TypeError):
        raise ValueError(f"tokenizer_hash must be a hex string, got {tokenizer_hash!r}") from None
    if len(raw) < 24:
        raise ValueError(f"tokenizer_hash must have at least 48 hex digits, got {len(tokenizer_hash)}")
    return raw[:24]


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    n_tokens: int
    vocab_size: int
    dtype: np.dtype
    crc32: int
    tokenizer_hash_prefix: str  # 48 hex digits


def _check_tokens(tokens: Any, vocab_size: int) -> np.ndarray:
    """``tokens`` as a 1-D integer array with every id in [0, vocab_size) (TypeError / ValueError otherwise;
    floats and bools are refused rather than truncated)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens must be integers, got {tokens.dtype}")
    if tokens.size:
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token ids must be in [0, {vocab_size}), got min {lo} and max {hi}")
    return tokens


def write_shard(path: str | os.PathLike[str], tokens: np.ndarray, vocab_size: int, tokenizer_hash: str) -> None:
    """Write ``tokens`` (any integer array) as one shard, atomically. Ids must be in [0, vocab_size)."""
    dtype = token_dtype(vocab_size)
    tokens = _check_tokens(tokens, vocab_size)
    payload = np.ascontiguousarray(tokens, dtype=dtype.newbyteorder("<"))
    header = _HEADER.pack(MAGIC, VERSION, dtype.itemsize, payload.size, vocab_size,
                          zlib.crc32(memoryview(payload).cast("B")), 0, _hash_bytes(tokenizer_hash))
    with atomic_write(path) as f:
        f.write(header)
        f.write(memoryview(payload).cast("B"))


def shard_info(path: str | os.PathLike[str]) -> ShardInfo:
    """Read and check a shard's header (not its payload's checksum: see read_shard(verify=True))."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(HEADER_SIZE)
        size = p.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"token shard not found: {p}") from None
    if len(raw) < HEADER_SIZE:
        raise ValueError(f"{p}: not a token shard (file has {len(raw)} bytes, header needs {HEADER_SIZE})")
    magic, version, itemsize, n, vocab, crc, _, hprefix = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise ValueError(f"{p}: not a token shard (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"{p}: shard format version {version} is not supported (this homeforge reads {VERSION})")
    if itemsize not in (2, 4):
        raise ValueError(f"{p}: corrupt header (bytes per token {itemsize})")
    expected = HEADER_SIZE + n * itemsize
    if size != expected:
        raise ValueError(f"{p}: truncated or corrupt shard: header says {n} tokens ({expected} bytes), file has {size} bytes")
    return ShardInfo(p, int(n), int(vocab), np.dtype(np.uint16 if itemsize == 2 else np.uint32), int(crc), hprefix.hex())


def read_shard(path: str | os.PathLike[str], *, verify: bool = False) -> np.ndarray:
    """Memory-map a shard's tokens (read-only). ``verify=True`` also checks the CRC-32 (reads the file)."""
    info = shard_info(path)
    if info.n_tokens == 0:
        return np.zeros(0, dtype=info.dtype)
    tokens = np.memmap(info.path, dtype=info.dtype.newbyteorder("<"), mode="r", offset=HEADER_SIZE, shape=(info.n_tokens,))
    if verify and zlib.crc32(memoryview(tokens).cast("B")) != info.crc32:
        raise ValueError(f"{info.path}: checksum mismatch: the shard's tokens are corrupt")
    return tokens


def _check_shard_tokens(shard_tokens: int) -> None:
    if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, (int, np.integer)):
        raise TypeError(f"shard_tokens must be an int, got {type(shard_tokens).__name__}")
    if not 1 <= shard_tokens <= MAX_SHARD_TOKENS:
        raise ValueError(f"shard_tokens must be in [1, {MAX_SHARD_TOKENS}] (2**32), got {shard_tokens}")


class ShardWriter:
    """Stream tokens into numbered shards of ``shard_tokens`` tokens each.

    >>> import numpy as np, tempfile
    >>> d = tempfile.mkdtemp()
    >>> w = ShardWriter(d, "train", vocab_size=1000, tokenizer_hash="cd" * 32, shard_tokens=4)
    >>> w.add(np.arange(10)); [p.name for p in w.close()]
    ['train_000000.bin', 'train_000001.bin', 'train_000002.bin']
    """

    def __init__(self, directory: str | os.PathLike[str], prefix: str, vocab_size: int, tokenizer_hash: str,
                 shard_tokens: int = 1 << 26, start_index: int = 0) -> None:
        _check_shard_tokens(shard_tokens)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix, self.vocab_size, self.tokenizer_hash = prefix, vocab_size, tokenizer_hash
        _hash_bytes(tokenizer_hash)
        self.dtype = token_dtype(vocab_size)
        self.shard_tokens = shard_tokens
        self.index = start_index
        self.paths: list[Path] = []
        self.n_tokens = 0
        self._buf = np.empty(min(shard_tokens, _INITIAL_BUFFER), dtype=self.dtype)  # grows up to shard_tokens
        self._fill = 0
        self._closed = False

    def add(self, tokens: np.ndarray) -> None:
        if self._closed:
            raise ValueError("ShardWriter is closed")
        tokens = _check_tokens(tokens, self.vocab_size)
        pos = 0
        while pos < tokens.size:
            take = min(tokens.size - pos, self.shard_tokens - self._fill)
            if self._fill + take > self._buf.size:
                grown = np.empty(min(self.shard_tokens, max(2 * self._buf.size, self._fill + take)), dtype=self.dtype)
                grown[:self._fill] = self._buf[:self._fill]
                self._buf = grown
            self._buf[self._fill:self._fill + take] = tokens[pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == self.shard_tokens:
                self._flush()
        self.n_tokens += int(tokens.size)

    def _flush(self) -> None:
        if self._fill == 0:
            return
        path = self.directory / f"{self.prefix}_{self.index:06d}.bin"
        write_shard(path, self._buf[:self._fill], self.vocab_size, self.tokenizer_hash)
        self.paths.append(path)
        self.index += 1
        self._fill = 0

    def close(self) -> list[Path]:
        """Write the last partial shard; return every shard path written."""
        if not self._closed:
            self._flush()
            self._closed = True
        return list(self.paths)
