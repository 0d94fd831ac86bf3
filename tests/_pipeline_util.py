"""Shared pieces of the pipeline tests (not a test module).

``HFByteTokenizer`` adapts a Hugging Face ``tokenizers`` byte-level BPE (a reference nobody here
wrote) to the interface homeforge's data pipeline uses, so the data tests check our cleaning,
sharding and loading against an independent tokenizer.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

import numpy as np

EOT = "<|endoftext|>"


class HFByteTokenizer:
    def __init__(self, texts, vocab_size: int = 512) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        t = Tokenizer(models.BPE())
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        t.train_from_iterator(list(texts), trainer)
        self.t = t
        self.eot_token = t.token_to_id(EOT)
        self.n_vocab = t.get_vocab_size()
        self.special_tokens = {EOT: self.eot_token}

    def encode_batch_flat(self, texts, num_threads=None, **special):  # special: tiktoken-style flags, ignored
        encs = self.t.encode_batch(list(texts), add_special_tokens=False)
        lens = [len(e.ids) for e in encs]
        offsets = np.zeros(len(encs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lens)
        ids = np.array([i for e in encs for i in e.ids], dtype=np.uint32)
        return ids, offsets

    def encode_ordinary(self, text):
        return self.t.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.t.decode([int(i) for i in ids], skip_special_tokens=False)

    def hash(self) -> str:
        return hashlib.sha256(self.t.to_str().encode()).hexdigest()

    def save(self, path) -> None:
        Path(path).write_text(self.t.to_str())


def stdlib_files(names=("json", "textwrap.py", "string.py", "heapq.py", "bisect.py")) -> list[Path]:
    base = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for n in names:
        p = base / n
        out.extend(sorted(p.glob("*.py")) if p.is_dir() else [p])
    return out
