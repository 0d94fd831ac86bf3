/*
 * peak.cpp: run the peak loops (peak_*.cpp) on every thread of the arena at once and time them.
 *
 * parallel_for over [0, num_threads()) with grain 1 hands one chain set to each chunk. A spin
 * barrier makes the chunks start together; if the pool runs two chunks on one thread (a worker
 * did not wake in time) the barrier gives up after 0.2 s and the chunk runs late, which can only
 * lower the figure, never inflate it. GFLOP/s = all chunks' flops / (last end - first start).
 */
#include "runtime/peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "runtime/cpu_features.h"
#include "runtime/errors.h"
#include "runtime/parallel.h"

namespace hf {
namespace {

using Clock = std::chrono::steady_clock;

// Baseline fallback: SSE2 (4-lane) multiply + add written with GCC vector extensions, which the
// x86-64 baseline compiles to mulps/addps without intrinsics.
typedef float v4f __attribute__((vector_size(16)));

double f32_sse2(int64_t iters) {
  constexpr int kSseChains = 8;  // 8 of the 16 xmm registers
  v4f acc[kSseChains];
  for (int c = 0; c < kSseChains; ++c) acc[c] = v4f{float(c), float(c), float(c), float(c)};
  const v4f a = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, b = {1e-6f, 1e-6f, 1e-6f, 1e-6f};
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 8
    for (int c = 0; c < kSseChains; ++c) acc[c] = acc[c] * a + b;
  }
  v4f s = acc[0];
  for (int c = 1; c < kSseChains; ++c) s += acc[c];
  volatile float sink = s[0] + s[3];
  (void)sink;
  return double(iters) * kSseChains * 4 * 2;
}

}  // namespace

double core_peak_gflops(const std::string& kind, int64_t iters) {
  HF_CHECK(kind == "f32" || kind == "bf16", ValueError, "core_peak_gflops: kind must be 'f32' or 'bf16', got '" << kind << "'");
  HF_CHECK(iters >= 1 && iters <= (int64_t(1) << 40), ValueError,
           "core_peak_gflops: iters must be in [1, 2^40], got " << iters);
  const Isa isa = active_isa();
  double (*loop)(int64_t) = nullptr;
  if (kind == "bf16") {
    HF_CHECK(isa >= Isa::avx512_bf16, ValueError,
             "core_peak_gflops: 'bf16' needs AVX512_BF16 (vdpbf16ps); the active ISA is " << isa_name(isa));
    loop = &peak_detail::bf16_avx512bf16;
  } else {
    loop = isa >= Isa::avx512 ? &peak_detail::f32_avx512 : isa >= Isa::avx2 ? &peak_detail::f32_avx2 : &f32_sse2;
  }
  const int n = num_threads();
  std::vector<double> flops(n, 0.0);
  std::vector<Clock::time_point> start(n), end(n);
  std::atomic<int> arrived{0};
  parallel_for(0, n, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      arrived.fetch_add(1);
      const auto give_up = Clock::now() + std::chrono::milliseconds(200);
      while (arrived.load() < n && Clock::now() < give_up) {
      }
      start[t] = Clock::now();
      flops[t] = loop(iters);
      end[t] = Clock::now();
    }
  });
  const auto t0 = *std::min_element(start.begin(), start.end());
  const auto t1 = *std::max_element(end.begin(), end.end());
  double total = 0.0;
  for (double f : flops) total += f;
  const double seconds = std::chrono::duration<double>(t1 - t0).count();
  return seconds > 0 ? total / seconds / 1e9 : 0.0;
}

}  // namespace hf
