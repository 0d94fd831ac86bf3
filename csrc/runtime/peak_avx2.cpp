/*
 * peak_avx2.cpp: the f32 FMA peak loop on ymm registers (see peak.h); the AVX2 fallback.
 */
#include <immintrin.h>

#include "runtime/peak.h"

namespace hf::peak_detail {

double f32_avx2(int64_t iters) {
  // 16 ymm registers in AVX2: 12 chains plus the two constants fit without spilling.
  constexpr int kYmmChains = 12;
  __m256 acc[kYmmChains];
  for (int c = 0; c < kYmmChains; ++c) acc[c] = _mm256_set1_ps(float(c));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kYmmChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  __m256 s = acc[0];
  for (int c = 1; c < kYmmChains; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  volatile float sink = lanes[0] + lanes[7];
  (void)sink;
  return double(iters) * kYmmChains * 8 * 2;
}

}  // namespace hf::peak_detail
