/*
 * peak.h: the core's arithmetic peak, measured with register-only instruction loops.
 *
 * oneDNN's best GEMM rate (benchmarks/bench_machine.py) is what our kernels are compared
 * against; this is the number above it: how many flops the FMA / dot-product units retire when
 * nothing waits on memory. Each thread of the shared arena runs kChains independent accumulator
 * chains (enough to cover the instruction's latency times the pipes that issue it) for `iters`
 * iterations; the rate is all threads' flops over the wall time of the region.
 *
 *   f32:  vfmadd231ps, zmm on AVX-512 (16 lanes), ymm on AVX2 (8 lanes), 2 flops per lane;
 *         SSE2 mulps + addps (4 lanes, 2 flops per lane) at the scalar baseline.
 *   bf16: vdpbf16ps zmm (AVX512_BF16): per f32 lane two bf16 products summed into the
 *         accumulator, 4 flops per lane. There is no bf16 instruction below AVX512_BF16, so
 *         asking for it there is a ValueError.
 */
#pragma once
#include <cstdint>
#include <string>

namespace hf {

// GFLOP/s of all num_threads() threads together. kind is "f32" or "bf16"; iters >= 1 is the
// loop count per thread (each iteration issues one instruction per chain).
double core_peak_gflops(const std::string& kind, int64_t iters);

namespace peak_detail {
constexpr int kChains = 16;  // 16 independent accumulators: FMA latency 4 x 2 pipes = 8 in flight, with margin
// Each runs `iters` iterations on the calling thread and returns the flops it performed.
double f32_avx2(int64_t iters);
double f32_avx512(int64_t iters);
double bf16_avx512bf16(int64_t iters);
}  // namespace peak_detail

}  // namespace hf
