/*
 * peak_avx512bf16.cpp: the bf16 dot-product peak loop, vdpbf16ps on zmm (see peak.h).
 *
 * Each instruction takes 32 bf16 pairs and adds each adjacent pair's two products into one of
 * 16 f32 lanes: 4 flops per lane, 64 per instruction. a = 1 and b = 2^-10 in bf16, so every
 * accumulator grows by 2^-9 per step and stays finite for any iteration count we run.
 */
#include <immintrin.h>

#include "runtime/peak.h"

namespace hf::peak_detail {

double bf16_avx512bf16(int64_t iters) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(float(c));
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3a80);  // bf16 2^-10
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * kChains * 16 * 4;
}

}  // namespace hf::peak_detail
