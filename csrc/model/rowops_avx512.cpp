/*
 * rowops_avx512.cpp: the AVX-512 versions of the model's row helpers (kernels.h):
 * exp(x - shift) in place (softmax), sigmoid (SwiGLU), max and sum of a row, and the softmax
 * gradient's scale-and-round to bf16 (bitwise the scalar to_bf16(x * s)).
 *
 * Same fast_exp as kernels.h (clamp, round-to-nearest via 1.5*2^23, Cody-Waite, degree-6
 * polynomial), 16 lanes at a time; the clamp maps to vminps/vmaxps, which the compiler will not
 * emit from the scalar code without -ffinite-math-only. Picked at run time when
 * hf::active_isa() >= avx512 (see linear.cpp); the SSE2 versions remain the fallback.
 */
// GCC 12 warns inside its own headers (_mm512_undefined_* in the masked intrinsics).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>

#include "model/kernels.h"
#include "model/vec512.h"

namespace hf::model {
namespace {

inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 big = _mm512_set1_ps(12582912.0f);
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), big), big);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// Horizontal reductions through memory (GCC 12's _mm512_reduce_* trip -Wmaybe-uninitialized).
inline float hmax(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  float m = t[0];
  for (int i = 1; i < 16; ++i) m = t[i] > m ? t[i] : m;
  return m;
}
inline float hsum(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  float s = 0.0f;
  for (int i = 0; i < 16; ++i) s += t[i];
  return s;
}

inline __mmask16 tail_mask(int64_t left) { return __mmask16((1u << left) - 1u); }

}  // namespace

void exp_shift_inplace_avx512(float* x, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(x + j, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + j), s)));
  if (j < n) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_storeu_ps(x + j, m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), s)));
  }
}

void sigmoid_row_avx512(const float* g, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_ps(out + j, _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(zero, _mm512_loadu_ps(g + j))))));
  if (j < n) {
    const __mmask16 m = tail_mask(n - j);
    const __m512 v = _mm512_maskz_loadu_ps(m, g + j);
    _mm512_mask_storeu_ps(out + j, m, _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(zero, v)))));
  }
}

float row_max_avx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + j));
  if (j < n) m = _mm512_mask_max_ps(m, tail_mask(n - j), m, _mm512_maskz_loadu_ps(tail_mask(n - j), x + j));
  return hmax(m);
}

float row_sum_avx512(const float* x, int64_t n) {
  __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    a = _mm512_add_ps(a, _mm512_loadu_ps(x + j));
    b = _mm512_add_ps(b, _mm512_loadu_ps(x + j + 16));
  }
  for (; j + 16 <= n; j += 16) a = _mm512_add_ps(a, _mm512_loadu_ps(x + j));
  if (j < n) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(tail_mask(n - j), x + j));
  return hsum(_mm512_add_ps(a, b));
}

void scale_row_to_bf16_avx512(const float* x, float s, bf16_t* out, int64_t n) {
  const __m512 sv = _mm512_set1_ps(s);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) v512::store16(out + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), sv));
  for (; j < n; ++j) out[j] = to_bf16(x[j] * s);
}

}  // namespace hf::model
