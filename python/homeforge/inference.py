"""Loading a trained model for inference, streaming generation, evaluation on a file, and merging.

>>> import codecs
>>> d = StreamingText(lambda i: bytes([i]))
>>> d.push(0xE2) + d.push(0x82) + d.push(0xAC) + d.flush()   # one euro sign, byte by byte
'€'
"""

from __future__ import annotations

import codecs
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from .data import TOKENIZER_FILE, clean_lines

__all__ = ["load_model", "StreamingText", "check_sampling", "generate_text", "eval_text", "merge_checkpoints"]


def load_model(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(model, tokenizer) from a checkpoint (a step directory, a checkpoints/ root, a run's out_dir)
    or from a Hugging Face directory written by ``homeforge export --format hf``."""
    from .model import Model, ModelConfig
    from .tokenizer import Tokenizer
    from .trainer import copy_params

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model not found: {p}")
    if (p / "config.json").is_file() and not (p / "checkpoint.json").is_file():
        cfg_file = p / "config.json"
        try:
            hf_cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{cfg_file}: malformed config.json ({e})") from None
        if not isinstance(hf_cfg, dict):
            raise ValueError(f"{cfg_file}: malformed config.json (a JSON {type(hf_cfg).__name__}, not an object)")
        try:
            model = Model.from_pretrained(p)
        except ValueError as e:
            if str(p) in str(e):
                raise
            raise ValueError(f"{p}: {e}") from None
        tok_json = p / "tokenizer.json"
        if not tok_json.is_file():
            raise FileNotFoundError(f"{p} has no tokenizer.json")
        return model, Tokenizer.from_hf(tok_json)
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    ck = load_checkpoint(resolve_checkpoint(p))
    if "model_config" not in ck.state:
        raise ValueError(f"{ck.path} has no model_config: not a homeforge model checkpoint")
    model = Model(ModelConfig.from_dict(ck.state["model_config"]))
    copy_params(model, ck.params, f"checkpoint {ck.path}")
    tok = Tokenizer.load(ck.file(TOKENIZER_FILE))
    return model, tok


class StreamingText:
    """Turns token ids into text as they arrive, holding back incomplete UTF-8 sequences."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._dec.decode(self._token_bytes(int(token)))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


def _token_bytes_fn(tok: Any) -> Callable[[int], bytes]:
    if hasattr(tok, "decode_single_token_bytes"):
        return tok.decode_single_token_bytes
    return lambda i: tok.decode([i]).encode("utf-8")


def check_sampling(*, max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any) -> int | None:
    """Check the sampling settings before any work (ValueError naming the setting and its CLI flag);
    returns ``top_k`` with 0 meaning "no top-k" (None).

    >>> check_sampling(max_new_tokens=5, temperature=0.8, top_k=0, top_p=None) is None
    True
    >>> check_sampling(max_new_tokens=5, temperature=-1, top_k=40, top_p=None)
    Traceback (most recent call last):
    ...
    ValueError: temperature (--temperature) must be a number >= 0, got -1
    """
    from .model import _is_int as integer

    def real(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))

    if not integer(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens (--max-new-tokens) must be an int >= 0, got {max_new_tokens!r}")
    if not real(temperature) or not 0 <= temperature < math.inf:
        raise ValueError(f"temperature (--temperature) must be a number >= 0, got {temperature!r}")
    if top_k is not None and (not integer(top_k) or top_k < 0):
        raise ValueError(f"top_k (--top-k) must be an int >= 0 (0: no top-k) or None, got {top_k!r}")
    if top_p is not None and (not real(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p (--top-p) must be in (0, 1] or None, got {top_p!r}")
    return None if top_k is None or top_k == 0 else int(top_k)


def generate_text(model: Any, tok: Any, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.8,
                  top_k: int | None = 40, top_p: float | None = None, seed: int | None = None,
                  on_text: Callable[[str], None] | None = None, stop_at_eot: bool = True) -> str:
    """Generate a continuation of ``prompt``; each decoded piece is passed to ``on_text`` as it comes.

    The continuation gets room for ``max_new_tokens`` (at most half of ``max_seq_len``): a longer
    prompt keeps only its last tokens, so that prompt + continuation fit in ``max_seq_len``. Only the
    tokenizer's ids are sampled, also when the model's vocabulary is padded beyond it.
    ``top_k=0`` (or None) samples without a top-k cut (see :func:`check_sampling`).
    """
    top_k = check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    ids = tok.encode_ordinary(prompt) if prompt else []
    eot = tok.eot_token
    if not ids:
        if eot is None:
            raise ValueError("an empty prompt needs a tokenizer with <|endoftext|>")
        ids = [eot]
    max_len = int(model.config.max_seq_len) if hasattr(model, "config") else None
    if max_len is not None:
        # Room for the continuation: max_new_tokens, but at most half the context. A longer prompt
        # keeps its last tokens, so a chat near the end of the context still gets whole replies.
        room = max(1, min(max_new_tokens, max_len // 2))
        if len(ids) + room > max_len:
            ids = ids[-(max_len - room):]
        max_new_tokens = min(max_new_tokens, max_len - len(ids))
    stream = StreamingText(_token_bytes_fn(tok))
    pieces: list[str] = []
    done = [False]

    def on_token(t: int) -> None:
        if done[0]:
            return
        if stop_at_eot and eot is not None and int(t) == eot:
            done[0] = True
            return
        s = stream.push(int(t))
        if s:
            pieces.append(s)
            if on_text:
                on_text(s)

    # A vocabulary padded beyond the tokenizer's has logits for ids that decode to nothing (and,
    # early in training, are as likely as any other): sample among the tokenizer's ids only.
    limit = min(int(tok.n_vocab), int(model.config.vocab_size)) if hasattr(model, "config") else None
    model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                   on_token=on_token, vocab_limit=limit)
    tail = stream.flush()
    if tail:
        pieces.append(tail)
        if on_text:
            on_text(tail)
    return "".join(pieces)


def eval_text(model: Any, tok: Any, text: str, *, seq_len: int | None = None, batch_size: int = 8) -> dict[str, float]:
    """Mean next-token loss and perplexity of ``text`` (cleaned like training data), in windows of
    ``seq_len`` tokens (default and maximum: the model's ``max_seq_len``)."""
    cleaned = "".join(clean_lines(text))
    if not cleaned:
        raise ValueError("nothing to evaluate: the text is empty after cleaning")
    ids = np.asarray(tok.encode_ordinary(cleaned), dtype=np.int64)
    if tok.eot_token is not None:
        ids = np.concatenate([[tok.eot_token], ids])
    if ids.size < 2:
        raise ValueError("nothing to evaluate: the text has fewer than 2 tokens")
    max_len = int(model.config.max_seq_len)
    if seq_len is not None and not 1 <= seq_len <= max_len:
        raise ValueError(f"seq_len must be in [1, max_seq_len={max_len}], got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    T = min(int(seq_len or max_len), ids.size - 1)  # a text shorter than the window is one window
    n_win = (ids.size - 1 + T - 1) // T
    total_loss, total_tok = 0.0, 0
    rows_x, rows_y, counts = [], [], []
    for w in range(n_win):
        x = ids[w * T: w * T + T]
        y = ids[w * T + 1: w * T + T + 1]
        n = y.size
        if n < T:  # last partial window: pad, and ignore the padding in the loss
            x = np.concatenate([x[:n], np.zeros(T - n, np.int64)])
            y = np.concatenate([y, np.full(T - n, -100, np.int64)])
        rows_x.append(x)
        rows_y.append(y)
        counts.append(n)
        if len(rows_x) == batch_size or w == n_win - 1:
            xb = np.stack(rows_x).astype(np.int32)
            yb = np.stack(rows_y).astype(np.int32)
            loss = float(model.loss(xb, yb))  # mean over the valid targets of the batch
            k = sum(counts)
            total_loss += loss * k
            total_tok += k
            rows_x, rows_y, counts = [], [], []
    mean = total_loss / total_tok
    return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)), "tokens": float(total_tok)}


def merge_checkpoints(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                      weights: Sequence[float] | None = None, *, overwrite: bool = False) -> Path:
    """Weighted average of the parameters of checkpoints with the same architecture (and tokenizer),
    written as a new checkpoint (step 0, no optimizer state): ``out/step_00000000``. Weights are
    normalised. ``out`` must be new or empty (so a merge never lands among a run's checkpoints);
    ``overwrite=True`` (``--overwrite``) writes into it anyway, replacing an earlier merge there."""
    from .trainer import ARCH_KEYS

    out_dir = Path(out)
    if not overwrite and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"merge output {out_dir} already exists and is not empty; choose a new directory "
                         "or pass overwrite=True (--overwrite) to write step_00000000 into it")
    if len(paths) < 2:
        raise ValueError("merge needs at least two checkpoints")
    w = np.asarray(weights if weights is not None else [1.0] * len(paths), dtype=np.float64)
    if w.shape != (len(paths),):
        raise ValueError(f"got {w.size} weights for {len(paths)} checkpoints")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got [{', '.join(f'{x:g}' for x in w)}]")
    w = w / w.sum()
    cks = [load_checkpoint(p) for p in paths]
    first = cks[0]
    mc = first.state.get("model_config")
    if mc is None:
        raise ValueError(f"{first.path} has no model_config")
    for ck in cks[1:]:
        other = ck.state.get("model_config", {})
        diffs = [f"{k}: {other.get(k)!r} there, {mc.get(k)!r} in {first.path}" for k in ARCH_KEYS if other.get(k) != mc.get(k)]
        if diffs:
            raise ValueError(f"checkpoint {ck.path} is from another architecture ({'; '.join(diffs)})")
        if ck.state.get("tokenizer_hash") != first.state.get("tokenizer_hash"):
            raise ValueError(f"checkpoint {ck.path} uses another tokenizer than {first.path}")
        if set(ck.params) != set(first.params):
            raise ValueError(f"checkpoint {ck.path} has other parameter names than {first.path}")
    merged = {}
    for name, a in first.params.items():
        acc = np.zeros(a.shape, dtype=np.float64)
        for wi, ck in zip(w, cks):
            acc += wi * ck.params[name].astype(np.float64)
        merged[name] = acc.astype(a.dtype)
    files = {}
    tpath = first.path / TOKENIZER_FILE
    if tpath.is_file():
        files[TOKENIZER_FILE] = tpath
    state = {"model_config": mc, "tokenizer_hash": first.state.get("tokenizer_hash"),
             "merged_from": [str(ck.path) for ck in cks], "weights": [float(x) for x in w]}
    return save_checkpoint(out, 0, params=merged, optimizer={}, state=state, files=files)
