"""The machine's limits: STREAM-like memory bandwidth and oneDNN GEMM peak (fp32, bf16).

Every other benchmark reports its speed as a fraction of these numbers.

- copy:  c = a           (16 bytes per float64 element, as in McCalpin's STREAM)
- triad: a = b + s * c   (24 bytes per element)
  Arrays are 8x larger than the last-level cache would need (>= 64 MiB each), run with all threads.
- numpy's single-threaded copy is shown beside ours as a peer.
- GEMM: square N x N x N products through oneDNN matmul; peak = best over N.
  torch.matmul (MKL / oneDNN inside PyTorch) is timed beside it.
- core peak: register-only loops of independent vfmadd231ps (f32; zmm, or ymm on AVX2) and
  vdpbf16ps (bf16, AVX512_BF16 only) chains on every thread at once (_core.core_peak_gflops);
  best of several runs. The GEMM peak is printed as a fraction of it: how much of the
  hardware's arithmetic rate oneDNN reaches.

    python -m benchmarks.bench_machine [--quick]
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks.common import parser, print_table, save_results, set_threads, timeit


def measure(quick: bool = False, threads: int | None = None) -> dict[str, float]:
    import ml_dtypes

    from homeforge import _core

    set_threads(threads)
    rows = []
    n = (8 if quick else 32) * 1024 * 1024  # float64 elements per array: 64 MiB / 256 MiB
    a, b, c = np.ones(n), np.full(n, 2.0), np.zeros(n)
    _core.stream_copy(c, a)
    assert np.array_equal(c, a), "stream_copy is wrong"
    _core.stream_triad(a, b, c, 3.0)
    assert np.allclose(a, b + 3.0 * c), "stream_triad is wrong"
    t_copy = timeit(lambda: _core.stream_copy(c, a), min_time=0.5)["median"]
    t_triad = timeit(lambda: _core.stream_triad(a, b, c, 3.0), min_time=0.5)["median"]
    t_np = timeit(lambda: np.copyto(c, a), min_time=0.5)["median"]
    copy_gbs, triad_gbs, np_gbs = 16 * n / t_copy / 1e9, 24 * n / t_triad / 1e9, 16 * n / t_np / 1e9
    rows += [
        {"what": "copy (ours)", "GB/s": copy_gbs},
        {"what": "triad (ours)", "GB/s": triad_gbs},
        {"what": "copy (numpy, 1 thread)", "GB/s": np_gbs},
    ]
    del a, b, c

    try:
        import torch
    except ImportError:
        torch = None
    peaks = {}
    for dtype_name, np_dtype in (("f32", np.float32), ("bf16", ml_dtypes.bfloat16)):
        best = 0.0
        for size in ((512, 1024) if quick else (1024, 2048, 3072)):
            A = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
            Ac = A.astype(np_dtype)
            C = np.zeros((size, size), np.float32)
            _core.gemm(Ac, Ac, C)
            ref = Ac.astype(np.float32) @ Ac.astype(np.float32)
            assert np.allclose(C, ref, rtol=1e-2, atol=1e-2 * size ** 0.5), f"oneDNN {dtype_name} GEMM is wrong"
            t = timeit(lambda: _core.gemm(Ac, Ac, C), min_time=0.5)["median"]
            gf = 2 * size**3 / t / 1e9
            best = max(best, gf)
            row = {"what": f"gemm {dtype_name} {size}^3 (oneDNN)", "GFLOP/s": gf}
            if torch is not None:
                At = torch.from_numpy(A).to(torch.float32 if dtype_name == "f32" else torch.bfloat16)
                tt = timeit(lambda: torch.matmul(At, At), min_time=0.5)["median"]
                row["torch GFLOP/s"] = 2 * size**3 / tt / 1e9
                row["ours/torch"] = tt / t
            rows.append(row)
        peaks[dtype_name] = best
    limits = {"copy_gbs": copy_gbs, "triad_gbs": triad_gbs, "gemm_f32_gflops": peaks["f32"], "gemm_bf16_gflops": peaks["bf16"]}

    isa = _core.active_isa()
    f32_instr = "vfmadd231ps zmm" if isa.startswith("avx512") else "vfmadd231ps ymm" if isa == "avx2" else "SSE2 mulps+addps"
    instr = {"f32": f32_instr, "bf16": "vdpbf16ps zmm"}
    for dtype_name in ("f32", "bf16"):
        if dtype_name == "bf16" and isa != "avx512_bf16":
            rows.append({"what": "core peak bf16", "note": f"no bf16 instruction at ISA {isa}"})
            continue
        iters = 10_000_000 if quick else 50_000_000
        core = max(_core.core_peak_gflops(dtype_name, iters) for _ in range(3 if quick else 7))
        limits[f"core_{dtype_name}_gflops"] = core
        rows.append({"what": f"core peak {dtype_name} ({instr[dtype_name]})", "GFLOP/s": core})
        rows.append({"what": f"gemm {dtype_name} peak / core peak", "fraction": peaks[dtype_name] / core})
    print_table(rows, ["what", "GB/s", "GFLOP/s", "torch GFLOP/s", "ours/torch", "fraction", "note"])
    print("limits:", json.dumps({k: round(v, 1) for k, v in limits.items()}))
    save_results("machine", rows, extra={"limits": limits, "quick": quick})
    return limits


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    measure(quick=args.quick, threads=args.threads)


if __name__ == "__main__":
    main()
