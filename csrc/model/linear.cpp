/*
 * linear.cpp: the model's linear layers as calls to hf::gemm over all B*T tokens at once, and the
 * f32 -> bf16 cast used to make the once-per-step bf16 copies of the master weights.
 *
 *   forward          y (N, out)  = x (N, in) @ W^T           gemm(M=N, N=out, K=in, trans_b)
 *   backward input   dx (N, in)  = dy (N, out) @ W            gemm(M=N, N=in, K=out)
 *   backward weight  dW (out,in) += dy^T (out, N) @ x (N, in)  gemm(M=out, N=in, K=N, trans_a, beta=1)
 *
 * One big GEMM per projection keeps oneDNN near its peak; the weight gradient accumulates in
 * place (beta = 1) into the flat f32 gradient buffer, so no temporary and no extra add pass.
 */
#include <emmintrin.h>

#include "model/kernels.h"
#include "runtime/cpu_features.h"
#include "runtime/parallel.h"

namespace hf::model {

namespace {

// fast_exp (kernels.h) on 4 lanes: same constants, same rounding, so results equal the scalar's.
inline __m128 exp4(__m128 x) {
  x = _mm_min_ps(_mm_max_ps(x, _mm_set1_ps(-87.0f)), _mm_set1_ps(88.0f));
  const __m128 big = _mm_set1_ps(12582912.0f);
  const __m128 n = _mm_sub_ps(_mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(1.44269504088896341f)), big), big);
  __m128 r = _mm_sub_ps(x, _mm_mul_ps(n, _mm_set1_ps(0.693359375f)));
  r = _mm_add_ps(r, _mm_mul_ps(n, _mm_set1_ps(2.12194440e-4f)));
  __m128 p = _mm_set1_ps(1.9875691500e-4f);
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.3981999507e-3f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(8.3334519073e-3f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(4.1665795894e-2f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.6666665459e-1f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(5.0000001201e-1f));
  p = _mm_add_ps(_mm_add_ps(_mm_mul_ps(_mm_mul_ps(p, r), r), r), _mm_set1_ps(1.0f));
  const __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(n), _mm_set1_epi32(127)), 23);
  return _mm_mul_ps(p, _mm_castsi128_ps(e));
}

}  // namespace

// AVX-512 versions (rowops_avx512.cpp), used when the CPU and the ISA limit allow.
void exp_shift_inplace_avx512(float* x, int64_t n, float shift);
void sigmoid_row_avx512(const float* g, float* out, int64_t n);
float row_max_avx512(const float* x, int64_t n);
float row_sum_avx512(const float* x, int64_t n);
void scale_row_to_bf16_avx512(const float* x, float s, bf16_t* out, int64_t n);

static bool use_avx512() { return active_isa() >= Isa::avx512; }

void exp_shift_inplace(float* x, int64_t n, float shift) {
  if (use_avx512()) return exp_shift_inplace_avx512(x, n, shift);
  const __m128 s = _mm_set1_ps(shift);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) _mm_storeu_ps(x + j, exp4(_mm_sub_ps(_mm_loadu_ps(x + j), s)));
  for (; j < n; ++j) x[j] = fast_exp(x[j] - shift);
}

void sigmoid_row_f32(const float* g, float* s, int64_t n) {
  if (use_avx512()) return sigmoid_row_avx512(g, s, n);
  const __m128 one = _mm_set1_ps(1.0f), zero = _mm_setzero_ps();
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    _mm_storeu_ps(s + j, _mm_div_ps(one, _mm_add_ps(one, exp4(_mm_sub_ps(zero, _mm_loadu_ps(g + j))))));
  for (; j < n; ++j) s[j] = 1.0f / (1.0f + fast_exp(-g[j]));
}

#define HF_REASSOC __attribute__((optimize("-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math", "-ffinite-math-only")))

HF_REASSOC static float row_max_generic(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

HF_REASSOC static float row_sum_generic(const float* x, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}

void scale_row_to_bf16(const float* x, float s, bf16_t* out, int64_t n) {
  if (use_avx512()) return scale_row_to_bf16_avx512(x, s, out, n);
  for (int64_t j = 0; j < n; ++j) out[j] = to_bf16(x[j] * s);
}

float row_max(const float* x, int64_t n) { return use_avx512() ? row_max_avx512(x, n) : row_max_generic(x, n); }
float row_sum(const float* x, int64_t n) { return use_avx512() ? row_sum_avx512(x, n) : row_sum_generic(x, n); }

HF_REASSOC float row_sumsq(const float* x, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

HF_REASSOC float row_dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void cast_f32_to_bf16(const float* src, bf16_t* dst, int64_t n) {
  parallel_for(0, n, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) dst[i] = to_bf16(src[i]);
  });
}

void linear_forward(const void* x, const void* W, int64_t N, int64_t in, int64_t out, DType ab, void* y, DType ct,
                    float beta) {
  GemmShape s;
  s.M = N;
  s.N = out;
  s.K = in;
  s.trans_b = true;
  s.ab_type = ab;
  s.c_type = ct;
  s.beta = beta;
  gemm(s, x, W, y);
}

void linear_backward_input(const void* dy, const void* W, int64_t N, int64_t in, int64_t out, DType ab, void* dx,
                           DType ct, float beta) {
  GemmShape s;
  s.M = N;
  s.N = in;
  s.K = out;
  s.ab_type = ab;
  s.c_type = ct;
  s.beta = beta;
  gemm(s, dy, W, dx);
}

void linear_backward_weight(const void* dy, const void* x, int64_t N, int64_t in, int64_t out, DType ab, float* dW,
                            float beta, int64_t ld_dy) {
  GemmShape s;
  s.M = out;
  s.N = in;
  s.K = N;
  s.trans_a = true;
  s.lda = ld_dy;
  s.ab_type = ab;
  s.c_type = DType::f32;
  s.beta = beta;
  gemm(s, dy, x, dW);
}

}  // namespace hf::model
