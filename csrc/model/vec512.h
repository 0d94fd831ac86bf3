/*
 * vec512.h: 16-lane load/store of f32 or bf16 rows for the model's *_avx512.cpp files ONLY
 * (it uses AVX-512 intrinsics; baseline files must not include it).
 *
 * store16(bf16_t*) rounds exactly like kernels.h's to_bf16 (round to nearest even; NaN -> quiet
 * NaN keeping the top bits), so AVX-512 loops give bitwise the fallback's bf16 values.
 */
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "runtime/bf16.h"

namespace hf::model::v512 {

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const bf16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(bf16_t* p, __m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i hi = _mm512_srli_epi32(b, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}

}  // namespace hf::model::v512
