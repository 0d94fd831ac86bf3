/*
 * attention_avx512.cpp: AVX-512 microkernels for the attention tile driver (attention_impl.inc).
 *
 *   qk:        S (M x 64) = A (M x K) . Bt (K x 64)      scores Q.K^T and dP = dO.V^T
 *   gemm_acc:  C (rows x Dp) += A (rows x K) . B (K x Dp)  P.V, dV += P^T.dO, dK += dS^T.Q, dQ += dS.K
 *   row_exp2:  p = 2^(s*c - m) by a degree-7 polynomial after range reduction, vscalefps for 2^n
 *
 * Both products are register blocked: qk keeps a 6 x 64 block of S in 24 zmm accumulators and
 * per k loads 4 vectors of Bt and broadcasts 6 elements of A (24 FMAs per 4 loads + 6
 * broadcasts); gemm_acc keeps R rows x NV vectors of C (R*NV <= 24) and per k loads NV vectors of
 * B and broadcasts R elements of A, A's strides letting the same kernel read P or P^T. Packed
 * rows are padded to 16 floats, so there are no masked loads. A 64-key block is 16 KiB of f32 at
 * D = 64, so the tiles of one work item stay in L1/L2; why not oneDNN per tile: at these sizes
 * (M x 64 x D with M ~ 64) a primitive call costs microseconds of dispatch for ~0.5 MFLOP.
 */
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "attention/attention_kernels.h"

namespace hf::attn::avx512 {

template <int R>
static inline void qk_rows(const float* A, int64_t lda, const float* Bt, int64_t K, float* S) {
  __m512 acc[R][4];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* b = Bt + k * kBk;
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32),
                 b3 = _mm512_load_ps(b + 48);
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(A[i * lda + k]);
      acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(a, b2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(a, b3, acc[i][3]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j) _mm512_store_ps(S + i * kBk + j * 16, acc[i][j]);
}

static inline void qk(const float* A, int64_t lda, int64_t M, const float* Bt, int64_t K, float* S) {
  int64_t r = 0;
  for (; r + 6 <= M; r += 6) qk_rows<6>(A + r * lda, lda, Bt, K, S + r * kBk);
  switch (M - r) {
    case 5: qk_rows<5>(A + r * lda, lda, Bt, K, S + r * kBk); break;
    case 4: qk_rows<4>(A + r * lda, lda, Bt, K, S + r * kBk); break;
    case 3: qk_rows<3>(A + r * lda, lda, Bt, K, S + r * kBk); break;
    case 2: qk_rows<2>(A + r * lda, lda, Bt, K, S + r * kBk); break;
    case 1: qk_rows<1>(A + r * lda, lda, Bt, K, S + r * kBk); break;
    default: break;
  }
}

template <int R, int NV>
static inline void acc_block(const float* A, int64_t ars, int64_t aks, int64_t K, const float* Bm, int64_t Dp,
                             float* C) {
  // The K terms are summed in fresh registers and then added to C once: two-level summation,
  // so that long accumulations (dV, dK over all queries) lose no more than a tile's rounding.
  __m512 acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* b = Bm + k * Dp;
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + v * 16);
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(A[i * ars + k * aks]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(C + i * Dp + v * 16, _mm512_add_ps(_mm512_load_ps(C + i * Dp + v * 16), acc[i][v]));
}

// All rows of one column chunk of NV vectors, R rows at a time (R * NV <= 24 accumulators).
template <int NV>
static inline void acc_cols(const float* A, int64_t ars, int64_t aks, int64_t rows, int64_t K, const float* Bm,
                            int64_t Dp, float* C) {
  constexpr int R = NV >= 7 ? 3 : NV >= 5 ? 4 : NV >= 3 ? 6 : 8;
  int64_t i = 0;
  for (; i + R <= rows; i += R) acc_block<R, NV>(A + i * ars, ars, aks, K, Bm, Dp, C + i * Dp);
  for (; i < rows; ++i) acc_block<1, NV>(A + i * ars, ars, aks, K, Bm, Dp, C + i * Dp);
}

static inline void gemm_acc(const float* A, int64_t ars, int64_t aks, int64_t rows, int64_t K, const float* Bm,
                            int64_t Dp, float* C) {
  for (int64_t c0 = 0; c0 < Dp; c0 += 128) {
    const int64_t nv = (Dp - c0) / 16 < 8 ? (Dp - c0) / 16 : 8;
    const float* b = Bm + c0;
    float* c = C + c0;
    switch (nv) {
      case 8: acc_cols<8>(A, ars, aks, rows, K, b, Dp, c); break;
      case 7: acc_cols<7>(A, ars, aks, rows, K, b, Dp, c); break;
      case 6: acc_cols<6>(A, ars, aks, rows, K, b, Dp, c); break;
      case 5: acc_cols<5>(A, ars, aks, rows, K, b, Dp, c); break;
      case 4: acc_cols<4>(A, ars, aks, rows, K, b, Dp, c); break;
      case 3: acc_cols<3>(A, ars, aks, rows, K, b, Dp, c); break;
      case 2: acc_cols<2>(A, ars, aks, rows, K, b, Dp, c); break;
      default: acc_cols<1>(A, ars, aks, rows, K, b, Dp, c); break;
    }
  }
}

// 2^x: n = round(x), f = x - n in [-1/2, 1/2], 2^f by a degree-7 polynomial (rel. error < 6e-9),
// then vscalefps multiplies by 2^n, underflowing smoothly to 0 (x is clamped to >= -150 so that
// -inf never makes inf - inf).
static inline __m512 exp2_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-150.f));
  x = _mm512_min_ps(x, _mm512_set1_ps(127.f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.525273380405984e-05f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530393381608e-04f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129107628477e-03f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866482158e-02f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265069591007e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471805599453e-01f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

// a * b + c with one rounding, as the FMAs of qk.
static inline float madd(float a, float b, float c) { return __builtin_fmaf(a, b, c); }

static inline float row_max(const float* s, int64_t n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(s + j));
  if (j < n) {
    const __mmask16 k = __mmask16((1u << (n - j)) - 1);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, s + j));
  }
  return _mm512_reduce_max_ps(m);
}

static inline float row_exp2(const float* s, int64_t n, float c, float m, float* p) {
  const __m512 vc = _mm512_set1_ps(c), vm = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < kBk; j += 16) {
    const int64_t left = n - j;
    const __mmask16 k = left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
    const __m512 e = _mm512_maskz_mov_ps(k, exp2_ps(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vc, vm)));
    _mm512_storeu_ps(p + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// dst (16 x 16, row stride ldd) = transpose of src (16 x 16, row stride lds), in registers:
// unpack pairs of rows, shuffle to 4 x 4 blocks within 128-bit lanes, then two rounds of lane
// shuffles (64 shuffles for 256 elements instead of 256 scattered scalar stores).
static inline void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  // u[4k + c], lane l: column 4l + c of rows 4k .. 4k+3
  for (int k = 0; k < 4; ++k) {
    r[4 * k + 0] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
    r[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
    r[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
    r[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 v0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), v1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
    const __m512 w0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88), w1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
    _mm512_storeu_ps(dst + (0 + c) * ldd, _mm512_shuffle_f32x4(v0, w0, 0x88));
    _mm512_storeu_ps(dst + (8 + c) * ldd, _mm512_shuffle_f32x4(v0, w0, 0xDD));
    _mm512_storeu_ps(dst + (4 + c) * ldd, _mm512_shuffle_f32x4(v1, w1, 0x88));
    _mm512_storeu_ps(dst + (12 + c) * ldd, _mm512_shuffle_f32x4(v1, w1, 0xDD));
  }
}

#include "attention/attention_impl.inc"

}  // namespace hf::attn::avx512
