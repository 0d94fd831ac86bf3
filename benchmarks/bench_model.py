"""Training-step throughput of homeforge.Model vs transformers' LlamaForCausalLM in PyTorch.

One training step = zero_grad + forward + backward + AdamW over B x T tokens. Rows:

- homeforge.Model (fp32, or bf16: bf16 GEMM inputs/attention with f32 accumulation, f32 master
  weights), with homeforge.optim.AdamW over the flat buffers (a float32 numpy AdamW stands in,
  and is labelled so, if homeforge.optim is not importable on this branch);
- transformers LlamaForCausalLM (attn_implementation="sdpa") in PyTorch eager with
  torch.optim.AdamW(fused=True); bf16 = torch.autocast("cpu", bfloat16) over f32 master weights,
  the same mixed-precision scheme;
- the same under torch.compile (skipped with the error if it does not work here; by default only
  for the 10m preset, because inductor needs minutes per model on 2 cores).

Correctness first: our loss and logits on the benchmark model must match transformers' (fp32).
MFU = tokens/s * model.flops_per_token(T) / machine GEMM peak (fp32 or bf16 as the row's dtype),
flops_per_token = 6 * N_matmul + 6 * n_layers * T * d_model (see Model.flops_per_token).
Roofline (per preset/dtype): the step cannot beat model FLOPs / GEMM peak + the bytes every step
streams through memory outside the GEMMs that we can count exactly from the code (see
step_stream_bytes: zero_grad, the optimizer's norm and update passes, the bf16 weight refresh) /
triad bandwidth; the same with the core's register-only peak (bench_machine) in place of oneDNN's
GEMM peak; and the step time 1.3x torch.compile requires, so the table says whether that target
is reachable at the measured peaks. Everything else (cross-entropy, norms, attention, element-wise
passes) is on top of this bound.
Our rows run in a fresh subprocess; peak RSS is its high-water mark (reset through
/proc/self/clear_refs after imports) minus the RSS before the model was built; the lower bound is params + grads + AdamW state (16 bytes/param) + the activations
a non-recomputing backward must keep (see activation_lower_bound).

    python -m benchmarks.bench_model [--quick] [--presets 10m,nano] [--dtypes fp32,bf16] [--no-compile]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import machine_limits, parser, print_table, save_results, set_threads, timeit

BETAS, LR, WD, EPS = (0.9, 0.95), 3e-4, 0.1, 1e-8


def rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def activation_lower_bound(cfg: Any, B: int, T: int) -> int:
    """Bytes a non-recomputing backward must keep: per layer the layer input and mid residual
    (f32), and in the activation dtype the two norm outputs, q, k, v, the attention output and the
    gate/up pre-activations (inputs of every GEMM/attention backward), plus the final norm output."""
    es = 2 if cfg.dtype == "bf16" else 4
    N, d, D = B * T, cfg.d_model, cfg.head_dim
    per_layer = N * (2 * d * 4 + es * (2 * d + 2 * cfg.n_heads * D + 2 * cfg.n_kv_heads * D + 2 * cfg.ffn_hidden))
    return cfg.n_layers * per_layer + N * d * (4 + es)


def step_stream_bytes(n_params: int, dtype: str, optimizer: str) -> int:
    """Bytes one training step streams through memory outside the GEMMs, counted from the code:

    - Model.zero_grad: memset of the f32 gradients, 4 B/param (csrc/model/model.cpp);
    - homeforge.optim.AdamW.step with its defaults (skip_nonfinite=True): one gradient-norm pass
      reading g (4 B/param, Plan::grad_sumsq), then the fused update reading p, g, m, v and writing
      p, m, v (28 B/param, csrc/optim/optim.h);
    - bf16 only: Model::refresh_weights reads the f32 master weights and writes the bf16 copy
      (4 + 2 = 6 B/param) at the start of forward_backward.
    The numpy stand-in makes ~12 passes; it is counted as the fused update (a lower bound)."""
    per_param = 4 + 28 + (4 if optimizer == "homeforge.optim.AdamW" else 0) + (6 if dtype == "bf16" else 0)
    return per_param * n_params


class NumpyAdamW:
    """Stand-in when homeforge.optim is absent: torch's AdamW update in float32 numpy, in place."""

    label = "numpy AdamW (stand-in)"

    def __init__(self, p: np.ndarray, g: np.ndarray):
        self.p, self.g = p, g
        self.m, self.v, self.t = np.zeros_like(p), np.zeros_like(p), 0
        self.tmp = np.empty_like(p)

    def step(self) -> None:
        self.t += 1
        b1, b2 = BETAS
        self.p *= 1 - LR * WD
        self.m *= b1
        self.m += (1 - b1) * self.g
        self.v *= b2
        np.multiply(self.g, self.g, out=self.tmp)
        self.v += (1 - b2) * self.tmp
        np.sqrt(self.v / (1 - b2 ** self.t), out=self.tmp)
        self.tmp += EPS
        np.divide(self.m, self.tmp, out=self.tmp)
        self.p -= (LR / (1 - b1 ** self.t)) * self.tmp


def make_optimizer(model: Any) -> tuple[Any, str]:
    try:
        from homeforge.optim import AdamW
    except ImportError:
        return NumpyAdamW(model.flat_params(), model.flat_grads()), NumpyAdamW.label
    return AdamW([model.flat_params()], [model.flat_grads()], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD), \
        "homeforge.optim.AdamW"


def torch_model(model: Any, dtype: str) -> Any:
    import torch
    import transformers

    hc = {k: v for k, v in model.hf_config().items() if k not in ("homeforge", "architectures", "torch_dtype", "model_type")}
    cfg = transformers.LlamaConfig(**hc)
    cfg._attn_implementation = "sdpa"
    ref = transformers.LlamaForCausalLM(cfg).float()
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.named_parameters().items()}, strict=False)
    return ref


def torch_step_fn(ref: Any, x: np.ndarray, y: np.ndarray, bf16: bool, compiled: bool) -> Callable[[], float]:
    import torch

    opt = torch.optim.AdamW(ref.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, fused=True)
    xt, yt = torch.from_numpy(x).long(), torch.from_numpy(y).long()
    V = ref.config.vocab_size

    def fwd_bwd() -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = ref(input_ids=xt).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), yt.reshape(-1))
        loss.backward()
        return loss

    fb = torch.compile(fwd_bwd) if compiled else fwd_bwd

    def step() -> float:
        opt.zero_grad(set_to_none=False)
        loss = fb()
        opt.step()
        return float(loss.detach())

    return step


def check_correct(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    import torch

    ref = torch_model(model, "fp32")
    with torch.no_grad():
        logits = ref(input_ids=torch.from_numpy(x[:1]).long()).logits.numpy()
    ours = model.forward(x[:1])
    err = np.abs(ours - logits).max()
    if err > 1e-3 * max(1.0, np.abs(logits).max()):
        raise AssertionError(f"logits differ from transformers by {err}")
    lt = torch.nn.functional.cross_entropy(torch.from_numpy(logits[0]), torch.from_numpy(y[0]).long()).item()
    lo = model.loss(x[:1], y[:1])
    if abs(lo - lt) > 1e-4 * abs(lt):
        raise AssertionError(f"loss {lo} differs from transformers' {lt}")


def run_ours(name: str, dtype: str, V: int, B: int, T: int, quick: bool, threads: int) -> dict[str, Any]:
    """Time our training step in THIS process (called in a fresh subprocess by main, so that the
    peak-RSS high-water mark belongs to our model alone)."""
    from homeforge import Model, ModelConfig

    cfg = ModelConfig.preset(name, vocab_size=V, dtype=dtype)
    data = np.random.default_rng(0).integers(0, V, (B, T + 1))
    x, y = np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, 1:])
    gc.collect()
    base = rss_now()
    have_peak = reset_peak()
    model = Model(cfg, seed=0)
    opt, label = make_optimizer(model)

    def step() -> None:
        model.zero_grad(overwrite_next=True)
        model.forward_backward(x, y)
        opt.step()

    t = timeit(step, min_time=0.2 if quick else 1.0, min_runs=3, warmup=1)["median"]
    # The optimizer pass alone, for the roofline: the bandwidth it actually reaches (it can beat
    # our triad kernel, which is plain SSE2 code).
    t_opt = timeit(opt.step, min_time=0.1 if quick else 0.3, min_runs=3, warmup=0)["min"]
    return {"step_s": t, "opt_s": t_opt, "peak_rss": (rss_peak() - base) if have_peak else None, "optimizer": label,
            "params": model.num_parameters(), "flops_per_token": model.flops_per_token(T),
            "lower_bound": 16 * model.num_parameters() + activation_lower_bound(cfg, B, T),
            "state_bytes": model.state_bytes()}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default=None, help="comma-separated presets (default 10m,nano; quick: 10m)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated dtypes (fp32, bf16)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-presets", default="10m",
                   help="presets timed under torch.compile too (compiling takes minutes on 2 cores; default 10m)")
    p.add_argument("--gemm-peak-f32", type=float, default=None,
                   help="GFLOP/s to compute MFU against instead of machine_limits() (e.g. the idle peak)")
    p.add_argument("--gemm-peak-bf16", type=float, default=None, help="likewise for bf16")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    threads = set_threads(args.threads)
    if args.worker:
        name, dtype, V, B, T = args.worker.split(",")
        print("RESULT " + json.dumps(run_ours(name, dtype, int(V), int(B), int(T), args.quick, threads)))
        return
    import torch

    import homeforge
    from homeforge import Model, ModelConfig

    limits = dict(machine_limits(quick=args.quick))
    if args.gemm_peak_f32:
        limits["gemm_f32_gflops"] = args.gemm_peak_f32
    if args.gemm_peak_bf16:
        limits["gemm_bf16_gflops"] = args.gemm_peak_bf16
    presets = (args.presets or ("10m" if args.quick else "10m,nano")).split(",")
    shapes = {"1m": (2048, 8, 128), "10m": (8192, 8, 256), "nano": (32000, 4, 256), "mini": (32000, 2, 256)}
    if args.quick:
        shapes["10m"] = (8192, 4, 128)
    do_compile = not args.no_compile and not args.quick
    rows: list[dict[str, Any]] = []
    roof: list[dict[str, Any]] = []
    for name in presets:
        V, B, T = shapes[name]
        data = np.random.default_rng(0).integers(0, V, (B, T + 1))
        x, y = np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, 1:])
        check_correct(Model(ModelConfig.preset(name, vocab_size=V), seed=0), x, y)
        for dtype in args.dtypes.split(","):
            if dtype not in ("fp32", "bf16"):
                raise SystemExit(f"--dtypes: unknown dtype {dtype!r} (fp32 or bf16)")
            cmd = [sys.executable, "-m", "benchmarks.bench_model", "--worker", f"{name},{dtype},{V},{B},{T}",
                   "--threads", str(threads)] + (["--quick"] if args.quick else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
            res = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not res:
                raise RuntimeError(f"worker failed: {proc.stderr[-2000:]}")
            r = json.loads(res[0][7:])
            t, fpt = r["step_s"], r["flops_per_token"]
            peak_gf = limits["gemm_bf16_gflops" if dtype == "bf16" else "gemm_f32_gflops"]
            ours_tps = B * T / t
            rows.append({"preset": name, "dtype": dtype, "impl": "homeforge", "B": B, "T": T,
                         "params_M": r["params"] / 1e6, "tok/s": ours_tps, "step_ms": t * 1e3,
                         "MFU": ours_tps * fpt / (peak_gf * 1e9),
                         "peak_rss_MiB": r["peak_rss"] / 2**20 if r["peak_rss"] is not None else None,
                         "lower_bound_MiB": r["lower_bound"] / 2**20, "optimizer": r["optimizer"],
                         "flops_per_token": fpt, "note": r["optimizer"]})
            bf16 = dtype == "bf16"
            for compiled in (False, True):
                label = "torch.compile" if compiled else "torch eager"
                if compiled and not (do_compile and name in args.compile_presets.split(",")):
                    continue
                ref = torch_model(Model(ModelConfig.preset(name, vocab_size=V), seed=0), dtype)
                try:
                    step = torch_step_fn(ref, x, y, bf16, compiled)
                    t0 = time.perf_counter()
                    step()  # compile / warm up
                    warm = time.perf_counter() - t0
                    tt = timeit(step, min_time=1.0 if not args.quick else 0.2, min_runs=3, warmup=1)["median"]
                except Exception as e:  # torch.compile may not work on this machine: say why
                    rows.append({"preset": name, "dtype": dtype, "impl": label,
                                 "note": f"skipped: {type(e).__name__}: {str(e)[:120]}"})
                    continue
                rows.append({"preset": name, "dtype": dtype, "impl": label, "B": B, "T": T, "tok/s": B * T / tt,
                             "step_ms": tt * 1e3, "MFU": B * T / tt * fpt / (peak_gf * 1e9),
                             "ours_x": ours_tps / (B * T / tt), "note": f"first step {warm:.1f}s" if compiled else None})
                del ref, step
                gc.collect()
            gemm_ms = fpt * B * T / (peak_gf * 1e9) * 1e3
            core_gf = limits.get("core_bf16_gflops" if bf16 else "core_f32_gflops")
            if core_gf:  # the register-only loop has no AMX: where oneDNN's GEMM beats it, that is the peak
                core_gf = max(core_gf, peak_gf)
            stream_b = step_stream_bytes(r["params"], dtype, r["optimizer"])
            stream_ms = stream_b / (limits["triad_gbs"] * 1e9) * 1e3
            comp = [x for x in rows if x["preset"] == name and x["dtype"] == dtype and x["impl"] == "torch.compile"
                    and "step_ms" in x]
            need = comp[0]["step_ms"] / 1.3 if comp else None
            opt_bytes = step_stream_bytes(r["params"], "fp32", r["optimizer"]) - 4 * r["params"]  # norm + update
            roof.append({"preset": name, "dtype": dtype, "GFLOP/step": fpt * B * T / 1e9,
                         "opt_ms": r["opt_s"] * 1e3, "opt_GB/s": opt_bytes / r["opt_s"] / 1e9,
                         "gemm_ms": gemm_ms, "stream_MB": stream_b / 1e6, "stream_ms": stream_ms,
                         "bound_ms": gemm_ms + stream_ms,
                         "bound_core_ms": fpt * B * T / (core_gf * 1e9) * 1e3 + stream_ms if core_gf else None,
                         "ours_ms": t * 1e3, "ours/bound": t * 1e3 / (gemm_ms + stream_ms), "need_1.3x_ms": need,
                         "reachable": None if need is None else ("yes" if gemm_ms + stream_ms <= need else "NO")})
            print_table([r for r in rows if r["preset"] == name and r["dtype"] == dtype],
                        ["preset", "dtype", "impl", "B", "T", "tok/s", "step_ms", "MFU", "ours_x", "peak_rss_MiB",
                         "lower_bound_MiB", "note"])
    print("roofline: bound_ms = model FLOPs / GEMM peak + step_stream_bytes / triad; bound_core_ms uses the core's "
          "register-only peak instead (or the GEMM peak where that is higher, as with AMX); need_1.3x_ms = torch.compile step / 1.3")
    print_table(roof, ["preset", "dtype", "GFLOP/step", "gemm_ms", "stream_MB", "stream_ms", "bound_ms", "bound_core_ms",
                       "ours_ms", "ours/bound", "need_1.3x_ms", "reachable", "opt_ms", "opt_GB/s"])
    print(f"(opt_ms / opt_GB/s: homeforge AdamW.step alone, its norm + update bytes over its time; where opt_GB/s "
          f"exceeds triad ({limits['triad_gbs']:.0f} GB/s), stream_ms and the bounds are conservative)")
    print(f"threads={threads}; GEMM peak fp32 {limits['gemm_f32_gflops']:.0f} / bf16 {limits['gemm_bf16_gflops']:.0f} "
          f"GFLOP/s; torch {torch.__version__}; homeforge {homeforge.__version__}")
    save_results("model", rows, out=args.out, extra={"limits": limits, "quick": args.quick, "roofline": roof})


if __name__ == "__main__":
    main()
