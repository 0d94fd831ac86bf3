/*
 * rope_avx512.cpp: the AVX-512 row loops of rope.cpp (RoPE rotation of `heads` heads of D values,
 * and the f32 -> bf16 cast of the v part), 16 lanes at a time.
 *
 *   forward   out[i] = x[i]*cos - x[i+D/2]*sin,   out[i+D/2] = x[i+D/2]*cos + x[i]*sin
 *   backward  out[i] = g[i]*cos + g[i+D/2]*sin,   out[i+D/2] = g[i+D/2]*cos - g[i]*sin
 *
 * The SSE2 loops in rope.cpp run 4 lanes; at nano size (12 layers x 1024 rows x 2304 values) the
 * forward pass was compute-bound (~13 ms, several times its memory traffic). Same operations in
 * the same order as the scalar code (two products then one add/sub; no FMA contraction) and the
 * same round-to-nearest-even bf16 conversion as kernels.h's to_bf16, so results are bitwise equal
 * to the fallback's. Called only when half = D/2 is a multiple of 16.
 */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
// After the intrinsic headers: keep a*c - b*s as two roundings, as the SSE2 fallback computes it.
#pragma GCC optimize("fp-contract=off")

#include <cstdint>

#include "model/kernels.h"
#include "model/vec512.h"

namespace hf::model {
namespace {

using v512::load16;
using v512::store16;

// Forward: the rotation; otherwise its transpose (angle -> -angle).
template <bool Forward, class In, class Out>
inline void rotate_heads(const In* x, Out* out, const float* c, const float* s, int64_t heads, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < heads; ++h) {
    const In* xh = x + h * D;
    Out* oh = out + h * D;
    for (int64_t i = 0; i < half; i += 16) {
      const __m512 a = load16(xh + i), b = load16(xh + i + half);
      const __m512 cv = _mm512_loadu_ps(c + i), sv = _mm512_loadu_ps(s + i);
      if (Forward) {
        store16(oh + i, _mm512_sub_ps(_mm512_mul_ps(a, cv), _mm512_mul_ps(b, sv)));
        store16(oh + i + half, _mm512_add_ps(_mm512_mul_ps(b, cv), _mm512_mul_ps(a, sv)));
      } else {
        store16(oh + i, _mm512_add_ps(_mm512_mul_ps(a, cv), _mm512_mul_ps(b, sv)));
        store16(oh + i + half, _mm512_sub_ps(_mm512_mul_ps(b, cv), _mm512_mul_ps(a, sv)));
      }
    }
  }
}

}  // namespace

void rope_heads_fwd_avx512(const float* x, float* out, const float* c, const float* s, int64_t heads, int64_t D) {
  rotate_heads<true>(x, out, c, s, heads, D);
}
void rope_heads_fwd_avx512(const float* x, bf16_t* out, const float* c, const float* s, int64_t heads, int64_t D) {
  rotate_heads<true>(x, out, c, s, heads, D);
}
void rope_heads_bwd_avx512(const float* g, float* out, const float* c, const float* s, int64_t heads, int64_t D) {
  rotate_heads<false>(g, out, c, s, heads, D);
}
void rope_heads_bwd_avx512(const bf16_t* g, bf16_t* out, const float* c, const float* s, int64_t heads, int64_t D) {
  rotate_heads<false>(g, out, c, s, heads, D);
}

// dst (n) = bf16(src (n)); n a multiple of 16.
void cast_row_bf16_avx512(const float* src, bf16_t* dst, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) store16(dst + j, _mm512_loadu_ps(src + j));
}

}  // namespace hf::model
