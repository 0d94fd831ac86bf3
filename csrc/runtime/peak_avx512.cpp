/*
 * peak_avx512.cpp: the f32 FMA peak loop on zmm registers (see peak.h).
 *
 * kChains accumulators acc = acc * a + b, each chain a serial dependency; the chains are
 * independent so the two 512-bit FMA pipes stay full. Values stay bounded (a < 1) so no lane
 * turns into inf/denormal, which could slow some cores down.
 */
#include <immintrin.h>

#include "runtime/peak.h"

namespace hf::peak_detail {

double f32_avx512(int64_t iters) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(float(c));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  volatile float sink = _mm512_reduce_add_ps(s);  // keep the chains live
  (void)sink;
  return double(iters) * kChains * 16 * 2;
}

}  // namespace hf::peak_detail
