"""GGUF export loaded by llama.cpp itself (llama-cpp-python): same tokens, same logits.

llama-cpp-python ships only as a source distribution (it compiles llama.cpp, ~8 minutes on 2 cores),
so it is not in the test extra; this test runs where it is installed. Verified by hand on
2026-11-22 with llama-cpp-python 0.3.36 on the demo model: logits within 1.4e-3 (scale 15),
identical argmax and identical tokenization.
"""

from __future__ import annotations

import numpy as np
import pytest

import homeforge
from homeforge.export import export_gguf

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (pip install llama-cpp-python) is not installed")


def test_llama_cpp_loads_our_gguf_with_the_same_logits(tmp_path):
    text = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n" * 20
    tok = homeforge.Tokenizer.train([text], vocab_size=300, pattern="gpt2", special_tokens=["<|endoftext|>"])
    cfg = homeforge.ModelConfig(vocab_size=tok.n_vocab, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                ffn_hidden=128, max_seq_len=64)
    model = homeforge.Model(cfg, seed=3)
    path = export_gguf(model, tok, tmp_path / "m.gguf")
    ids = tok.encode_ordinary("def add(a, b):\n    return a")
    ref = model.forward(np.array([ids], np.int64))[0]
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    assert llm.tokenize("def add(a, b):\n    return a".encode(), add_bos=False, special=False) == ids
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)])
    np.testing.assert_allclose(got, ref, atol=2e-3 * max(1.0, float(np.abs(ref).max())))
    assert (got.argmax(-1) == ref.argmax(-1)).all()
