"""homeforge's kernels as drop-ins in a plain PyTorch model, timed against plain torch.

A small byte-level transformer (pre-norm blocks: RMSNorm, grouped-query causal attention, SwiGLU
MLP) is trained twice from the same initial weights on the same batches:

* plain torch: ``torch.nn.functional.scaled_dot_product_attention`` and ``torch.optim.AdamW``;
* homeforge:   ``homeforge.torch.scaled_dot_product_attention`` and ``homeforge.torch.AdamW``.

The only differences between the two runs are those two names. The script prints each run's loss
and its time per step and tokens/s, then the speed ratio. The data is the bytes of the running
Python's standard-library sources (vocabulary 256: no tokenizer, no download).

    python examples/torch_drop_in.py                      # a few seconds per step on 2 cores
    python examples/torch_drop_in.py --threads 1          # compare single-threaded
    python examples/torch_drop_in.py --seq-len 2048 --layers 4 --steps 20

The loss curves agree to float32 rounding over the first steps, then drift slowly apart (the two
attention kernels sum in different orders); ``--check`` asserts the first-step losses match.
"""

from __future__ import annotations

import argparse
import copy
import math
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import homeforge
import homeforge.torch as hft


class Block(nn.Module):
    def __init__(self, d: int, heads: int, kv_heads: int, ffn: int, sdpa) -> None:
        super().__init__()
        self.h, self.hkv, self.hd = heads, kv_heads, d // heads
        self.sdpa = sdpa
        self.norm1, self.norm2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * kv_heads * self.hd, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate_up = nn.Linear(d, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.norm1(x)
        # (B, T, H, D) memory viewed as (B, H, T, D): homeforge's sdpa takes this zero-copy
        q = self.q(h).view(B, T, self.h, self.hd).transpose(1, 2)
        k, v = self.kv(h).view(B, T, 2, self.hkv, self.hd).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        a = self.sdpa(q, k, v, is_causal=True, enable_gqa=self.h != self.hkv)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, C))
        g, u = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class TinyLM(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, kv_heads: int, ffn: int, seq_len: int,
                 sdpa) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq_len, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, kv_heads, ffn, sdpa) for _ in range(layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def set_attention(self, sdpa) -> None:
        for b in self.blocks:
            b.sdpa = sdpa

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx) + self.pos[: idx.shape[1]]
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def byte_corpus(max_bytes: int) -> np.ndarray:
    """The first ``max_bytes`` bytes of the standard library's sources, as uint8."""
    base = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for p in sorted(base.glob("*.py")):
        data = p.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    return np.frombuffer(b"".join(chunks)[:max_bytes], dtype=np.uint8)


def batches(data: np.ndarray, steps: int, batch: int, seq_len: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(data) - seq_len - 1, size=batch)
        x = np.stack([data[s: s + seq_len + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(x[:, :-1]), torch.from_numpy(x[:, 1:])


def train(model: nn.Module, opt: torch.optim.Optimizer, data: list, warmup: int) -> tuple[list[float], float]:
    """Returns the losses and the seconds per step after ``warmup`` untimed steps."""
    losses, t0 = [], None
    for i, (x, y) in enumerate(data):
        if i == warmup:
            t0 = time.perf_counter()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    timed = len(data) - warmup
    return losses, (time.perf_counter() - t0) / timed if timed > 0 else math.nan


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each run")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: homeforge's default)")
    ap.add_argument("--check", action="store_true", help="assert that both runs start with the same loss")
    args = ap.parse_args(argv)

    threads = args.threads or homeforge.get_num_threads()
    homeforge.set_num_threads(threads)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = list(batches(byte_corpus(2 << 20), args.steps, args.batch_size, args.seq_len, seed=0))
    base = TinyLM(256, args.d_model, args.layers, args.heads, args.kv_heads, 4 * args.d_model, args.seq_len,
                  F.scaled_dot_product_attention)
    n_params = sum(p.numel() for p in base.parameters())
    tokens = args.batch_size * args.seq_len
    print(f"TinyLM: {n_params:,} parameters, {args.layers} layers, d={args.d_model}, heads {args.heads}/{args.kv_heads}, "
          f"batch {args.batch_size} x {args.seq_len} tokens, {threads} threads, torch {torch.__version__}")

    results = {}
    for name, sdpa, make_opt in (
        ("plain torch", F.scaled_dot_product_attention,
         lambda ps: torch.optim.AdamW(ps, lr=args.lr, weight_decay=0.1)),
        ("homeforge.torch", hft.scaled_dot_product_attention,
         lambda ps: hft.AdamW(ps, lr=args.lr, weight_decay=0.1)),
    ):
        model = copy.deepcopy(base)
        model.set_attention(sdpa)
        losses, s_per_step = train(model, make_opt(model.parameters()), data, args.warmup)
        results[name] = {"losses": losses, "s_per_step": s_per_step, "tokens_per_s": tokens / s_per_step}
        print(f"{name:>16}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, {s_per_step * 1e3:8.1f} ms/step, "
              f"{tokens / s_per_step:10,.0f} tokens/s")
    a, b = results["plain torch"], results["homeforge.torch"]
    print(f"homeforge.torch / plain torch speed: {a['s_per_step'] / b['s_per_step']:.2f}x")
    if args.check:
        assert abs(a["losses"][0] - b["losses"][0]) < 1e-4, (a["losses"][0], b["losses"][0])
        assert all(math.isfinite(x) for x in a["losses"] + b["losses"])
    return results


if __name__ == "__main__":
    main()
