"""The native Llama-style language model: configuration, training passes, generation, interchange.

The model is transformers' ``LlamaForCausalLM`` architecture (RMSNorm pre-norm, rotary position
embeddings, grouped-query attention, SwiGLU MLP, tied or untied output embedding) implemented in
C++ (``csrc/model``) on oneDNN GEMMs and the fused attention kernels. All parameters live in ONE
contiguous float32 buffer and all gradients in another; :meth:`Model.named_parameters` returns
numpy views named and shaped like transformers' state_dict.

>>> import numpy as np, homeforge
>>> cfg = homeforge.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
...                             ffn_hidden=64, max_seq_len=16)
>>> m = homeforge.Model(cfg, seed=0)
>>> m.named_parameters()["model.layers.0.self_attn.k_proj.weight"].shape
(16, 32)
>>> tokens = np.arange(8).reshape(1, 8) % 64
>>> loss = m.forward_backward(tokens, np.roll(tokens, -1, axis=1))
>>> bool(abs(loss - np.log(64)) < 0.5)
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ._atomic import atomic_write
from . import _core

__all__ = ["ModelConfig", "Model"]

_DTYPES = ("fp32", "bf16")

# name: (d_model, n_layers, n_heads, n_kv_heads, ffn_hidden, max_seq_len)
_PRESETS: dict[str, tuple[int, int, int, int, int, int]] = {
    "1m": (128, 4, 4, 2, 384, 256),
    "10m": (256, 10, 8, 4, 704, 512),
    "nano": (768, 12, 12, 12, 2048, 1024),
    "mini": (1024, 24, 16, 16, 2816, 1024),
}


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@dataclass
class ModelConfig:
    """Shape and numerics of a :class:`Model`.

    ``dtype`` is ``"fp32"`` or ``"bf16"`` (bf16 GEMM inputs and attention with f32 accumulation,
    f32 master weights, f32 residual stream, norm statistics, softmax and loss). ``recompute``
    re-runs each layer's forward during backward instead of keeping its activations.

    Presets (:meth:`preset`); parameters = non-embedding (layers + final norm) +
    ``vocab_size * d_model`` (tied embeddings; untied adds that again):

    ======  =======  ========  =====  =======  ======  =======  ==============================
    name    d_model  n_layers  heads  kv_hds   ffn     max_seq  non-embedding params
    ======  =======  ========  =====  =======  ======  =======  ==============================
    1m      128      4         4      2        384     256      0.79M (+0.26M = 1.05M at V=2048)
    10m     256      10        8      4        704     512      7.38M (+2.10M = 9.48M at V=8192)
    nano    768      12        12     12       2048    1024     84.95M (+38.6M = 123.6M at V=50257)
    mini    1024     24        16     16       2816    1024     308.3M (+32.8M = 341.1M at V=32000)
    ======  =======  ========  =====  =======  ======  =======  ==============================

    >>> cfg = ModelConfig.preset("1m", vocab_size=2048)
    >>> cfg.d_model, cfg.n_layers
    (128, 4)
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> ModelConfig.from_dict({**cfg.to_dict(), "colour": 1})
    Traceback (most recent call last):
    ...
    ValueError: ModelConfig.from_dict: unknown key 'colour'
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_hidden: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dtype: str = "fp32"
    recompute: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "max_seq_len"):
            v = getattr(self, name)
            if not _is_int(v):
                raise ValueError(f"ModelConfig.{name} must be an int, got {type(v).__name__} {v!r}")
            if v < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {v}")
            setattr(self, name, int(v))
        if self.vocab_size >= 2**31 - 1:
            raise ValueError(f"ModelConfig.vocab_size must be < 2**31 - 1, got {self.vocab_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"ModelConfig: n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"ModelConfig: head_dim={self.d_model // self.n_heads} must be even (RoPE rotates pairs)")
        for name in ("rope_theta", "norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive finite number, got {v!r}")
            setattr(self, name, float(v))
        for name in ("tie_embeddings", "recompute"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"ModelConfig.{name} must be a bool, got {getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))
        if self.dtype not in _DTYPES:
            raise ValueError(f"ModelConfig.dtype must be one of {_DTYPES}, got {self.dtype!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ValueError(f"ModelConfig.from_dict needs a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in names:
                raise ValueError(f"ModelConfig.from_dict: unknown key {k!r}")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise ValueError(f"ModelConfig.from_dict: missing key(s) {missing}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> "ModelConfig":
        """A named size: "1m", "10m", "nano" (~125M at GPT-2's vocabulary), "mini" (~350M)."""
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(_PRESETS)}")
        d, L, H, Hkv, F, S = _PRESETS[name]
        kw: dict[str, Any] = dict(vocab_size=vocab_size, d_model=d, n_layers=L, n_heads=H, n_kv_heads=Hkv,
                                  ffn_hidden=F, max_seq_len=S)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"ModelConfig.preset: unknown key(s) {sorted(unknown)}")
        kw.update(overrides)
        return cls(**kw)


# ---- safetensors (minimal reader: the format is an 8-byte header length, JSON, raw bytes) -------

_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    import ml_dtypes

    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: corrupt safetensors header")
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt == "BF16":
            npdt: Any = ml_dtypes.bfloat16
        elif dt in _ST_DTYPES:
            npdt = _ST_DTYPES[dt]
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dt}")
        b, e = info["data_offsets"]
        if not 0 <= b <= e or base + e > len(raw):
            raise ValueError(f"{path}: tensor {name!r} lies outside the file (truncated or corrupt: bytes "
                             f"{base + b}..{base + e} of {len(raw)})")
        count = (e - b) // np.dtype(npdt).itemsize
        if count != int(np.prod(info["shape"], dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name!r} has {count} elements for shape {info['shape']}")
        arr = np.frombuffer(raw, dtype=npdt, count=count, offset=base + b)
        out[name] = arr.reshape(info["shape"]).astype(np.float32)
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def _safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    parts = [struct.pack("<Q", len(h)), h]
    parts += [np.ascontiguousarray(a, dtype="<f4").tobytes() for a in tensors.values()]
    return b"".join(parts)


def remove_stale_shards(directory: Path) -> None:
    """A sharded save of another model beside a new model.safetensors is stale: remove its index
    and shards, as transformers' save_pretrained removes the weight files it did not write."""
    for stale in [directory / "model.safetensors.index.json",
                  *directory.glob("model-[0-9][0-9][0-9][0-9][0-9]-of-*.safetensors")]:
        stale.unlink(missing_ok=True)


class Model:
    """A Llama-style decoder with native forward, backward and KV-cache generation.

    Initialisation (seeded, deterministic): every linear weight and the embedding are
    N(0, 0.02^2); the residual projections ``o_proj`` and ``down_proj`` are additionally scaled by
    1/sqrt(2 * n_layers) (GPT-2 practice); RMSNorm weights are 1.

    Flat buffer layout: ``[embed | layer 0 | ... | layer L-1 | final norm | lm_head (untied)]``;
    each layer is contiguous, so the gradient-ready hook hands out whole layers.

    >>> import numpy as np, homeforge
    >>> m = homeforge.Model(homeforge.ModelConfig.preset("1m", vocab_size=256), seed=1)
    >>> m.num_parameters() == m.flat_params().size
    True
    >>> out = m.generate([1, 2, 3], max_new_tokens=4, temperature=0)
    >>> len(out)
    4
    """

    def __init__(self, config: ModelConfig, seed: int = 0) -> None:
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a homeforge.ModelConfig, got {type(config).__name__}")
        if not _is_int(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.config = config
        c = config
        self._core = _core.LlamaModel(c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_hidden,
                                      c.max_seq_len, c.rope_theta, c.norm_eps, c.tie_embeddings, c.dtype, c.recompute)
        self._params = self._core.params()
        self._grads = self._core.grads()
        self._layout = [(name, int(off), tuple(shape)) for name, off, shape in self._core.layout()]
        self._pviews = self._views(self._params)
        self._gviews = self._views(self._grads)
        self._hook: Callable[[int, int], None] | None = None
        # One KV cache per model: generations from several threads take turns; one started from
        # inside another's on_token (same thread) is refused, since it would overwrite the cache.
        self._generate_lock = threading.Lock()
        self._generating_thread: int | None = None
        self._init_weights(int(seed))

    # ---- parameters ------------------------------------------------------------------------------
    def _views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: flat[off:off + int(np.prod(shape))].reshape(shape) for name, off, shape in self._layout}

    def _init_weights(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        resid = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, view in self._pviews.items():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                view[...] = 1.0
            else:
                std = resid if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                view[...] = rng.standard_normal(view.shape, dtype=np.float32) * np.float32(std)

    def named_parameters(self) -> dict[str, np.ndarray]:
        """Writable float32 views into the flat parameter buffer, named as transformers' state_dict."""
        return dict(self._pviews)

    def named_grads(self) -> dict[str, np.ndarray]:
        """Writable float32 views into the flat gradient buffer (same names as named_parameters)."""
        return dict(self._gviews)

    def flat_params(self) -> np.ndarray:
        """The whole parameter buffer (1-D float32 view, no copy)."""
        return self._params

    def flat_grads(self) -> np.ndarray:
        """The whole gradient buffer (1-D float32 view, no copy)."""
        return self._grads

    def num_parameters(self) -> int:
        return int(self._core.num_params())

    def state_bytes(self) -> int:
        """Bytes the native model holds now: params, grads, bf16 weight copy, activations, KV cache."""
        return int(self._core.state_bytes())

    def layer_ranges(self) -> list[tuple[int, int]]:
        """Flat [begin, end) ranges: embedding, each layer, then final norm (+ lm_head)."""
        return [(int(b), int(e)) for b, e in self._core.layer_ranges()]

    def zero_grad(self, overwrite_next: bool = False) -> None:
        """Set every gradient to zero before the next forward_backward (call it once per step).

        With ``overwrite_next=True`` the forward_backward right after it writes the weight gradients
        of the GEMM layers and of the LM head instead of adding them to the zeros, which saves
        reading ~4 bytes per parameter (~3% of a nano bf16 step). The caller then promises not to
        put values into the gradient buffer before that call: they would be lost for those
        tensors. Further forward_backward calls (gradient accumulation) always add. The trainer
        and the distributed strategies use it; the default keeps plain accumulate semantics.

        >>> m = Model(ModelConfig.preset("1m", vocab_size=64), seed=0)
        >>> m.zero_grad(overwrite_next=True)
        >>> float(abs(m.flat_grads()).max())
        0.0
        """
        self._core.zero_grad(overwrite_next)

    def set_grad_ready_hook(self, fn: Callable[[int, int], None] | None) -> None:
        """Call fn(begin, end) (GIL held) whenever a flat gradient range becomes final in forward_backward.

        Order: [final norm, end) first, then each layer from the last to the first, then the
        embedding [0, V*d); together they cover the whole buffer exactly once. An exception raised
        by fn propagates out of forward_backward (gradients are then partially accumulated).
        """
        if fn is not None and not callable(fn):
            raise TypeError(f"hook must be callable or None, got {type(fn).__name__}")
        self._hook = fn

    # ---- input checks --------------------------------------------------------------------------------
    def _tokens(self, x: Any, name: str, allow_ignore: bool = False) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D (B, T), got shape {a.shape}")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"{name} must have B >= 1 and T >= 1, got shape {a.shape}")
        if a.shape[1] > self.config.max_seq_len:
            raise ValueError(f"{name}: sequence length {a.shape[1]} exceeds max_seq_len={self.config.max_seq_len}")
        lo, hi = int(a.min()), int(a.max())
        V = self.config.vocab_size
        if allow_ignore:
            bad = (a != -100) & ((a < 0) | (a >= V))
            if bad.any():
                v = int(a[bad].flat[0])
                raise ValueError(f"{name} contains {v}, outside [0, vocab_size={V}) and not the ignore index -100")
        elif lo < 0 or hi >= V:
            raise ValueError(f"{name} contains {lo if lo < 0 else hi}, outside [0, vocab_size={V})")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _pair(self, tokens: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        t = self._tokens(tokens, "tokens")
        y = self._tokens(targets, "targets", allow_ignore=True)
        if t.shape != y.shape:
            raise ValueError(f"targets shape {y.shape} must equal tokens shape {t.shape}")
        return t, y

    # ---- passes ------------------------------------------------------------------------------------
    def forward_backward(self, tokens: Any, targets: Any) -> float:
        """Mean cross-entropy over targets != -100 (NaN if there are none); gradients ACCUMULATE."""
        t, y = self._pair(tokens, targets)
        return float(self._core.forward_backward(t, y, self._hook))

    def forward(self, tokens: Any) -> np.ndarray:
        """Logits (B, T, vocab_size) float32."""
        return self._core.forward(self._tokens(tokens, "tokens"))

    def loss(self, tokens: Any, targets: Any) -> float:
        """Mean cross-entropy over targets != -100, without gradients (NaN if none)."""
        t, y = self._pair(tokens, targets)
        total, count = self._core.loss(t, y)
        return float(total) / count if count else float("nan")

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) at sequence length seq_len.

        6 * N_matmul + 6 * n_layers * seq_len * d_model, where N_matmul counts every weight that
        multiplies activations in a GEMM: all q/k/v/o/gate/up/down weights plus the output head
        (V * d_model, the tied embedding or lm_head); the input-embedding lookup and the norm
        weights are not matmuls. Attention: per layer and token, the causal QK^T and PV products
        touch on average seq_len/2 keys at 2*d_model FLOPs each, i.e. 2*seq_len*d_model forward and
        twice that in backward: 6 * seq_len * d_model.
        """
        c = self.config
        D = c.head_dim
        per_layer = c.d_model * (c.n_heads * D + 2 * c.n_kv_heads * D) + c.n_heads * D * c.d_model \
            + 3 * c.d_model * c.ffn_hidden
        n_matmul = c.n_layers * per_layer + c.vocab_size * c.d_model
        return 6.0 * n_matmul + 6.0 * c.n_layers * float(seq_len) * c.d_model

    # ---- generation ----------------------------------------------------------------------------------
    def generate(self, prompt_ids: Sequence[int] | np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 on_token: Callable[[int], Any] | None = None, vocab_limit: int | None = None) -> list[int]:
        """Sample max_new_tokens after prompt_ids with a KV cache; returns ONLY the new token ids.

        temperature 0 is greedy (argmax). top_k keeps the k most likely tokens, top_p the smallest
        set whose probability reaches top_p; on_token(id) is called for each new token as it is made.
        prompt + max_new_tokens must fit in max_seq_len. vocab_limit, for a model whose vocabulary
        is padded beyond its tokenizer's, samples only ids below it (the padding logits are cut off
        before temperature, top-k and top-p apply).
        """
        p = np.asarray(prompt_ids)
        if p.ndim != 1 or p.size == 0 or p.dtype.kind not in "iu":
            raise ValueError(f"prompt_ids must be a non-empty 1-D sequence of ints, got shape {p.shape} dtype {p.dtype}")
        if not _is_int(max_new_tokens) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if p.size + max_new_tokens > self.config.max_seq_len:
            raise ValueError(f"prompt length {p.size} + max_new_tokens {max_new_tokens} exceeds "
                             f"max_seq_len={self.config.max_seq_len}")
        V = self.config.vocab_size
        if int(p.min()) < 0 or int(p.max()) >= V:
            raise ValueError(f"prompt_ids contains ids outside [0, vocab_size={V})")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        if top_k is not None and (not _is_int(top_k) or top_k < 1):
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ValueError(f"seed must be an int >= 0 or None, got {seed!r}")
        if on_token is not None and not callable(on_token):
            raise TypeError("on_token must be callable or None")
        if vocab_limit is not None and (not _is_int(vocab_limit) or not 1 <= vocab_limit <= V):
            raise ValueError(f"vocab_limit must be an int in [1, vocab_size={V}] or None, got {vocab_limit!r}")
        limit = V if vocab_limit is None else int(vocab_limit)
        if self._generating_thread == threading.get_ident():
            raise RuntimeError("generate() was called while this thread is already generating with the same model "
                               "(from on_token?): both would use the model's one KV cache")
        rng = np.random.default_rng(seed)
        out: list[int] = []
        if max_new_tokens == 0:
            return out
        with self._generate_lock:
            self._generating_thread = threading.get_ident()
            try:
                logits = self._core.decode(np.ascontiguousarray(p, dtype=np.int32), 0)
                pos = int(p.size)
                for i in range(max_new_tokens):
                    tok = self._sample(logits[:limit], float(temperature), top_k, top_p, rng)
                    out.append(tok)
                    if on_token is not None:
                        on_token(tok)
                    if i + 1 < max_new_tokens:
                        logits = self._core.decode(np.array([tok], dtype=np.int32), pos)
                        pos += 1
            finally:
                self._generating_thread = None
        return out

    @staticmethod
    def _sample(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
                rng: np.random.Generator) -> int:
        if temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64)
        z -= z.max()  # before dividing: a tiny temperature then sends the rest to -inf, never to NaN
        with np.errstate(over="ignore"):
            z /= temperature
        if top_k is not None and top_k < z.size:
            kth = np.partition(z, -top_k)[-top_k]
            z = np.where(z >= kth, z, -np.inf)
        z -= z.max()
        probs = np.exp(z)
        probs /= probs.sum()
        if top_p is not None and top_p < 1:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(rng.choice(probs.size, p=probs))

    # ---- interchange with transformers ------------------------------------------------------------------
    def hf_config(self) -> dict[str, Any]:
        """config.json contents for transformers' LlamaForCausalLM."""
        c = self.config
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": c.vocab_size,
            "hidden_size": c.d_model,
            "intermediate_size": c.ffn_hidden,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": c.max_seq_len,
            "rms_norm_eps": c.norm_eps,
            "rope_theta": c.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
            "tie_word_embeddings": c.tie_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "pretraining_tp": 1,
            "bos_token_id": None,
            "eos_token_id": None,
            "torch_dtype": "float32",
            "homeforge": {"dtype": c.dtype, "recompute": c.recompute},
        }

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write model.safetensors (float32) and config.json, each atomically (tmp + fsync + rename).

        transformers.AutoModelForCausalLM.from_pretrained(directory) loads it as LlamaForCausalLM.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(d / "model.safetensors", _safetensors_bytes(self._pviews))
        _atomic_write_bytes(d / "config.json", (json.dumps(self.hf_config(), indent=2) + "\n").encode())
        remove_stale_shards(d)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *, dtype: str | None = None,
                        recompute: bool | None = None) -> "Model":
        """Load a directory written by save_pretrained or by transformers (a Llama within our features)."""
        d = Path(directory)
        cfg_path = d / "config.json"
        if not cfg_path.is_file():
            raise OSError(f"{cfg_path} not found")
        hf = json.loads(cfg_path.read_text())
        config = _config_from_hf(hf, dtype=dtype, recompute=recompute)
        tensors: dict[str, np.ndarray] = {}
        index = d / "model.safetensors.index.json"
        if (d / "model.safetensors").is_file():  # transformers also prefers the single file
            tensors = _read_safetensors(d / "model.safetensors")
        elif index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            for f in files:
                if not (d / f).is_file():
                    raise OSError(f"{index} names {f}, which is not in {d}")
                tensors.update(_read_safetensors(d / f))
        else:
            raise OSError(f"no model.safetensors (or index) in {d}")
        model = cls(config, seed=0)
        for name, view in model._pviews.items():
            if name not in tensors:
                raise ValueError(f"{d}: missing tensor {name!r}")
            if tensors[name].shape != view.shape:
                raise ValueError(f"{d}: tensor {name!r} has shape {tensors[name].shape}, expected {view.shape}")
            view[...] = tensors[name]
        extra = set(tensors) - set(model._pviews) - {"lm_head.weight"}
        extra = {n for n in extra if not n.endswith("rotary_emb.inv_freq")}
        if extra:
            raise ValueError(f"{d}: unsupported tensors (a feature we do not implement): {sorted(extra)[:5]}")
        return model

    def __repr__(self) -> str:
        return f"homeforge.Model({self.config}, params={self.num_parameters():,})"


def _config_from_hf(hf: dict[str, Any], *, dtype: str | None, recompute: bool | None) -> ModelConfig:
    """Map a transformers Llama config.json onto ModelConfig; unsupported features raise ValueError."""
    arch = hf.get("architectures") or ["LlamaForCausalLM"]
    if hf.get("model_type", "llama") != "llama" or "LlamaForCausalLM" not in arch:
        raise ValueError(f"unsupported model: model_type={hf.get('model_type')!r}, architectures={arch} "
                         "(only LlamaForCausalLM)")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
               if k not in hf]
    if missing:
        raise ValueError(f"config.json lacks {missing}, which a Llama config needs")
    checks = [
        ("hidden_act", ("silu", "swish")), ("attention_bias", (False,)), ("mlp_bias", (False,)), ("pretraining_tp", (1,)),
    ]
    for key, ok in checks:  # transformers' "swish" is SiLU too
        if key in hf and hf[key] is not None and hf[key] not in ok:
            raise ValueError(f"unsupported feature {key}={hf[key]!r} (homeforge supports {key}={ok[0]!r})")
    rp = hf.get("rope_parameters") or {}
    rs = hf.get("rope_scaling")
    rope_type = rp.get("rope_type", rp.get("type", "default"))
    if isinstance(rs, dict) and rs.get("rope_type", rs.get("type")) == "default" and set(rs) <= {"rope_type", "type", "rope_theta"}:
        rs = None  # plain RoPE spelled out
    if rs:
        raise ValueError(f"unsupported feature rope_scaling={rs!r} (only default RoPE)")
    if rope_type != "default":
        raise ValueError(f"unsupported feature rope_type={rope_type!r} (only default RoPE)")
    if rp.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("unsupported feature partial_rotary_factor != 1")
    theta = rp.get("rope_theta", hf.get("rope_theta", 10000.0))
    H = hf["num_attention_heads"]
    d = hf["hidden_size"]
    head_dim = hf.get("head_dim") or d // H
    if head_dim * H != d:
        raise ValueError(f"unsupported feature head_dim={head_dim} with hidden_size={d}, heads={H} "
                         "(homeforge needs head_dim == hidden_size / num_attention_heads)")
    if hf.get("sliding_window"):
        raise ValueError(f"unsupported feature sliding_window={hf['sliding_window']}")
    ours = hf.get("homeforge") or {}
    return ModelConfig(
        vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_hidden_layers"], n_heads=H,
        n_kv_heads=hf.get("num_key_value_heads") or H, ffn_hidden=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048), rope_theta=float(theta),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        dtype=dtype if dtype is not None else ours.get("dtype", "fp32"),
        recompute=recompute if recompute is not None else bool(ours.get("recompute", False)))
