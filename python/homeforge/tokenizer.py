"""Byte-level BPE tokenizer on the C++ core: tiktoken-exact encoding, training, HF/tiktoken formats.

Pre-tokenization uses one of three named patterns -- ``"gpt2"`` (r50k), ``"cl100k"``, ``"o200k"``,
the exact regexes of tiktoken, implemented as hand-written UTF-8 scanners over Unicode 14.0.0
tables (``homeforge._core.unicode_version``) -- or an arbitrary regex string. A custom regex runs on
Python's standard-library ``re`` engine (3.11+: possessive quantifiers and atomic groups), after
``\\p{..}``/``\\P{..}`` classes and ``\\s``/``\\S`` are rewritten into explicit code-point classes from
the same Unicode 14 data (``\\s`` = the White_Space property, as in Rust's regex crate) and ``$``
into ``\\Z``. ``\\w``, ``\\W``, ``\\b`` and ``\\B`` raise ValueError: their Rust meaning (``\\w`` includes
the Alphabetic property and all marks) is not expressible from the standard library's data, and
Python's would give other ids; spell the class out with ``\\p{..}``. That path is pure Python per
piece (slower; encode_batch runs it serially).

>>> tok = Tokenizer.train(["hello world, hello there"] * 20, vocab_size=270, pattern="gpt2",
...                       special_tokens=["<|endoftext|>"])
>>> ids = tok.encode("hello world<|endoftext|>", allowed_special="all")
>>> tok.decode(ids)
'hello world<|endoftext|>'
>>> ids[-1] == tok.eot_token == tok.n_vocab - 1
True
>>> tok.count("hello there") == len(tok.encode("hello there"))
True
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import hashlib
import json
import os
import re
import sys
import time
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from . import _core
from ._atomic import atomic_write

__all__ = [
    "Tokenizer",
    "StreamDecoder",
    "read_tiktoken_ranks",
    "write_tiktoken_ranks",
    "PATTERNS",
]

PATTERNS: dict[str, str] = {name: _core.pattern_regex(name) for name in ("gpt2", "cl100k", "o200k")}
_FORMAT = "homeforge-tokenizer"
_FORMAT_VERSION = 2  # 2: the checksum covers the header fields too; version 1 files still load
EOT = "<|endoftext|>"

PathLike = Union[str, "os.PathLike[str]"]


# ---- custom regex: \p{..} translation for the stdlib re engine ------------------------------

@functools.lru_cache(maxsize=1)
def _category_ranges() -> dict[str, list[tuple[int, int]]]:
    """General category (two letters and one-letter groups) -> sorted code point ranges."""
    cats: dict[str, list[tuple[int, int]]] = {}
    prev, start = None, 0
    for cp in range(0x110001):
        c = unicodedata.category(chr(cp)) if cp < 0x110000 else None
        if c != prev:
            if prev is not None:
                cats.setdefault(prev, []).append((start, cp - 1))
            prev, start = c, cp
    groups: dict[str, list[tuple[int, int]]] = {}
    for c, rs in cats.items():
        groups.setdefault(c[0], []).extend(rs)
    for g, rs in groups.items():
        cats[g] = sorted(rs)
    cats["Any"] = [(0, 0x10FFFF)]
    return cats


_WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
_CATEGORY_ALIASES = {"Letter": "L", "Mark": "M", "Number": "N", "Punctuation": "P", "Symbol": "S",
                     "Separator": "Z", "Other": "C", "Uppercase_Letter": "Lu", "Lowercase_Letter": "Ll",
                     "Titlecase_Letter": "Lt", "Modifier_Letter": "Lm", "Other_Letter": "Lo",
                     "Decimal_Number": "Nd", "Letter_Number": "Nl", "Other_Number": "No",
                     "Nonspacing_Mark": "Mn", "Spacing_Mark": "Mc", "Enclosing_Mark": "Me"}


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    def esc(cp: int) -> str:
        return f"\\U{cp:08x}"
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


def _translate_regex(pattern: str, saved: bool = False) -> str:
    r"""Rewrite \p{X}, \P{X}, \pX, \s, \S and $ for Python's re (see the module docstring).

    \w, \W, \b and \B are refused in a new pattern (their meaning differs from tiktoken's); a
    ``saved`` pattern, from a file written before that check, keeps Python's meaning, so every
    tokenizer file ever written still loads and encodes as it did."""
    cats = _category_ranges()
    out: list[str] = []
    i, n, in_class, class_start = 0, len(pattern), False, 0

    def prop(j: int) -> tuple[list[tuple[int, int]], int]:
        if j < n and pattern[j] == "{":
            k = pattern.find("}", j)
            if k < 0:
                raise ValueError(f"custom pattern: unterminated \\p{{ at offset {j}")
            name = pattern[j + 1:k].strip()
            j = k + 1
        elif j < n:
            name, j = pattern[j], j + 1
        else:
            raise ValueError("custom pattern: \\p at the end of the pattern")
        name = _CATEGORY_ALIASES.get(name, name)
        if name.startswith("gc=") or name.startswith("General_Category="):
            name = name.split("=", 1)[1]
        if name not in cats:
            raise ValueError(f"custom pattern: unsupported Unicode property \\p{{{name}}} "
                             "(general categories such as L, Lu, N, Nd, P, S, Z, M are supported; scripts are not)")
        return cats[name], j

    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt in "pP":
                ranges, j = prop(i + 2)
                if in_class:
                    if nxt == "P":
                        raise ValueError(f"custom pattern: \\P{{..}} inside [...] is not supported (offset {i}); "
                                         "use [^...] with \\p{..}")
                    out.append(_ranges_text(ranges))
                else:
                    out.append(("[^" if nxt == "P" else "[") + _ranges_text(ranges) + "]")
                i = j
                continue
            if nxt in "wWbB" and not saved:
                raise ValueError(
                    f"custom pattern: \\{nxt} at offset {i} is not supported: Python's re and tiktoken's Rust "
                    "regex define it differently (Rust's \\w is [\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}] "
                    "and \\b is a boundary of that \\w), so ids would differ; write the class out with "
                    "\\p{..} general categories instead, e.g. [\\p{L}\\p{M}\\p{N}_] for a word character")
            if nxt in "sS":
                if in_class:
                    if nxt == "S":
                        raise ValueError(f"custom pattern: \\S inside [...] is not supported (offset {i})")
                    out.append(_ranges_text(_WHITE_SPACE))
                else:
                    out.append(("[^" if nxt == "S" else "[") + _ranges_text(_WHITE_SPACE) + "]")
                i += 2
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]" and i > class_start:
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            class_start = i + 1 if i < n and pattern[i] == "]" else i  # a leading ] is literal
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        out.append("\\Z" if ch == "$" else ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=32)
def _compile_custom(pattern: str, saved: bool = False) -> re.Pattern[str]:
    try:
        return re.compile(_translate_regex(pattern, saved))
    except re.error as e:
        raise ValueError(f"custom pattern does not compile with Python's re engine: {e}") from None


def _repair_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# ---- GPT-2 byte <-> unicode map (tokenizer.json) -------------------------------------------

@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> list[str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = [""] * 256
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in enumerate(_byte_to_unicode())}


def _hf_pattern(pattern_regex: str) -> str:
    # Oniguruma (HF tokenizers) reads `{1,3}+` as "{1,3}, then one or more", not as possessive.
    # At the end of an alternative the possessive and the greedy form match the same text.
    return pattern_regex.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")


# ---- tiktoken rank files --------------------------------------------------------------------

def read_tiktoken_ranks(path: PathLike) -> dict[bytes, int]:
    """Read a tiktoken rank file (lines ``base64(token) rank``) into ``{bytes: rank}``."""
    p = Path(path)
    ranks: dict[bytes, int] = {}
    with open(p, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{p}:{lineno}: expected 'base64 rank', got {line[:60]!r}")
            try:
                tok = base64.b64decode(parts[0], validate=True)
                rank = int(parts[1])
            except (binascii.Error, ValueError):
                raise ValueError(f"{p}:{lineno}: bad token or rank {line[:60]!r}") from None
            if tok in ranks:
                raise ValueError(f"{p}:{lineno}: token {tok!r} appears twice")
            ranks[tok] = rank
    return ranks


def write_tiktoken_ranks(path: PathLike, ranks: dict[bytes, int]) -> None:
    """Write ``{bytes: rank}`` as a tiktoken rank file, in rank order, atomically."""
    with atomic_write(path, "wb") as f:
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n")


# ---- the tokenizer --------------------------------------------------------------------------

def _v2_digest(header: dict[str, Any], body: bytes) -> str:
    """sha256 of the header's fields other than ``sha256`` (canonical JSON, keys sorted) and the ranks."""
    fields = {k: v for k, v in header.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode() + b"\n" + body).hexdigest()


class StreamDecoder:
    """Decodes token ids as they arrive; incomplete UTF-8 sequences are held back until completed.

    >>> tok = Tokenizer.from_tiktoken({bytes([b]): b for b in range(256)}, "gpt2", {})
    >>> d = tok.stream_decoder()
    >>> ids = list("é!".encode())
    >>> [d.feed(i) for i in ids] + [d.finish()]
    ['', 'é', '!', '']
    """

    def __init__(self, tokenizer: Tokenizer, errors: str = "replace") -> None:
        self._tok = tokenizer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors)

    def feed(self, ids: int | Iterable[int]) -> str:
        """Text completed by these ids (may be empty)."""
        if isinstance(ids, (int, np.integer)):
            ids = [int(ids)]
        return self._dec.decode(self._tok.decode_bytes(ids))

    def finish(self) -> str:
        """Flush: an incomplete trailing sequence becomes U+FFFD with errors="replace", else raises."""
        return self._dec.decode(b"", final=True)


class Tokenizer:
    """A byte-level BPE tokenizer with tiktoken's semantics.

    ``mergeable_ranks`` maps token bytes to rank (= id) and must contain all 256 single bytes;
    ``special_tokens`` maps text to id. ``pattern`` is "gpt2", "cl100k", "o200k" (or one of their
    regex strings) or any other regex (see the module docstring for its engine).

    >>> tok = Tokenizer({bytes([b]): b for b in range(256)} | {b"ab": 256}, "o200k", {"<|endoftext|>": 257})
    >>> tok.encode("abc"), tok.n_vocab, tok.eot_token, tok.pattern
    ([256, 99], 258, 257, 'o200k')
    """

    def __init__(self, mergeable_ranks: dict[bytes, int] | Iterable[tuple[bytes, int]], pattern: str = "o200k",
                 special_tokens: dict[str, int] | None = None, *, _saved: bool = False) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
        special_tokens = dict(special_tokens or {})
        for k, v in special_tokens.items():
            if not isinstance(k, str) or not isinstance(v, int):
                raise TypeError("special_tokens must map str -> int")
            if v < 0:
                raise ValueError(f"special token {k!r} has a negative id {v}")
        name = next((nm for nm, rx in PATTERNS.items() if pattern in (nm, rx)), None)
        if pattern == "r50k":
            name = "gpt2"
        self._rx: re.Pattern[str] | None = None
        if name is None:
            if not pattern:
                raise ValueError("pattern must not be empty")
            self._rx = _compile_custom(pattern, _saved)
        self._pattern = name or pattern
        self._bpe = _core.Bpe(mergeable_ranks, name or "custom", special_tokens)
        self._special = {t: i for t, i in self._bpe.specials()}
        self._special_order = [t for t, _ in self._bpe.specials()]
        self._special_rx: re.Pattern[str] | None = None
        self._hash: str | None = None

    # -- properties ---------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        """Largest token id + 1 (tiktoken's n_vocab)."""
        return int(self._bpe.n_vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._special)

    @property
    def pattern(self) -> str:
        """The pattern name ("gpt2", "cl100k", "o200k") or the custom regex."""
        return self._pattern

    @property
    def pattern_regex(self) -> str:
        return PATTERNS.get(self._pattern, self._pattern)

    @property
    def eot_token(self) -> int | None:
        """Id of "<|endoftext|>" if it is a special token, else None."""
        return self._special.get(EOT)

    def __repr__(self) -> str:
        return f"Tokenizer(n_vocab={self.n_vocab}, pattern={self._pattern!r}, special_tokens={len(self._special)})"

    # -- special-token policy -----------------------------------------------------------------
    def _mask(self, tokens: Collection[str]) -> list[bool]:
        return [t in tokens for t in self._special_order]

    def _masks(self, allowed_special: Literal["all"] | Collection[str],
               disallowed_special: Literal["all"] | Collection[str]
               ) -> tuple[list[bool], list[bool], re.Pattern[str] | None]:
        """Masks over the registered special tokens, plus a regex when an explicit
        ``disallowed_special`` names strings that are not registered special tokens: tiktoken
        builds its check from the given set, so such text raises too (then the whole set is
        checked with that regex, leftmost match first, as tiktoken does)."""
        if allowed_special == "all":
            allowed: Collection[str] = self._special
        elif isinstance(allowed_special, str) or not isinstance(allowed_special, Collection):
            raise TypeError('allowed_special must be "all" or a collection of str')
        else:
            allowed = allowed_special
        extra = None
        if disallowed_special == "all":
            disallowed: Collection[str] = [t for t in self._special if t not in allowed]
        elif isinstance(disallowed_special, str) or not isinstance(disallowed_special, Collection):
            raise TypeError('disallowed_special must be "all" or a collection of str')
        else:
            disallowed = disallowed_special
            if any(t not in self._special for t in disallowed):
                extra = _disallowed_regex(frozenset(disallowed))
        return self._mask(allowed), self._mask(disallowed), extra

    def _check_disallowed(self, text: str, disallowed: list[bool], extra: re.Pattern[str] | None = None) -> None:
        tok = None
        if extra is not None:
            m = extra.search(text)
            tok = m.group() if m else None
        elif any(disallowed):
            k = self._bpe.find_special(text, disallowed)
            tok = self._special_order[k] if k >= 0 else None
        if tok is not None:
            raise ValueError(
                f"Encountered text corresponding to disallowed special token {tok!r}.\n"
                f"If you want this text to be encoded as a special token, pass it to `allowed_special`, e.g. "
                f"`allowed_special={{{tok!r}, ...}}`.\nIf you want this text to be encoded as normal text, "
                f"disable the check for this token by passing `disallowed_special=(enc.special_tokens_set - "
                f"{{{tok!r}}})`.\nTo disable this check for all special tokens, pass `disallowed_special=()`.")

    # -- custom-regex path --------------------------------------------------------------------
    def _custom_encode(self, text: str, allowed: list[bool]) -> list[int]:
        assert self._rx is not None
        text = _repair_surrogates(text)
        names = [t for t, a in zip(self._special_order, allowed) if a]
        out: list[int] = []
        spans: list[tuple[str, int | None]] = []
        if names:
            rx = re.compile("|".join(re.escape(t) for t in sorted(names, key=len, reverse=True)))
            pos = 0
            for m in rx.finditer(text):
                spans.append((text[pos:m.start()], self._special[m.group()]))
                pos = m.end()
            spans.append((text[pos:], None))
        else:
            spans.append((text, None))
        for seg, sid in spans:
            if seg:
                out.extend(self._bpe.encode_pieces([m.group() for m in self._rx.finditer(seg)]))
            if sid is not None:
                out.append(sid)
        return out

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, text: str, *, allowed_special: Literal["all"] | Collection[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Token ids of ``text`` with tiktoken's special-token rules.

        Special-token text raises ValueError unless allowed (then it encodes as its id) or excluded
        from ``disallowed_special`` (then it encodes as ordinary text). An explicit
        ``disallowed_special`` set raises on any of its strings, special tokens or not (tiktoken's
        rule). Where allowed special tokens overlap at one position ("ab" and "a"), the longest
        wins: "ab" encodes as the id of "ab" (tiktoken takes the first in its regex alternation,
        which depends on set order).
        """
        allowed, disallowed, extra = self._masks(allowed_special, disallowed_special)
        self._check_disallowed(text, disallowed, extra)
        if self._rx is not None:
            return self._custom_encode(text, allowed)
        return self._bpe.encode(text, allowed)

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of ``text``, treating special-token text as ordinary text."""
        if self._rx is not None:
            return self._custom_encode(text, [])
        return self._bpe.encode_ordinary(text)

    def encode_to_numpy(self, text: str, *, allowed_special: Literal["all"] | Collection[str] = frozenset(),
                        disallowed_special: Literal["all"] | Collection[str] = "all") -> np.ndarray:
        """Like encode, as a uint32 array."""
        allowed, disallowed, extra = self._masks(allowed_special, disallowed_special)
        self._check_disallowed(text, disallowed, extra)
        if self._rx is not None:
            return np.asarray(self._custom_encode(text, allowed), dtype=np.uint32)
        return self._bpe.encode_numpy(text, allowed)

    def count(self, text: str, *, allowed_special: Literal["all"] | Collection[str] = frozenset(),
              disallowed_special: Literal["all"] | Collection[str] = "all") -> int:
        """Number of tokens ``encode`` would return, without building the list."""
        allowed, disallowed, extra = self._masks(allowed_special, disallowed_special)
        self._check_disallowed(text, disallowed, extra)
        if self._rx is not None:
            return len(self._custom_encode(text, allowed))
        return int(self._bpe.count(text, allowed))

    def _batch_masks(self, texts: Sequence[str], allowed_special: Any, disallowed_special: Any,
                     num_threads: int = 0) -> list[bool]:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not a str")
        allowed, disallowed, extra = self._masks(allowed_special, disallowed_special)
        if extra is None and not any(disallowed):
            return allowed
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must contain str, got {type(t).__name__}")
        if extra is not None:  # strings that are not special tokens: a Python regex per text
            for t in texts:
                self._check_disallowed(t, disallowed, extra)
        else:
            # The scan runs in parallel in C++; the text it names is checked again for the message.
            d = self._bpe.find_special_batch(texts, disallowed, num_threads)
            if d >= 0:
                self._check_disallowed(texts[d], disallowed)
        return allowed

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None, *,
                     allowed_special: Literal["all"] | Collection[str] = frozenset(),
                     disallowed_special: Literal["all"] | Collection[str] = "all") -> list[list[int]]:
        """Encode many texts in parallel in C++ (GIL released); ``num_threads`` caps the threads."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of str, not a single str/bytes")
        texts = list(texts)
        threads = _threads(num_threads)
        allowed = self._batch_masks(texts, allowed_special, disallowed_special, threads)
        if self._rx is not None:
            return [self._custom_encode(t, allowed) for t in texts]
        return self._bpe.encode_batch(texts, allowed, threads)

    def encode_batch_flat(self, texts: Sequence[str], num_threads: int | None = None, *,
                          allowed_special: Literal["all"] | Collection[str] = frozenset(),
                          disallowed_special: Literal["all"] | Collection[str] = "all") -> tuple[np.ndarray, np.ndarray]:
        """Encode many texts into one flat uint32 array plus int64 offsets (len(texts) + 1).

        Text i's tokens are ``ids[offsets[i]:offsets[i + 1]]``.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of str, not a single str/bytes")
        texts = list(texts)
        threads = _threads(num_threads)
        allowed = self._batch_masks(texts, allowed_special, disallowed_special, threads)
        if self._rx is not None:
            lists = [self._custom_encode(t, allowed) for t in texts]
            offsets = np.zeros(len(lists) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(x) for x in lists])
            flat = np.fromiter((i for x in lists for i in x), dtype=np.uint32, count=int(offsets[-1]))
            return flat, offsets
        ids, offsets = self._bpe.encode_batch_flat(texts, allowed, threads)
        return ids, offsets

    # -- decoding -----------------------------------------------------------------------------
    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """Concatenated bytes of the tokens; ValueError for an id not in the vocabulary."""
        return self._bpe.decode_bytes(ids)

    def decode(self, ids: Sequence[int] | np.ndarray, errors: str = "replace") -> str:
        """Text of the tokens; ``errors`` is "replace" (default) or "strict" (or any codec handler)."""
        return self._bpe.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        return self._bpe.token_bytes(_int(token))

    def decode_tokens_bytes(self, ids: Sequence[int]) -> list[bytes]:
        return [self._bpe.token_bytes(_int(t)) for t in ids]

    def stream_decoder(self, errors: str = "replace") -> StreamDecoder:
        return StreamDecoder(self, errors)

    def decode_stream(self, ids: Iterable[int], errors: str = "replace") -> Iterator[str]:
        """Yield text as ids arrive, holding back incomplete UTF-8 sequences."""
        d = StreamDecoder(self, errors)
        for i in ids:
            s = d.feed(i)
            if s:
                yield s
        s = d.finish()
        if s:
            yield s

    # -- vocabulary ---------------------------------------------------------------------------
    def mergeable_ranks(self) -> dict[bytes, int]:
        return {b: r for b, r in self._bpe.ranks()}

    def token_to_id(self, token: bytes | str) -> int | None:
        if isinstance(token, str):
            if token in self._special:
                return self._special[token]
            token = token.encode()
        r = self._bpe.rank_of(token)
        return None if r < 0 else int(r)

    @classmethod
    def from_tiktoken(cls, mergeable_ranks: dict[bytes, int], pattern: str,
                      special_tokens: dict[str, int] | None = None) -> Tokenizer:
        """From a tiktoken ``Encoding``'s parts (``enc._mergeable_ranks``, ``enc._pat_str``, ``enc._special_tokens``)."""
        return cls(mergeable_ranks, pattern, special_tokens)

    @classmethod
    def from_tiktoken_file(cls, path: PathLike, pattern: str, special_tokens: dict[str, int] | None = None) -> Tokenizer:
        return cls(read_tiktoken_ranks(path), pattern, special_tokens)

    def save_tiktoken(self, path: PathLike) -> None:
        """Write the mergeable ranks as a tiktoken rank file (special tokens are not part of it)."""
        write_tiktoken_ranks(path, self.mergeable_ranks())

    # -- our own format -----------------------------------------------------------------------
    def _ranks_body(self) -> bytes:
        return b"".join(base64.b64encode(b) + b" " + str(r).encode() + b"\n" for b, r in self._bpe.ranks())

    def _content_header(self) -> dict[str, Any]:
        return {"format": _FORMAT, "pattern": self._pattern,
                "special_tokens": dict(sorted(self._special.items(), key=lambda kv: kv[1])),
                "n_ranks": int(self._bpe.n_ranks), "unicode_version": _core.unicode_version}

    def _canonical(self) -> bytes:
        """The saved form (format version 2): magic line, JSON header, ranks. The header's
        ``sha256`` covers the header's other fields and the ranks (see _v2_digest)."""
        body = self._ranks_body()
        header = self._content_header() | {"version": _FORMAT_VERSION}
        header["sha256"] = _v2_digest(header, body)
        return f"{_FORMAT} {_FORMAT_VERSION}\n".encode() + json.dumps(header, sort_keys=True).encode() + b"\n" + body

    def _canonical_v1(self) -> bytes:
        """The version-1 form: its checksum covers the ranks only. ``hash()`` is defined on it, so
        a tokenizer's hash (recorded in shards, manifests and checkpoints) does not change with
        the file format."""
        body = self._ranks_body()
        header = self._content_header() | {"version": 1, "ranks_sha256": hashlib.sha256(body).hexdigest()}
        return f"{_FORMAT} 1\n".encode() + json.dumps(header, sort_keys=True).encode() + b"\n" + body

    def hash(self) -> str:
        """Hex sha256 of the tokenizer's content: pattern, special tokens, ranks, Unicode version
        (the canonical version-1 form, so it does not depend on the file format version)."""
        if self._hash is None:
            self._hash = hashlib.sha256(self._canonical_v1()).hexdigest()
        return self._hash

    def save(self, path: PathLike) -> None:
        """Write the tokenizer in homeforge's versioned format, atomically."""
        with atomic_write(path, "wb") as f:
            f.write(self._canonical())

    @classmethod
    def _from_canonical(cls, data: bytes, where: str) -> Tokenizer:
        first, sep, rest = data.partition(b"\n")
        if not sep or not first.startswith(_FORMAT.encode() + b" "):
            raise ValueError(f"{where}: not a homeforge tokenizer file (bad magic line)")
        try:
            version = int(first.split()[1])
        except (IndexError, ValueError):
            raise ValueError(f"{where}: corrupt magic line {first[:60]!r}") from None
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(f"{where}: tokenizer format version {version} is not supported "
                             f"(this homeforge reads 1 and {_FORMAT_VERSION})")
        hline, sep, body = rest.partition(b"\n")
        try:
            header = json.loads(hline)
        except ValueError:
            raise ValueError(f"{where}: corrupt tokenizer header (not JSON)") from None
        if not isinstance(header, dict):
            raise ValueError(f"{where}: corrupt tokenizer header (not a JSON object)")
        sum_key = "sha256" if version >= 2 else "ranks_sha256"
        want = {"format": str, "version": int, "pattern": str, "special_tokens": dict, "n_ranks": int,
                "unicode_version": str, sum_key: str}
        if set(header) != set(want):
            raise ValueError(f"{where}: corrupt tokenizer header: fields {sorted(header)}, expected {sorted(want)}")
        for key, typ in want.items():
            if not isinstance(header[key], typ) or isinstance(header[key], bool):
                raise ValueError(f"{where}: corrupt tokenizer header: {key!r} must be {typ.__name__}, "
                                 f"got {type(header[key]).__name__}")
        if header["format"] != _FORMAT or header["version"] != version:
            raise ValueError(f"{where}: corrupt tokenizer header: format {header['format']!r} version "
                             f"{header['version']} does not match the magic line")
        specials = header["special_tokens"]
        for t, i in specials.items():
            if not isinstance(i, int) or isinstance(i, bool):
                raise ValueError(f"{where}: corrupt tokenizer header: special token {t!r} has id {i!r}, not an int")
        if not sep:
            raise ValueError(f"{where}: truncated tokenizer file (no ranks)")
        if version >= 2:
            if _v2_digest(header, body) != header["sha256"]:
                raise ValueError(f"{where}: truncated or corrupt tokenizer file (checksum of the header and ranks "
                                 "does not match)")
        else:
            # Version 1's checksum covers the ranks only: the header is checked for what a valid
            # file can hold. A pattern is a known name or a regex; a bare word is neither (it is
            # what a corrupted name looks like: "o200j" would silently become a regex).
            if hashlib.sha256(body).hexdigest() != header["ranks_sha256"]:
                raise ValueError(f"{where}: truncated or corrupt tokenizer file (checksum of the ranks does not match)")
            pat = header["pattern"]
            if pat not in PATTERNS and re.fullmatch(r"\w+", pat):
                raise ValueError(f"{where}: corrupt tokenizer header: pattern {pat!r} is not a known pattern name "
                                 f"({', '.join(PATTERNS)}) and not a regex")
        n_ranks = header["n_ranks"]
        lines = body.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if len(lines) != n_ranks:
            raise ValueError(f"{where}: header says {n_ranks} ranks, file has {len(lines)}")
        ranks: list[tuple[bytes, int]] = []
        for i, line in enumerate(lines):
            try:
                a, b = line.split(b" ")
                ranks.append((base64.b64decode(a, validate=True), int(b)))
            except (ValueError, binascii.Error):
                raise ValueError(f"{where}: corrupt rank line {i + 3}") from None
        try:
            return cls(ranks, header["pattern"], specials, _saved=True)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: corrupt tokenizer file: {e}") from None

    @classmethod
    def load(cls, path: PathLike) -> Tokenizer:
        """Read a file written by ``save``; ValueError if it is corrupt or truncated."""
        data = Path(path).read_bytes()
        return cls._from_canonical(data, str(path))

    def __getstate__(self) -> dict[str, Any]:
        return {"canonical": self._canonical()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = Tokenizer._from_canonical(state["canonical"], "pickle")
        self.__dict__.update(other.__dict__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.hash() == other.hash()

    def __hash__(self) -> int:
        return hash(self.hash())

    # -- Hugging Face tokenizer.json ----------------------------------------------------------
    def hf_merges(self) -> list[tuple[bytes, bytes]]:
        """The merge that makes each token of rank >= 256, in rank order, recovered as tiktoken does:
        BPE-encode the token's bytes with only lower ranks; it must come out as two tokens."""
        out = []
        for b, r in self._bpe.ranks():
            if len(b) < 2:
                continue
            parts = self._bpe.merge_below(b, r)
            if len(parts) != 2:
                raise ValueError(f"token {b!r} (rank {r}) is not the merge of two lower-ranked tokens; "
                                 "it cannot be written as a tokenizer.json merge")
            out.append((self._bpe.token_bytes(parts[0]), self._bpe.token_bytes(parts[1])))
        return out

    def to_hf_json(self) -> str:
        if self._rx is not None:
            raise ValueError("save_hf supports the named patterns only (a custom regex may not mean the same in Oniguruma)")
        enc = _byte_to_unicode()

        def u(b: bytes) -> str:
            return "".join(enc[x] for x in b)

        vocab = {u(b): r for b, r in self._bpe.ranks()}
        merges = [[u(a), u(b)] for a, b in self.hf_merges()]
        added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                  "special": True} for t, i in sorted(self._special.items(), key=lambda kv: kv[1])]
        doc = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": _hf_pattern(self.pattern_regex)}, "behavior": "Isolated",
                 "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                      "vocab": vocab, "merges": merges},
        }
        return json.dumps(doc, ensure_ascii=False)

    def save_hf(self, path: PathLike) -> None:
        """Write a Hugging Face tokenizer.json (ByteLevel BPE; ids = our ids), atomically."""
        text = self.to_hf_json()
        with atomic_write(path, "w") as f:
            f.write(text)

    @classmethod
    def from_hf(cls, path: PathLike) -> Tokenizer:
        """Read a ByteLevel-BPE tokenizer.json. Token ids are taken as ranks (tiktoken's rule: the
        merge order of GPT-2-style files); added tokens become special tokens.

        Only settings whose ids this tokenizer reproduces are accepted: no normalizer; a
        pre-tokenizer that is ByteLevel (use_regex: the GPT-2 pattern) or a Split regex
        ("Isolated") followed by ByteLevel without its regex; ``add_prefix_space`` false; a BPE
        model without dropout, subword prefix or word suffix; added tokens without
        lstrip/rstrip/single_word. Anything else raises ValueError naming the file and setting,
        as does a malformed file.
        """
        p = Path(path)

        def bad(msg: str) -> ValueError:
            return ValueError(f"{p}: {msg}")

        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise bad("not a tokenizer.json (not JSON)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
            raise bad("not a tokenizer.json (no \"model\" object)")
        model = doc["model"]
        if model.get("type") != "BPE":
            raise bad(f"model type {model.get('type')!r} is not BPE")
        for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key) not in (None, 0, 0.0, ""):
                raise bad(f"model.{key} = {model[key]!r} is not supported (it changes the ids)")
        if doc.get("normalizer") is not None:
            norm = doc["normalizer"]
            raise bad(f"normalizer {norm.get('type') if isinstance(norm, dict) else norm!r} is not supported "
                      "(only files without a normalizer encode to the same ids here)")
        vocab = model.get("vocab")
        if not isinstance(vocab, dict):
            raise bad(f"model.vocab must be an object token -> id, got {type(vocab).__name__}")
        dec = _unicode_to_byte()
        ranks: dict[bytes, int] = {}
        for tok_text, i in vocab.items():
            if not isinstance(i, int) or isinstance(i, bool):
                raise bad(f"model.vocab id of {tok_text!r} must be an int, got {i!r}")
            try:
                ranks[bytes(dec[c] for c in tok_text)] = i
            except KeyError:
                raise bad(f"vocab entry {tok_text!r} is not byte-level (GPT-2 byte-to-unicode)") from None
        added = doc.get("added_tokens") or []
        if not isinstance(added, list):
            raise bad(f"added_tokens must be a list, got {type(added).__name__}")
        specials: dict[str, int] = {}
        for k, t in enumerate(added):
            if not isinstance(t, dict) or not isinstance(t.get("content"), str):
                raise bad(f"added_tokens[{k}] has no \"content\" string")
            i = t.get("id")
            if not isinstance(i, int) or isinstance(i, bool):
                raise bad(f"added_tokens[{k}] ({t['content']!r}) has id {i!r}, not an int")
            for opt in ("lstrip", "rstrip", "single_word"):
                if t.get(opt):
                    raise bad(f"added token {t['content']!r} has {opt}=true, which is not supported")
            specials[t["content"]] = i
        pattern = cls._hf_pre_tokenizer(doc.get("pre_tokenizer"), bad)
        for t, i in specials.items():  # some files list added tokens in the vocab as well
            if ranks.get(t.encode()) == i:
                del ranks[t.encode()]
        try:
            return cls(ranks, pattern, specials)
        except (ValueError, TypeError) as e:
            raise bad(str(e)) from None

    @staticmethod
    def _hf_pre_tokenizer(pre: Any, bad: Any) -> str:
        """The pattern of a tokenizer.json pre_tokenizer that we reproduce exactly, else bad(...)."""
        if pre is None:
            raise bad("pre_tokenizer is null: the text would not be byte-mapped (not a ByteLevel BPE)")
        if not isinstance(pre, dict):
            raise bad(f"pre_tokenizer must be an object, got {type(pre).__name__}")
        seq = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
        if not isinstance(seq, list) or not all(isinstance(x, dict) for x in seq):
            raise bad("pre_tokenizer Sequence has no list of pretokenizers")
        types = [x.get("type") for x in seq]
        if types not in (["ByteLevel"], ["Split", "ByteLevel"]):
            raise bad(f"pre_tokenizer {' + '.join(map(str, types))} is not supported "
                      "(ByteLevel, or Split + ByteLevel)")
        byte_level = seq[-1]
        # HF's defaults when a key is missing: add_prefix_space true, use_regex true.
        if byte_level.get("add_prefix_space", True):
            raise bad("pre_tokenizer ByteLevel add_prefix_space=true is not supported (it prepends a space "
                      "to every split piece, changing the ids)")
        use_regex = byte_level.get("use_regex", True)
        if len(seq) == 1:
            if not use_regex:
                raise bad("pre_tokenizer ByteLevel with use_regex=false and no Split would not split the text")
            return "gpt2"  # ByteLevel's own regex is GPT-2's
        split = seq[0]
        if use_regex:
            raise bad("pre_tokenizer Split followed by ByteLevel with use_regex=true (two regexes) is not supported")
        if split.get("behavior") != "Isolated" or split.get("invert", False):
            raise bad(f"pre_tokenizer Split behavior {split.get('behavior')!r} invert={split.get('invert')!r} "
                      "is not supported (only Isolated, invert false)")
        spec = split.get("pattern")
        if not isinstance(spec, dict) or not isinstance(spec.get("Regex", spec.get("String")), str):
            raise bad("pre_tokenizer Split has no Regex or String pattern")
        rx = spec["Regex"] if "Regex" in spec else re.escape(spec["String"])
        return next((nm for nm, full in PATTERNS.items() if rx in (full, _hf_pattern(full))), rx)

    # -- training -----------------------------------------------------------------------------
    @classmethod
    def train(cls, inputs: PathLike | Iterable[str | os.PathLike[str]], vocab_size: int, pattern: str = "o200k",
              special_tokens: Sequence[str] = (), min_frequency: int = 2, *, jsonl_field: str = "text",
              progress: bool = False, batch_bytes: int = 4 << 20) -> Tokenizer:
        """Train byte-level BPE.

        ``inputs``: a path (str or PathLike), an iterable of PathLike (pathlib.Path), or an iterable
        of str documents. Files ending in .jsonl/.ndjson are read one JSON object per line, taking
        ``jsonl_field``; other files are UTF-8 text. Input is streamed in batches of ``batch_bytes``
        (an int >= 64); memory grows with the distinct pre-tokens only. Text files are cut into
        blocks only where pre-tokenizing the blocks one by one gives the pieces of the whole text
        (before a space after an ASCII letter, or after a newline between printable ASCII), so
        training from a file equals training from its text as one str (proven for the named
        patterns; a custom regex that lets a piece run across such a point sees it cut). A stretch of more than
        ``4 * batch_bytes`` bytes with no such point (one long line of CJK text, say) is cut at a
        UTF-8 character boundary instead, which can split one pre-token there and changes the
        counts by that piece (the C++ trainer cuts the same way within a document after 4 MiB). ``vocab_size`` counts the 256 bytes, the
        merges and the special tokens (which get the last ids, in the order given). Merges stop early
        when the best pair occurs fewer than ``min_frequency`` times. Ties: see csrc/tokenizer/train.h
        (higher count, then the smaller pair in Hugging Face's byte order) -- the result does not
        depend on the number of threads.
        """
        _batch_bytes(batch_bytes)
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError("special_tokens has duplicates")
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size must be an int >= 256 + len(special_tokens) = {256 + len(special_tokens)}, got {vocab_size!r}")
        if min_frequency < 0:
            raise ValueError(f"min_frequency must be >= 0, got {min_frequency}")
        name = next((nm for nm, rx in PATTERNS.items() if pattern in (nm, rx)), None)
        rx = None if name else _compile_custom(pattern)
        trainer = _core.BpeTrainer(name or "custom", special_tokens)
        t0 = time.perf_counter()
        fed = 0

        def flush(batch: list[str]) -> None:
            nonlocal fed
            if not batch:
                return
            if rx is None:  # (the binding repairs lone surrogates as tiktoken does)
                trainer.feed(batch)
            else:
                sp = re.compile("|".join(re.escape(t) for t in special_tokens)) if special_tokens else None
                pieces = []
                for doc in map(_repair_surrogates, batch):
                    for seg in (sp.split(doc) if sp else [doc]):
                        pieces.extend(m.group() for m in rx.finditer(seg))
                trainer.feed_pieces(pieces)
            fed += sum(len(t) for t in batch)
            if progress:
                sys.stderr.write(f"\rtokenizer: counted {trainer.total_bytes / 1e6:.1f} MB, "
                                 f"{trainer.distinct_pieces} distinct pre-tokens, {time.perf_counter() - t0:.1f} s")
                sys.stderr.flush()

        batch: list[str] = []
        size = 0
        for doc in _iter_documents(inputs, jsonl_field, batch_bytes, max_carry=4 * batch_bytes):
            batch.append(doc)
            size += len(doc)
            if size >= batch_bytes:
                flush(batch)
                batch, size = [], 0
        flush(batch)
        n_merges = vocab_size - 256 - len(special_tokens)
        trainer.start(n_merges, min_frequency)
        while not trainer.finished:
            trainer.step(max(1, min(1000, n_merges // 50 or 1)))
            if progress:
                sys.stderr.write(f"\rtokenizer: merges {trainer.merges_done}/{n_merges}, {time.perf_counter() - t0:.1f} s" + " " * 20)
                sys.stderr.flush()
        if progress:
            sys.stderr.write("\n")
        ranks = trainer.ranks()
        base = len(ranks)
        specials = {t: base + i for i, t in enumerate(special_tokens)}
        return cls(ranks, name or pattern, specials)


@functools.lru_cache(maxsize=32)
def _disallowed_regex(tokens: frozenset[str]) -> re.Pattern[str]:
    """tiktoken's check for an explicit disallowed set: any of its strings (empty ones match
    nothing here: no text contains an empty special token)."""
    for t in tokens:
        if not isinstance(t, str):
            raise TypeError(f"disallowed_special must contain str, got {type(t).__name__}")
    alts = sorted((t for t in tokens if t), key=lambda t: (-len(t), t))
    return re.compile("|".join(map(re.escape, alts)) if alts else r"(?!)")


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"token id must be int, got {type(x).__name__}")
    return int(x)


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    return num_threads


_MIN_BATCH_BYTES = 64


def _batch_bytes(batch_bytes: Any, name: str = "batch_bytes") -> int:
    """Validate a streaming block size (a read of 0 bytes would look like the end of the file)."""
    if isinstance(batch_bytes, bool) or not isinstance(batch_bytes, int) or batch_bytes < _MIN_BATCH_BYTES:
        raise ValueError(f"{name} must be an int >= {_MIN_BATCH_BYTES}, got {batch_bytes!r}")
    return batch_bytes


def _iter_file(path: Path, jsonl_field: str, block: int, max_carry: int | None = None) -> Iterator[str]:
    """The text of a file in chunks: a jsonl record each, or blocks of about ``block`` bytes of a
    text file, cut only where pre-tokenizing the chunks one by one gives the pieces of the whole
    file (``_core.last_safe_split``, the rule the C++ batch encoder and trainer use: before a space
    that follows an ASCII letter, or after a newline between printable ASCII characters).

    A text with no such point (no ASCII letter before a space, no newline between printable ASCII:
    say, one long line of CJK text) is read on until one comes, or to the end of the file, so
    memory grows with the longest such stretch. ``max_carry`` caps that: past it the text is cut
    anyway at a UTF-8 character boundary (training uses this; a forced cut can split one pre-token
    in two). Encoding passes None: its ids must equal those of the whole text. The rule is proven
    for the three named patterns only; a custom regex whose pieces can cross such a point may see
    a piece cut there.
    """
    _batch_bytes(block)
    if not path.is_file():
        raise FileNotFoundError(f"training input not found: {path}")
    if path.suffix in (".jsonl", ".ndjson"):
        with open(path, "rb") as f:
            offset = 0
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except UnicodeDecodeError as e:
                        raise ValueError(f"{path}: invalid UTF-8 at byte offset {offset + e.start} (line {lineno})") from None
                    except ValueError as e:
                        raise ValueError(f"{path}:{lineno}: invalid JSON: {e}") from None
                    if not isinstance(obj, dict) or jsonl_field not in obj:
                        raise ValueError(f"{path}:{lineno}: no field {jsonl_field!r}")
                    val = obj[jsonl_field]
                    if not isinstance(val, str):
                        raise ValueError(f"{path}:{lineno}: field {jsonl_field!r} is not a string")
                    yield val
                offset += len(line)
        return

    def emit(buf: bytearray, cut: int, offset: int) -> str:
        try:
            return bytes(buf[:cut]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: invalid UTF-8 at byte offset {offset + e.start}: {e.reason}") from None

    with open(path, "rb") as f:
        buf = bytearray()  # unread text; its first `checked` bytes hold no safe cut
        checked = 0
        offset = 0  # file offset of buf[0]
        while True:
            data = f.read(block)
            if not data:
                if buf:
                    yield emit(buf, len(buf), offset)
                return
            buf += data
            # The scan goes backward from the end and stops at the first safe point: a few bytes
            # in prose or code. Bytes already scanned are not scanned again (a cut depends on
            # buf[p-2:p+1] only), so a long stretch with no safe point costs O(its length).
            cut = _core.last_safe_split(buf, checked)
            if cut == len(buf):
                if max_carry is None or len(buf) <= max_carry:
                    checked = len(buf)
                    continue
                cut = len(buf) - 1  # forced cut: before a byte that starts a UTF-8 character
                while cut > 0 and (buf[cut] & 0xC0) == 0x80:
                    cut -= 1
                cut = cut or len(buf)
            yield emit(buf, cut, offset)
            del buf[:cut]
            offset += cut
            checked = 0


def _iter_documents(inputs: Any, jsonl_field: str, block: int, max_carry: int | None = None) -> Iterator[str]:
    if isinstance(inputs, (str, os.PathLike)):
        yield from _iter_file(Path(inputs), jsonl_field, block, max_carry)
        return
    if isinstance(inputs, bytes):
        raise TypeError("inputs must be a path, an iterable of paths or an iterable of str, not bytes")
    for item in inputs:
        if isinstance(item, os.PathLike):
            yield from _iter_file(Path(item), jsonl_field, block, max_carry)
        elif isinstance(item, str):
            yield item
        else:
            raise TypeError(f"training inputs must be str documents or os.PathLike paths, got {type(item).__name__}")
