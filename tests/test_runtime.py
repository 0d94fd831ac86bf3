"""The foundation: import, runtime facts, threads shared by oneDNN and our kernels, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import homeforge
from homeforge import _core

REPO = Path(__file__).resolve().parents[1]


def test_imports_from_outside_the_source_tree(tmp_path):
    # A fresh interpreter in an unrelated directory, without our PYTHONPATH tweaks beyond what the
    # environment gives, must import homeforge and load oneDNN/oneTBB on its own.
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    # Where the package under test lives: site-packages when installed, python/ in a dev build.
    env["PYTHONPATH"] = str(Path(homeforge.__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", "import homeforge, json; print(json.dumps(homeforge.runtime_info()))"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert '"onednn_cpu_runtime": "TBB"' in out.stdout


def test_runtime_info_keys_and_values():
    info = homeforge.runtime_info()
    for key in ("version", "onednn_version", "onednn_cpu_runtime", "tbb_version", "isa", "num_threads"):
        assert key in info, key
    assert info["version"] == homeforge.__version__
    assert int(info["onednn_version"].split(".")[0]) == 3
    assert info["onednn_cpu_runtime"] == "TBB"
    assert info["tbb_version"].startswith("20")
    assert info["isa"] in ("scalar", "avx2", "avx512", "avx512_bf16")
    assert info["num_threads"] == homeforge.get_num_threads() >= 1


def test_isa_matches_cpuinfo():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expected = "scalar"
    if {"avx2", "fma", "bmi2"} <= flags:
        expected = "avx2"
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        expected = "avx512"
        if "avx512_bf16" in flags:
            expected = "avx512_bf16"
    assert homeforge.runtime_info()["isa"] == expected


def test_isa_limit_lowers_active_isa(restore_threads):
    _core.set_isa_limit("avx2")
    assert _core.active_isa() in ("scalar", "avx2")
    with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
        _core.set_isa_limit("sse9")


@pytest.mark.parametrize("what", ["matmul", "parallel_for"])
def test_set_num_threads_governs_onednn_and_our_kernels(what, restore_threads):
    homeforge.set_num_threads(1)
    assert homeforge.get_num_threads() == 1
    assert _core._threads_seen(what, 512 if what == "matmul" else 256) == 1
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("needs 2 cores to see a second thread join")
    homeforge.set_num_threads(2)
    seen = 0
    for _ in range(20):  # a worker may be slow to wake on a busy machine; it must join at some point
        seen = max(seen, _core._threads_seen(what, 1024 if what == "matmul" else 4096))
        if seen == 2:
            break
        time.sleep(0.05)
    assert seen == 2


def test_set_num_threads_rejects_bad_values(restore_threads):
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        homeforge.set_num_threads(0)
    with pytest.raises(TypeError, match="must be an int"):
        homeforge.set_num_threads(2.5)
    for n in (5000, 2**32 + 1, 2**40):  # also past the binding's int range: still a ValueError
        with pytest.raises(ValueError, match="not a plausible thread count"):
            homeforge.set_num_threads(n)
    homeforge.set_num_threads(np.int64(1))  # numpy integers are integers
    assert homeforge.get_num_threads() == 1


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 13, 5), (64, 48, 33), (257, 129, 100)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
def test_gemm_matches_float64(M, N, K, trans_a, trans_b, rng):
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    c = rng.standard_normal((M, N)).astype(np.float32)
    ref = 0.5 * ((a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)) + c.astype(np.float64)
    _core.gemm(a, b, c, trans_a=trans_a, trans_b=trans_b, alpha=0.5, beta=1.0)
    np.testing.assert_allclose(c, ref, rtol=1e-5, atol=1e-5 * K)


def test_gemm_bf16_and_batched_broadcast(rng):
    import ml_dtypes

    a = rng.standard_normal((3, 17, 40)).astype(ml_dtypes.bfloat16)
    w = rng.standard_normal((24, 40)).astype(ml_dtypes.bfloat16)  # [out, in], broadcast over the batch
    out = np.zeros((3, 17, 24), np.float32)
    _core.gemm(a, w, out, trans_b=True)
    ref = a.astype(np.float64) @ w.astype(np.float64).T  # products of bf16 values are exact in f32/f64
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


def test_bad_calls_raise_clear_errors(rng):
    a = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"shapes do not match: a \(4, 5\), b \(6, 3\), out \(4, 3\)"):
        _core.gemm(a, np.zeros((6, 3), np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="must be float32 or bfloat16.*float64"):
        _core.gemm(a.astype(np.float64), a, a)
    with pytest.raises(TypeError, match="must be a numpy array, got list"):
        _core.gemm([[1.0]], a, a)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.gemm(np.zeros((5, 4), np.float32).T, np.zeros((5, 3), np.float32), np.zeros((4, 3), np.float32))
    ro = np.zeros((4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        _core.gemm(a, np.zeros((5, 3), np.float32), ro)


def test_serial_backend_gives_identical_results(restore_threads):
    n = 1 << 20
    a, b, c = np.arange(n, dtype=np.float64), np.ones(n), np.zeros(n)
    _core.stream_triad(c, a, b, 2.0)
    _core.set_serial_backend(True)
    assert _core.serial_backend()
    c2 = np.zeros(n)
    _core.stream_triad(c2, a, b, 2.0)
    assert np.array_equal(c, c2)
    np.testing.assert_array_equal(c, a + 2.0 * b)


@pytest.mark.parametrize("isa", ["avx512_bf16", "avx512", "avx2", "scalar"])
def test_core_peak_is_positive_finite_at_every_isa(isa, restore_threads):
    # Register-only loops; no timing is asserted, only that each ISA path runs and reports a rate.
    _core.set_isa_limit(isa)
    for threads in (1, 2):
        _core.set_num_threads(threads)
        f32 = _core.core_peak_gflops("f32", 20_000)
        assert np.isfinite(f32) and f32 > 0
        if _core.active_isa() == "avx512_bf16":
            bf16 = _core.core_peak_gflops("bf16", 20_000)
            assert np.isfinite(bf16) and bf16 > 0
        else:
            with pytest.raises(ValueError, match="'bf16' needs AVX512_BF16"):
                _core.core_peak_gflops("bf16", 20_000)


def test_core_peak_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind must be 'f32' or 'bf16', got 'f64'"):
        _core.core_peak_gflops("f64", 1000)
    for iters in (0, -5):
        with pytest.raises(ValueError, match="iters must be in"):
            _core.core_peak_gflops("f32", iters)
    with pytest.raises(TypeError):
        _core.core_peak_gflops("f32", "many")
