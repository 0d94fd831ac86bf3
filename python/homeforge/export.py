"""Export a trained model: a Hugging Face directory, or a GGUF file for llama.cpp.

``export_hf(model, tok, dir)`` writes ``model.save_pretrained`` (config.json + model.safetensors,
LlamaForCausalLM), the tokenizer as ``tokenizer.json`` (``tok.save_hf``) and a
``tokenizer_config.json``, so ``transformers.AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` load it.

``export_gguf(model, tok, path)`` writes GGUF with the ``gguf`` package (PyPI), architecture
``llama``, all tensors f32, under llama.cpp's names (``token_embd``, ``blk.N.attn_q`` ...,
``output_norm``; ``output`` only when the embeddings are untied). Transformers' Llama keeps each
head's rotary pairs as two halves (rotate_half) while GGUF's llama layout interleaves them, so the
rows of the q and k projections are reordered per head, as llama.cpp's converter does. The
tokenizer goes in as a ``gpt2`` (byte-level BPE) vocabulary with its merges, token types and the
end-of-text id.

>>> w = np.arange(8, dtype=np.float32).reshape(8, 1)   # 2 heads of dim 4: rows [0 1 | 2 3] [4 5 | 6 7]
>>> halves_to_interleaved(w, 2)[:, 0].tolist()
[0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import apply_default_mode, atomic_write, fsync_dir, staged_files

__all__ = ["export_hf", "export_gguf", "halves_to_interleaved", "GGUF_NAMES"]

#: transformers name (with {i} for the layer) -> llama.cpp GGUF name
GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}

# our pre-tokenization pattern names -> llama.cpp's tokenizer.ggml.pre
_GGUF_PRE = {"gpt2": "gpt-2", "r50k": "gpt-2", "cl100k": "llama-bpe", "o200k": "gpt-4o"}


def halves_to_interleaved(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q/k projection [n_heads*head_dim, d] from rotate-half pairs (i, i+D/2)
    to adjacent pairs (2i, 2i+1), per head."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"cannot split {rows} rows into {n_heads} heads of even dimension")
    hd = rows // n_heads
    return np.ascontiguousarray(w.reshape(n_heads, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def _cfg(model: Any) -> dict[str, Any]:
    return model.config.to_dict()


def export_hf(model: Any, tok: Any, out_dir: str | os.PathLike[str]) -> Path:
    """Write a transformers-loadable directory (model + tokenizer) into ``out_dir``.

    All four files are written (and fsynced) into a staging folder inside ``out_dir``, then renamed
    into place (``_atomic.staged_files``), so a failure (say a tokenizer that has no tokenizer.json
    form) changes nothing, and a crash leaves at worst some new files beside old ones. Other files
    already in ``out_dir`` are left alone, as transformers' ``save_pretrained`` does; a path that
    exists and is not a directory raises OSError.
    """
    from .model import remove_stale_shards

    out = Path(out_dir)
    with staged_files(out, "export") as tmp:
        model.save_pretrained(tmp)
        tok.save_hf(tmp / "tokenizer.json")
        eot = "<|endoftext|>" if tok.eot_token is not None else None
        tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": int(_cfg(model)["max_seq_len"]),
                "clean_up_tokenization_spaces": False}
        if eot:
            tcfg.update({"eos_token": eot, "bos_token": eot, "unk_token": None})
        with atomic_write(tmp / "tokenizer_config.json", "w") as f:
            f.write(json.dumps(tcfg, indent=1))
    remove_stale_shards(out)
    return out


def _hf_vocab(tok: Any) -> tuple[list[str], list[str]]:
    """Tokens (GPT-2 byte-to-unicode strings, by id) and merges ("a b") of the tokenizer, via its tokenizer.json."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "tokenizer.json"
        tok.save_hf(p)
        j = json.loads(p.read_text(encoding="utf-8"))
    vocab: dict[str, int] = dict(j["model"]["vocab"])
    for at in j.get("added_tokens", []):
        vocab[at["content"]] = at["id"]
    n = max(vocab.values()) + 1
    tokens = [""] * n
    for s, i in vocab.items():
        tokens[i] = s
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"].get("merges", [])]
    return tokens, merges


def export_gguf(model: Any, tok: Any, path: str | os.PathLike[str], *, name: str = "homeforge") -> Path:
    """Write ``model`` and ``tok`` as a llama-architecture GGUF file (f32), atomically."""
    try:
        import gguf
    except ImportError:
        raise ImportError("export --format gguf needs the gguf package: pip install 'homeforge[gguf]'") from None

    c = _cfg(model)
    n_heads, n_kv, d = int(c["n_heads"]), int(c["n_kv_heads"]), int(c["d_model"])
    head_dim = d // n_heads
    params = model.named_parameters()
    tokens, merges = _hf_vocab(tok)
    vocab_size = int(c["vocab_size"])
    if len(tokens) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokens)} tokens but the model only {vocab_size}")
    specials = set(getattr(tok, "special_tokens", {}) or {})
    types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    for i in range(len(tokens), vocab_size):  # model rows past the tokenizer's ids
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    apply_default_mode(tmp)
    try:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(name)
        w.add_context_length(int(c["max_seq_len"]))
        w.add_embedding_length(d)
        w.add_block_count(int(c["n_layers"]))
        w.add_feed_forward_length(int(c["ffn_hidden"]))
        w.add_head_count(n_heads)
        w.add_head_count_kv(n_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(c.get("rope_theta", 10000.0)))
        w.add_layer_norm_rms_eps(float(c.get("norm_eps", 1e-5)))
        w.add_vocab_size(vocab_size)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(_GGUF_PRE.get(str(getattr(tok, "pattern", "")), "default"))
        w.add_token_list(tokens)
        w.add_token_types([int(t) for t in types])
        w.add_token_merges(merges)
        if tok.eot_token is not None:
            w.add_eos_token_id(int(tok.eot_token))
            w.add_bos_token_id(int(tok.eot_token))
        w.add_add_bos_token(False)
        for hf_name, arr in params.items():
            gname = _gguf_name(hf_name)
            a = np.asarray(arr, dtype=np.float32)
            if hf_name.endswith("self_attn.q_proj.weight"):
                a = halves_to_interleaved(a, n_heads)
            elif hf_name.endswith("self_attn.k_proj.weight"):
                a = halves_to_interleaved(a, n_kv)
            w.add_tensor(gname, np.ascontiguousarray(a))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _gguf_name(hf_name: str) -> str:
    parts = hf_name.split(".")
    if hf_name.startswith("model.layers.") and len(parts) > 3 and parts[2].isdigit():
        i = parts[2]
        key = ".".join(parts[:2] + ["{i}"] + parts[3:])
        if key in GGUF_NAMES:
            return GGUF_NAMES[key].replace("{i}", i)
    elif hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    raise ValueError(f"no GGUF name for parameter {hf_name}")
