"""Fused causal attention: homeforge.ops.attention (+ attention_backward) vs torch's CPU SDPA.

torch.nn.functional.scaled_dot_product_attention on CPU runs its flash kernel
(aten/src/ATen/native/cpu/FlashAttentionKernel.cpp). Both run in this process on the same
threads (set_threads), each in its own natural layout: ours (B, T, H, D), torch (B, H, T, D).

- grid: T in {256, 512, 1024, 2048, 4096}, D in {64, 128}, causal, B = 4, H = 8, Hkv in {2, 8},
  float32 and bfloat16 (--quick: T in {256, 512}, D = 64, Hkv = 2).
- timing: 2-3 rounds, each timing ours and torch in turn; a figure is the median of its runs in
  a round, best round (robust to bursts of other jobs on the shared cores).
- GFLOP/s counts useful FLOPs: forward 4*B*H*T*T*D/2 (Q.K^T and P.V, causal half), backward
  2.5x that (5 products), as FlashAttention reports them; "%peak" divides by the oneDNN GEMM
  peak of machine_limits() for the dtype.
- peak extra memory: (a) the bound from our buffers (scratch per running item plus the (B, H, T)
  D vector); (b) measured: in a fresh subprocess, the peak RSS (VmHWM, reset through
  /proc/self/clear_refs after the inputs exist) minus the RSS before the forward+backward call,
  minus the outputs (out, lse, dq, dk, dv), for ours and torch.
- thread scaling 1 .. all cores at T = 1024 (--quick: 256).
- the torch drop-in homeforge.torch.scaled_dot_product_attention with (B, H, T, D) inputs that
  are transposed views of (B, T, H, D) memory (zero-copy) and contiguous ones (one copy each).

    PYTHONPATH=python:. python -m benchmarks.bench_attention [--quick] [--threads N] [--T 256,1024] [--D 64] [--hkv 2] [--H 8]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np

from benchmarks.common import machine_limits, parser, print_table, save_results, set_threads, timeit


def _inputs(B, T, H, Hkv, D, np_dtype, seed=0):
    rng = np.random.default_rng(seed)
    d = lambda *s: rng.standard_normal(s, dtype=np.float32).astype(np_dtype)  # noqa: E731
    return d(B, T, H, D), d(B, T, Hkv, D), d(B, T, Hkv, D), d(B, T, H, D)


def _torch_tensors(arrs, tdtype):
    import torch

    # torch's natural layout (B, H, T, D), contiguous.
    return [torch.from_numpy(a.astype(np.float32)).to(tdtype).transpose(1, 2).contiguous() for a in arrs]


def _check(q, k, v, dout, tdtype):
    """Ours vs torch on the same inputs; raises if they disagree."""
    import torch
    import torch.nn.functional as F

    from homeforge import ops

    out, lse = ops.attention(q, k, v, causal=True)
    dq, dk, dv = ops.attention_backward(dout, q, k, v, out, lse, causal=True)
    tq, tk, tv, tdo = _torch_tensors((q, k, v, dout), torch.float32)  # torch in float32 as the judge
    for t in (tq, tk, tv):
        t.requires_grad_(True)
    ref = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
    grads = torch.autograd.grad(ref, (tq, tk, tv), tdo)
    tol = 2e-2 if tdtype == torch.bfloat16 else 1e-4
    for name, ours, theirs in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), (ref, *grads)):
        o = np.asarray(ours, dtype=np.float32)
        t = theirs.detach().transpose(1, 2).numpy()
        err = float(np.abs(o - t).max() / max(1.0, np.abs(t).max()))
        if not err < tol:
            raise AssertionError(f"attention {name} differs from torch: max rel err {err:.3g} >= {tol}")


def _time_point(B, T, H, Hkv, D, dt_name, quick):
    import torch
    import torch.nn.functional as F

    from homeforge import ops

    np_dtype = np.float32 if dt_name == "f32" else ml_dtypes.bfloat16
    tdtype = torch.float32 if dt_name == "f32" else torch.bfloat16
    q, k, v, dout = _inputs(B, T, H, Hkv, D, np_dtype)
    tq, tk, tv, tdo = _torch_tensors((q, k, v, dout), tdtype)
    for t in (tq, tk, tv):
        t.requires_grad_(True)
    min_time = 0.2 if quick else 0.5
    out, lse = ops.attention(q, k, v, causal=True)

    def ours_fb():
        o, l = ops.attention(q, k, v, causal=True)
        ops.attention_backward(dout, q, k, v, o, l, causal=True)

    def torch_fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)

    def torch_fb():
        o = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
        torch.autograd.grad(o, (tq, tk, tv), tdo)

    # Rounds that interleave ours and torch; each function's figure is its median within a round,
    # and the best round counts. Another job's burst on the shared cores then inflates a round of
    # one side only, not one side's whole figure (which skewed the ratios of sequential timing).
    fns = {"ours_fwd": lambda: ops.attention(q, k, v, causal=True), "torch_fwd": torch_fwd,
           "ours_fb": ours_fb, "torch_fb": torch_fb}
    rounds = 2 if quick else 3
    r = {name: float("inf") for name in fns}
    for i in range(rounds):
        for name, fn in fns.items():
            t = timeit(fn, min_time=min_time / rounds, min_runs=2, warmup=1 if i == 0 else 0)["median"]
            r[name] = min(r[name], t)
    return r


def _extra_bytes_bound(B, T, H, Hkv, D, threads, dt):
    """Our buffers (csrc/attention): per running item the tiles of the biggest pass, plus D (B, H, T).

    Mirrors the Scratch sizes of attention_impl.inc (f32) and attention_avx512bf16.cpp (bf16): the
    forward's tiles, or the backward's tiles plus the one-pass schedule's f32 dQ (T * G * D' floats)
    and the (B, H, T) vector D, whichever is larger; one tile set per thread.
    """
    G = H // Hkv
    rows = lambda r: max(1, r // G) * G  # noqa: E731  query rows of a tile (attention.cpp: tile_rows)
    M = rows(128)
    if dt == "f32":
        Dp = (D + 15) // 16 * 16
        Mf = rows(256 if D > 64 else 128)
        fwd = Mf * Dp * 2 + 64 * Dp * 3 + Mf * 64 + 17 * Mf
        bwd = max(M * Dp * 2 + 64 * Dp * 11 + M * 64 * 2 + 2 * M,             # one pass, 2 key blocks
                  M * Dp * 3 + 64 * Dp * 4 + M * 64 * 2 + 2 * M)              # dQ pass
    else:
        Dp = (D + 31) // 32 * 32
        Dh, MP = Dp // 2, (M + 1) // 2
        fwd = M * Dh + M * Dp + 64 * Dh * 2 + 32 * Dp + M * 64 + M * 32 + 17 * M
        bwd = (2 * M * Dh + 2 * MP * Dp + 64 * Dh + 2 * (2 * 64 * Dh + 32 * Dp + 2 * 64 * Dp) + 2 * MP * 64
               + M * 32 + 2 * M * 64 + 2 * M + 16 + M * Dp)
    one_pass_dq = T * G * Dp
    return 4 * max(threads * fwd, threads * (bwd + one_pass_dq) + B * H * T)


_RSS_SCRIPT = r"""
import json, sys, numpy as np, ml_dtypes
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
B, T, H, Hkv, D, who, dt, threads = json.loads(sys.argv[1])
np_dtype = np.float32 if dt == "f32" else ml_dtypes.bfloat16
rng = np.random.default_rng(0)
d = lambda *s: rng.standard_normal(s, dtype=np.float32).astype(np_dtype)
q, k, v, dout = d(B, T, H, D), d(B, T, Hkv, D), d(B, T, Hkv, D), d(B, T, H, D)
item = np.dtype(np_dtype).itemsize
outputs = (2 * q.size + 2 * k.size) * item + B * H * T * 4      # out, dq, dk, dv, lse
if who == "ours":
    import homeforge
    from homeforge import ops
    homeforge.set_num_threads(threads)
    small = [a[:, :8].copy() for a in (q, k, v, dout)]             # load code paths, warm the pool
    o, l = ops.attention(*small[:3]); ops.attention_backward(small[3], *small[:3], o, l)
    reset_peak(); base = status("VmRSS")
    o, l = ops.attention(q, k, v)
    g = ops.attention_backward(dout, q, k, v, o, l)
else:
    import torch, torch.nn.functional as F
    torch.set_num_threads(threads)
    tdt = torch.float32 if dt == "f32" else torch.bfloat16
    tq, tk, tv, tdo = (torch.from_numpy(a.astype(np.float32)).to(tdt).transpose(1, 2).contiguous() for a in (q, k, v, dout))
    del q, k, v, dout
    for t in (tq, tk, tv): t.requires_grad_(True)
    s = [t[:, :, :8].detach().clone().requires_grad_(True) for t in (tq, tk, tv)]
    torch.autograd.grad(F.scaled_dot_product_attention(*s, is_causal=True, enable_gqa=True), s, torch.ones_like(s[0]))
    reset_peak(); base = status("VmRSS")
    o = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
    g = torch.autograd.grad(o, (tq, tk, tv), tdo)
peak = status("VmHWM")
print(json.dumps({"extra_bytes": peak - base - outputs}))
"""


def _measured_extra(B, T, H, Hkv, D, who, dt, threads):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, json.dumps([B, T, H, Hkv, D, who, dt, threads])],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--T", type=str, default=None, help="comma-separated sequence lengths (default: the grid)")
    p.add_argument("--D", type=str, default=None, help="comma-separated head dims (default: 64,128)")
    p.add_argument("--hkv", type=str, default=None, help="comma-separated kv head counts (default: 2,8)")
    p.add_argument("--H", type=int, default=8, help="query heads (default 8; the nano model: --H 12 --hkv 12)")
    p.add_argument("--mem-T", type=int, default=None, help="T of the memory points (default: 1024 and 4096)")
    args = p.parse_args()
    import torch

    import homeforge
    from homeforge import _core

    threads = set_threads(args.threads)
    limits = machine_limits(quick=args.quick)
    print(f"homeforge {homeforge.__version__} isa={_core.active_isa()} threads={threads} torch {torch.__version__}; "
          f"GEMM peak f32 {limits['gemm_f32_gflops']:.0f} bf16 {limits['gemm_bf16_gflops']:.0f} GFLOP/s")
    B, H = 4, args.H
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    Ts = ints(args.T) if args.T else (256, 512) if args.quick else (256, 512, 1024, 2048, 4096)
    Ds = ints(args.D) if args.D else (64,) if args.quick else (64, 128)
    Hkvs = ints(args.hkv) if args.hkv else (2,) if args.quick else (2, 8)
    for dt_name, tdtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        np_dtype = np.float32 if dt_name == "f32" else ml_dtypes.bfloat16
        _check(*_inputs(2, 200, 8, 2, 64, np_dtype, seed=1), tdtype)
        _check(*_inputs(1, 130, 6, 6, 80, np_dtype, seed=2), tdtype)

    rows = []
    for dt_name in ("f32", "bf16"):
        peak = limits["gemm_f32_gflops" if dt_name == "f32" else "gemm_bf16_gflops"]
        for D in Ds:
            for Hkv in Hkvs:
                for T in Ts:
                    r = _time_point(B, T, H, Hkv, D, dt_name, args.quick)
                    fl = 4 * B * H * T * T * D / 2
                    rows.append({
                        "dtype": dt_name, "T": T, "D": D, "Hkv": Hkv,
                        "fwd ms": r["ours_fwd"] * 1e3, "torch fwd ms": r["torch_fwd"] * 1e3,
                        "fwd x": r["torch_fwd"] / r["ours_fwd"],
                        "f+b ms": r["ours_fb"] * 1e3, "torch f+b ms": r["torch_fb"] * 1e3,
                        "f+b x": r["torch_fb"] / r["ours_fb"],
                        "fwd GF/s": fl / r["ours_fwd"] / 1e9, "fwd %peak": 100 * fl / r["ours_fwd"] / 1e9 / peak,
                        "f+b GF/s": 3.5 * fl / r["ours_fb"] / 1e9, "f+b %peak": 100 * 3.5 * fl / r["ours_fb"] / 1e9 / peak,
                        "torch f+b GF/s": 3.5 * fl / r["torch_fb"] / 1e9,
                    })
                    print_table(rows[-1:], list(rows[-1].keys()))
    cols = ["dtype", "T", "D", "Hkv", "fwd ms", "torch fwd ms", "fwd x", "f+b ms", "torch f+b ms", "f+b x",
            "fwd GF/s", "fwd %peak", "f+b GF/s", "f+b %peak", "torch f+b GF/s"]
    print(f"\n== forward and forward+backward, B=4 H={H} causal")
    print_table(rows, cols)

    # Thread scaling.
    Ts_scale = 256 if args.quick else 1024
    scale_rows = []
    cores = len(os.sched_getaffinity(0))
    for dt_name in ("f32", "bf16"):
        for n in sorted({1, *range(2, cores + 1, max(1, cores // 4)), cores}):
            set_threads(n)
            r = _time_point(B, Ts_scale, H, 2, 64, dt_name, True)
            scale_rows.append({"dtype": dt_name, "threads": n, "fwd ms": r["ours_fwd"] * 1e3, "f+b ms": r["ours_fb"] * 1e3,
                               "torch fwd ms": r["torch_fwd"] * 1e3, "torch f+b ms": r["torch_fb"] * 1e3})
        base = [s for s in scale_rows if s["dtype"] == dt_name][0]
        for s in scale_rows:
            if s["dtype"] == dt_name:
                s["fwd speedup"] = base["fwd ms"] / s["fwd ms"]
                s["f+b speedup"] = base["f+b ms"] / s["f+b ms"]
                s["torch f+b speedup"] = base["torch f+b ms"] / s["torch f+b ms"]
    set_threads(threads)
    print(f"\n== thread scaling, T={Ts_scale} D=64 B=4 H=8 Hkv=2")
    print_table(scale_rows, ["dtype", "threads", "fwd ms", "fwd speedup", "f+b ms", "f+b speedup", "torch fwd ms",
                             "torch f+b ms", "torch f+b speedup"])

    # Peak extra memory.
    mem_rows = []
    mem_points = ((args.mem_T, 128, 8),) if args.mem_T else ((512, 64, 2),) if args.quick else ((1024, 64, 2), (4096, 128, 8))
    for (T, D, Hkv) in mem_points:
        for dt_name in ("f32", "bf16"):
            row = {"dtype": dt_name, "T": T, "D": D, "Hkv": Hkv,
                   "ours bound MiB": _extra_bytes_bound(B, T, H, Hkv, D, threads, dt_name) / 2**20}
            for who in ("ours", "torch"):
                row[f"{who} measured MiB"] = _measured_extra(B, T, H, Hkv, D, who, dt_name, threads) / 2**20
            row["T*S*B*H f32 MiB (naive scores)"] = 4 * B * H * T * T / 2**20
            mem_rows.append(row)
    print("\n== peak extra memory over fwd+bwd (RSS rise minus outputs; the bound is from our buffers)")
    print_table(mem_rows, list(mem_rows[0].keys()))

    # The torch drop-in: zero-copy views vs contiguous (copied) inputs.
    from homeforge.torch import scaled_dot_product_attention as hf_sdpa

    T, D = (256, 64) if args.quick else (1024, 64)
    drop_rows = []
    for dt_name, tdtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        q, k, v, dout = (torch.from_numpy(a).to(tdtype) for a in _inputs(B, T, H, 2, D, np.float32))
        views = [t.transpose(1, 2).requires_grad_(False) for t in (q, k, v)]   # (B, H, T, D) views of (B, T, H, D)
        conts = [t.contiguous() for t in views]
        gview = dout.transpose(1, 2)
        res = {}
        for name, ins in (("view", views), ("contiguous", conts)):
            xs = [t.detach().requires_grad_(True) for t in ins]

            def fb(xs=xs):
                o = hf_sdpa(*xs, is_causal=True, enable_gqa=True)
                torch.autograd.grad(o, xs, gview)
            res[name] = timeit(fb, min_time=0.3)["median"]
        xs = [t.detach().contiguous().requires_grad_(True) for t in conts]

        def tfb():
            o = torch.nn.functional.scaled_dot_product_attention(*xs, is_causal=True, enable_gqa=True)
            torch.autograd.grad(o, xs, gview)
        res["torch"] = timeit(tfb, min_time=0.3)["median"]
        drop_rows.append({"dtype": dt_name, "T": T, "D": D, "drop-in f+b ms (views, zero-copy)": res["view"] * 1e3,
                          "drop-in f+b ms (contiguous, copies)": res["contiguous"] * 1e3,
                          "copy overhead %": 100 * (res["contiguous"] / res["view"] - 1),
                          "torch f+b ms": res["torch"] * 1e3, "drop-in x": res["torch"] / res["view"]})
    print(f"\n== torch drop-in homeforge.torch.scaled_dot_product_attention, B=4 H=8 Hkv=2, fwd+bwd")
    print_table(drop_rows, list(drop_rows[0].keys()))

    save_results("attention", rows, out=args.out,
                 extra={"threads": threads, "limits": limits, "scaling": scale_rows, "memory": mem_rows,
                        "drop_in": drop_rows, "quick": args.quick})


if __name__ == "__main__":
    main()
