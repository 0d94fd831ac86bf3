/*
 * attention_avx512bf16.cpp: attention forward and backward for bf16 inputs on CPUs with AVX512_BF16.
 *
 * Every tile product runs on vdpbf16ps (32 multiply-adds per instruction, 16 lanes x a pair, into
 * f32 accumulators: twice the FMA rate of the f32 kernels), the operand whose pair is broadcast
 * being "A" and the one loaded as vectors "B". A pair is two bf16 along the reduction dimension:
 *
 *   forward   S (M x 64)   = Q . K^T      A: Q rows (pairs of d)        B: K^T, Kp (D/2 x 64 pairs)
 *             O (M x D)   += P . V        A: P rows -> bf16 (pairs of j) B: V, key pairs (32 x D)
 *   backward  S, dP (M x 64) = Q . K^T, dO . V^T      as the forward's S (S bit for bit)
 *             dV (64 x D) += P^T . dO     A: P, row pairs interleaved (M/2 x 64 pairs)  B: dO, row pairs (M/2 x D)
 *             dK (64 x D) += dS^T . Q     A: dS, row pairs interleaved                  B: Q, row pairs
 *             dQ (M x D)  += dS . K       A: dS rows -> bf16 (pairs of j)               B: K, key pairs (32 x D)
 *
 * The softmax, P = 2^(S - lse), dS = P (dP - D) and all accumulators stay in f32; P and dS are
 * rounded to bf16 once per tile for the products, as FlashAttention's bf16 kernels do (the
 * tests hold every error within 2x torch's own bf16 error). Products of bf16 are exact in f32, so
 * the rounding is only in the f32 sums. Transposed pairs (Kp) come from 16 x 16 transposes of
 * 32-bit pairs; interleaved pairs from vpermt2w / vpermw. The head dim is padded to Dq = a
 * multiple of 32 with zeros. Work items, loop orders and prefetches are attention_impl.inc's
 * (the one-pass backward takes kGroup = 2 key blocks per pass over the query blocks).
 * D = rowsum(dO * O) is formed with the same vdpbf16ps sequence as one lane of dP = dO . V^T, so
 * dP - D cancels exactly where P is one-hot (see dvec_items in attention_impl.inc).
 * float32 inputs use the AVX-512 f32 tile driver (attention_impl.inc), compiled here as *_f32.
 */
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "attention/attention_kernels.h"

namespace hf::attn::avx512bf16 {

#include "attention/attention_avx512_kernels.inc"
#define HF_ATTN_NAME(x) x##_f32
#include "attention/attention_impl.inc"
#undef HF_ATTN_NAME

static inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

// S (M x 16*NV, row stride 64) = Q (M x 2*P pairs, row stride ldq u32) . Kp (P x 64 u32); NV < 4
// for the causal diagonal, whose rows see fewer keys.
template <int R, int NV>
static inline void qk_bf16_rows(const uint32_t* Q, int64_t ldq, const uint32_t* Kp, int64_t P, float* S) {
  __m512 acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < P; ++p) {
    const uint32_t* k = Kp + p * kBk;
    __m512bh kv[NV];
    for (int j = 0; j < NV; ++j) kv[j] = as_bh(_mm512_load_si512(k + 16 * j));
    for (int i = 0; i < R; ++i) {
      const __m512bh a = as_bh(_mm512_set1_epi32(int(Q[i * ldq + p])));
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a, kv[j]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) _mm512_store_ps(S + i * kBk + j * 16, acc[i][j]);
}

template <int NV>
static inline void qk_bf16_nv(const uint32_t* Q, int64_t ldq, int64_t M, const uint32_t* Kp, int64_t P, float* S) {
  int64_t r = 0;
  for (; r + 6 <= M; r += 6) qk_bf16_rows<6, NV>(Q + r * ldq, ldq, Kp, P, S + r * kBk);
  switch (M - r) {
    case 5: qk_bf16_rows<5, NV>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 4: qk_bf16_rows<4, NV>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 3: qk_bf16_rows<3, NV>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 2: qk_bf16_rows<2, NV>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 1: qk_bf16_rows<1, NV>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    default: break;
  }
}

// S columns 0 .. ncols rounded up to 16 (ncols <= 64); the others are left as they were.
static inline void qk_bf16(const uint32_t* Q, int64_t ldq, int64_t M, const uint32_t* Kp, int64_t P, float* S,
                           int64_t ncols = kBk) {
  switch ((ncols + 15) / 16) {
    case 1: qk_bf16_nv<1>(Q, ldq, M, Kp, P, S); break;
    case 2: qk_bf16_nv<2>(Q, ldq, M, Kp, P, S); break;
    case 3: qk_bf16_nv<3>(Q, ldq, M, Kp, P, S); break;
    default: qk_bf16_nv<4>(Q, ldq, M, Kp, P, S); break;
  }
}

// O (R rows x NV*16 cols, stride Dq) += Pb (R x JP pairs, stride 32 u32) . Vp (JP x Dq pairs)
// C (R rows x NV*16 cols, row stride ldc) += A (R x K pairs; pair (i, k) at A[i*ars + k*aks]) . Bm (K x NV*16
// pairs, row stride ldb). The K terms are summed in fresh registers and added to C once (two-level
// summation, as the f32 kernels: long accumulations such as dV over all queries lose no more than
// a tile's rounding). A's strides let the same kernel read P rows (ars = 32, aks = 1) or P^T from
// row-pair interleaved tiles (ars = 1, aks = 64).
template <int R, int NV>
static inline void bgemm_block(const uint32_t* A, int64_t ars, int64_t aks, int64_t K, const uint32_t* Bm, int64_t ldb,
                               float* C, int64_t ldc) {
  __m512 acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const uint32_t* b = Bm + k * ldb;
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = as_bh(_mm512_load_si512(b + v * 16));
    for (int i = 0; i < R; ++i) {
      const __m512bh a = as_bh(_mm512_set1_epi32(int(A[i * ars + k * aks])));
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, bv[v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v)
      _mm512_store_ps(C + i * ldc + v * 16, _mm512_add_ps(_mm512_load_ps(C + i * ldc + v * 16), acc[i][v]));
}

// All rows of one column chunk of NV vectors: R rows at a time (R * NV <= 24 accumulators), the
// remainder in one block of its own height (not row by row, which would reload B per row).
template <int NV>
static inline void bgemm_cols(const uint32_t* A, int64_t ars, int64_t aks, int64_t rows, int64_t K, const uint32_t* Bm,
                              int64_t ldb, float* C, int64_t ldc) {
  constexpr int R = NV >= 4 ? 6 : 8;
  int64_t i = 0;
  for (; i + R <= rows; i += R) bgemm_block<R, NV>(A + i * ars, ars, aks, K, Bm, ldb, C + i * ldc, ldc);
  const uint32_t* a = A + i * ars;
  float* c = C + i * ldc;
  switch (rows - i) {  // < R <= 8
    case 7: bgemm_block<7, NV>(a, ars, aks, K, Bm, ldb, c, ldc); break;
    case 6: bgemm_block<6, NV>(a, ars, aks, K, Bm, ldb, c, ldc); break;
    case 5: bgemm_block<5, NV>(a, ars, aks, K, Bm, ldb, c, ldc); break;
    case 4: bgemm_block<4, NV>(a, ars, aks, K, Bm, ldb, c, ldc); break;
    case 3: bgemm_block<3, NV>(a, ars, aks, K, Bm, ldb, c, ldc); break;
    case 2: bgemm_block<2, NV>(a, ars, aks, K, Bm, ldb, c, ldc); break;
    case 1: bgemm_block<1, NV>(a, ars, aks, K, Bm, ldb, c, ldc); break;
    default: break;
  }
}

// C (rows x Dq f32, row stride ldc) += A . Bm over K pairs; Dq (a multiple of 32) columns in chunks
// of 64 (NV = 4, R = 6: see gemm_acc in attention_avx512_kernels.inc for why not 128).
static inline void bgemm(const uint32_t* A, int64_t ars, int64_t aks, int64_t rows, int64_t K, const uint32_t* Bm,
                         int64_t ldb, int64_t Dq, float* C, int64_t ldc) {
  for (int64_t c0 = 0; c0 < Dq; c0 += 64) {
    if (Dq - c0 >= 64) bgemm_cols<4>(A, ars, aks, rows, K, Bm + c0, ldb, C + c0, ldc);
    else bgemm_cols<2>(A, ars, aks, rows, K, Bm + c0, ldb, C + c0, ldc);
  }
}

// n bf16 of src row to dst, zero padded to np (a multiple of 32).
static inline void copy_bf16_row(const uint16_t* src, int64_t n, int64_t np, uint16_t* dst) {
  for (int64_t d = 0; d < np; d += 32) {
    const int64_t left = n - d;
    const __mmask32 k = left >= 32 ? __mmask32(0xffffffffu) : left <= 0 ? __mmask32(0) : __mmask32((1u << left) - 1);
    _mm512_storeu_si512(dst + d, _mm512_maskz_loadu_epi16(k, src + d));
  }
}

// vpermt2w indices: pair i of the low half = (a[i], b[i]), of the high half = (a[16+i], b[16+i]);
// vpermw index for (lo[i], hi[i]) pairs of one vector whose words 0..15 are lo and 16..31 hi.
alignas(64) static const uint16_t kLoIdx[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) static const uint16_t kHiIdx[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
alignas(64) static const uint16_t kPairIdx[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                  8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// dst[i] = (a[i], b[i]) for i < np (np a multiple of 32): two bf16 rows as pairs; elements >= n and
// a missing row b (nullptr) are zero.
static inline void pair_bf16_rows(const uint16_t* a, const uint16_t* b, int64_t n, int64_t np, uint32_t* dst) {
  const __m512i vlo = _mm512_load_si512(kLoIdx), vhi = _mm512_load_si512(kHiIdx);
  for (int64_t d = 0; d < np; d += 32) {
    const int64_t left = n - d;
    const __mmask32 km = left >= 32 ? __mmask32(0xffffffffu) : left <= 0 ? __mmask32(0) : __mmask32((1u << left) - 1);
    const __m512i x = _mm512_maskz_loadu_epi16(km, a + d);
    const __m512i y = b ? _mm512_maskz_loadu_epi16(km, b + d) : _mm512_setzero_si512();
    _mm512_store_si512(dst + d, _mm512_permutex2var_epi16(x, vlo, y));
    _mm512_store_si512(dst + d + 16, _mm512_permutex2var_epi16(x, vhi, y));
  }
}

// 64 f32 of rows a and b (nullptr: zeros) rounded to bf16 (nearest even) as 64 pairs (a[j], b[j]).
static inline void pair_f32_rows(const float* a, const float* b, uint32_t* dst) {
  const __m512i idx = _mm512_load_si512(kPairIdx);
  for (int j = 0; j < kBk; j += 16) {
    const __m512 y = b ? _mm512_load_ps(b + j) : _mm512_setzero_ps();
    const __m512i x = (__m512i)_mm512_cvtne2ps_pbh(y, _mm512_load_ps(a + j));  // words: a[j..j+15], b[j..j+15]
    _mm512_store_si512(dst + j, _mm512_permutexvar_epi16(idx, x));
  }
}

// 64 f32 of row s rounded to bf16 as 32 pairs (s[2i], s[2i+1]).
static inline void row_f32_to_pairs(const float* s, uint32_t* dst) {
  _mm512_store_si512(dst, (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(s + 16), _mm512_load_ps(s)));
  _mm512_store_si512(dst + 16, (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(s + 48), _mm512_load_ps(s + 32)));
}

// Rows ks..ks+nk of (B, S, Hkv, D) bf16 `src` at (b, hkv).
static inline const uint16_t* kv_rows(const Ctx& c, const void* src, int64_t b, int64_t hkv, int64_t ks) {
  return static_cast<const uint16_t*>(src) + ((b * c.S + ks) * c.Hkv + hkv) * c.D;
}

// tp (Dq/2 x 64 pairs) = the key block's rows as pairs of d, transposed (the B of S = Q . K^T), via
// st (64 x Dq/2 staging). Columns >= nk keep stale finite values (as pack_kv in attention_impl.inc).
static inline void pack_transposed(const Ctx& c, const uint16_t* rows, int64_t nk, int64_t Dq, uint32_t* st, uint32_t* tp) {
  const int64_t Dh = Dq / 2, rs = c.Hkv * c.D;
  for (int64_t j = 0; j < nk; ++j) copy_bf16_row(rows + j * rs, c.D, Dq, reinterpret_cast<uint16_t*>(st + j * Dh));
  for (int64_t j0 = 0; j0 < nk; j0 += 16)
    for (int64_t p0 = 0; p0 < Dh; p0 += 16)
      transpose16(reinterpret_cast<const float*>(st + j0 * Dh + p0), Dh, reinterpret_cast<float*>(tp + p0 * kBk + j0), kBk);
}

// ip ((nk+1)/2 x Dq pairs) = the key block's rows paired as (row 2i, row 2i+1) (the B of P . V and
// dS . K); a missing odd row is zero.
static inline void pack_key_pairs(const Ctx& c, const uint16_t* rows, int64_t nk, int64_t Dq, uint32_t* ip) {
  const int64_t rs = c.Hkv * c.D;
  for (int64_t jp = 0; jp < (nk + 1) / 2; ++jp)
    pair_bf16_rows(rows + 2 * jp * rs, 2 * jp + 1 < nk ? rows + (2 * jp + 1) * rs : nullptr, c.D, Dq, ip + jp * Dq);
}

// Query rows of block (b, hkv, t0..t0+nq) of (B, T, H, D) `src` to dst (M x Dq/2 pairs).
static inline void pack_q_bf16(const Ctx& c, const void* src, int64_t b, int64_t hkv, int64_t t0, int64_t nq,
                               int64_t Dq, uint32_t* dst) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t r = 0; r < nq * c.G; ++r) {
    const int64_t t = t0 + r / c.G, h = hkv * c.G + r % c.G;
    copy_bf16_row(s + ((b * c.T + t) * c.H + h) * c.D, c.D, Dq, reinterpret_cast<uint16_t*>(dst + r * (Dq / 2)));
  }
}

// rows (m x Dq/2 pairs, packed) -> ip ((m+1)/2 x Dq pairs): rows paired as (row 2i, row 2i+1).
static inline void pair_packed_rows(const uint32_t* rows, int64_t m, int64_t Dq, uint32_t* ip) {
  const int64_t Dh = Dq / 2;
  for (int64_t i = 0; i < (m + 1) / 2; ++i)
    pair_bf16_rows(reinterpret_cast<const uint16_t*>(rows + 2 * i * Dh),
                   2 * i + 1 < m ? reinterpret_cast<const uint16_t*>(rows + (2 * i + 1) * Dh) : nullptr, Dq, Dq, ip + i * Dq);
}

void fwd_items(const Ctx& c, int64_t lo, int64_t hi) {
  if (!c.bf16) {
    fwd_items_f32(c, lo, hi);
    return;
  }
  const int64_t M = c.Bq * c.G, Dq = (c.D + 31) / 32 * 32, Dh = Dq / 2;  // Dh: pairs per row
  const int64_t Pd = (c.D + 1) / 2;                                        // pairs that hold data
  // floats / u32 words: Qb M*Dh, O M*Dq, Kst 64*Dh, Kp Dh*64, Vp 32*Dq, S M*64, Pb M*32, m, l
  Scratch buf(M * Dh + M * Dq + kBk * Dh * 2 + 32 * Dq + M * kBk + M * 32 + 17 * M);
  if (!buf.p) return;
  uint32_t* Qb = reinterpret_cast<uint32_t*>(buf.p);
  float* O = buf.p + M * Dh;
  uint32_t* Kst = reinterpret_cast<uint32_t*>(O + M * Dq);
  uint32_t* Kp = Kst + kBk * Dh;
  uint32_t* Vp = Kp + kBk * Dh;
  float* Sb = reinterpret_cast<float*>(Vp + 32 * Dq);
  uint32_t* Pb = reinterpret_cast<uint32_t*>(Sb + M * kBk);
  float* L16 = reinterpret_cast<float*>(Pb + M * 32);  // M x 16 running sums, by lanes
  float* mrow = L16 + 16 * M;
  const int64_t BH = c.B * c.Hkv;
  for (int64_t it = lo; (it = next_item(c, it, hi)) < hi; ++it) {
    const int64_t qb = c.nqb - 1 - it / BH, b = (it % BH) / c.Hkv, hkv = it % c.Hkv;
    const int64_t t0 = qb * c.Bq, nq = imin(c.Bq, c.T - t0), m = nq * c.G;
    pack_q_bf16(c, c.q, b, hkv, t0, nq, Dq, Qb);
    for (int64_t r = 0; r < m; ++r) {
      mrow[r] = kNegInf;
    }
    __builtin_memset(L16, 0, size_t(m * 16) * 4);
    __builtin_memset(O, 0, size_t(m * Dq) * 4);
    const int64_t kend = key_end(c, t0 + nq - 1);
    for (int64_t ks = 0; ks < kend; ks += kBk) {
      const int64_t nk = imin(kBk, kend - ks);
      pack_transposed(c, kv_rows(c, c.k, b, hkv, ks), nk, Dq, Kst, Kp);
      pack_key_pairs(c, kv_rows(c, c.v, b, hkv, ks), nk, Dq, Vp);
      prefetch_next_keys(c, b, hkv, ks, kend);
      const bool all = visible(c, t0, ks, nk) == nk;
      // Runs of rows that see at most nkr of these keys (row_runs): rows that see none are left
      // untouched (as P = 0), the diagonal's rows get only the columns they see.
      row_runs(c, t0, ks, nk, m, false, [&](int64_t r0, int64_t r1, int64_t nkr) {
      qk_bf16(Qb + r0 * Dh, Dh, r1 - r0, Kp, Pd, Sb + r0 * kBk, nkr);
      for (int64_t r = r0; r < r1; ++r) {
        float* s = Sb + r * kBk;
        const int64_t n = row_visible(c, all, t0, r, ks, nk);
        if (n > 0) {
          const float mx = row_max(s, n) * c.c2;
          const float mnew = mx > mrow[r] ? mx : mrow[r];
          float alpha = 1.f;
          if (mnew != mrow[r] && mrow[r] != kNegInf) {
            alpha = __builtin_exp2f(mrow[r] - mnew);
            float* o = O + r * Dq;
            for (int64_t d = 0; d < Dq; ++d) o[d] *= alpha;
          }
          row_exp2_lanes(s, n, c.c2, mnew, s, alpha, L16 + r * 16);
          mrow[r] = mnew;
        } else {
          for (int64_t j = 0; j < kBk; ++j) s[j] = 0.f;
        }
        row_f32_to_pairs(s, Pb + r * 32);
      }
      bgemm(Pb + r0 * 32, 32, 1, r1 - r0, (nkr + 1) / 2, Vp, Dq, Dq, O + r0 * Dq, Dq);
      });
    }
    for (int64_t r = 0; r < m; ++r) {
      const int64_t t = t0 + r / c.G, h = hkv * c.G + r % c.G;
      const float l = lanes_sum(L16 + r * 16);
      const bool any = l != 0.f;  // 0: the row saw no key; NaN (a NaN score) stays NaN in out and lse
      store_row(c.out, ((b * c.T + t) * c.H + h) * c.D, true, c.D, O + r * Dq, any ? 1.f / l : 0.f);
      c.lse[(b * c.H + h) * c.T + t] = any ? (mrow[r] + __builtin_log2f(l)) * kLn2 : kNegInf;
    }
  }
}

// ---- backward ----

// The tiles of one backward work item (u32 words are bf16 pairs), carved from one Scratch.
struct BwdTiles {
  int64_t Dq = 0, Dh = 0, Pd = 0;
  uint32_t *Qb, *dOb;        // M x Dh: query-block rows of Q and dO (A of S and dP)
  uint32_t *Qi, *dOi;        // (M+1)/2 x Dq: the same rows paired (B of dK and dV)
  // Key side, kGroup blocks of each (key block g at + g * the tile's size; see bwd_single_items):
  uint32_t *st, *Kp, *Vp;    // 64 x Dh staging; Dh x 64: K and V transposed (B of S and dP)
  uint32_t *Ki;              // 32 x Dq: K key pairs (B of dQ)
  uint32_t *Pi, *dSi;        // (M+1)/2 x 64: P and dS row pairs (A of dV and dK)
  uint32_t *dSb;             // M x 32: dS rows as pairs (A of dQ)
  float *dK, *dV;            // 64 x Dq accumulators (kGroup of each)
  float *Sb, *dPb;           // M x 64
  float *lse2, *Di;          // M
  static int64_t words(int64_t M, int64_t Dq) {
    const int64_t MP = (M + 1) / 2, Dh = Dq / 2;
    const int64_t n = 2 * M * Dh + 2 * MP * Dq + kBk * Dh + kGroup * (2 * kBk * Dh + 32 * Dq + 2 * kBk * Dq) + 2 * MP * kBk +
                      M * 32 + 2 * M * kBk + 2 * M;
    return (n + 15) / 16 * 16;  // what follows stays 64-byte aligned
  }
  BwdTiles(float* p, int64_t M, int64_t Dq_) : Dq(Dq_), Dh(Dq_ / 2) {
    const int64_t MP = (M + 1) / 2;
    uint32_t* u = reinterpret_cast<uint32_t*>(p);
    Qb = u; u += M * Dh;
    dOb = u; u += M * Dh;
    Qi = u; u += MP * Dq;
    dOi = u; u += MP * Dq;
    st = u; u += kBk * Dh;
    Kp = u; u += kGroup * kBk * Dh;
    Vp = u; u += kGroup * kBk * Dh;
    Ki = u; u += kGroup * 32 * Dq;
    Pi = u; u += MP * kBk;
    dSi = u; u += MP * kBk;
    dSb = u; u += M * 32;
    float* f = reinterpret_cast<float*>(u);
    dK = f; f += kGroup * kBk * Dq;
    dV = f; f += kGroup * kBk * Dq;
    Sb = f; f += M * kBk;
    dPb = f; f += M * kBk;
    lse2 = f; f += M;
    Di = f;
  }
};

// Key block (b, hkv, ks..ks+nk) into key slot g: K and V transposed for S and dP; K key pairs for dQ
// when want_dq.
static inline void bwd_pack_keys(const Ctx& c, BwdTiles& w, int64_t g, int64_t b, int64_t hkv, int64_t ks, int64_t nk, bool want_dq) {
  const uint16_t* kr = kv_rows(c, c.k, b, hkv, ks);
  pack_transposed(c, kr, nk, w.Dq, w.st, w.Kp + g * kBk * w.Dh);
  pack_transposed(c, kv_rows(c, c.v, b, hkv, ks), nk, w.Dq, w.st, w.Vp + g * kBk * w.Dh);
  if (want_dq) pack_key_pairs(c, kr, nk, w.Dq, w.Ki + g * 32 * w.Dq);
}

// Query block (b, hkv, t0..t0+nq): Q and dO rows, their row pairs when want_kv, and lse2, D.
static inline void bwd_pack_queries(const Ctx& c, BwdTiles& w, int64_t b, int64_t hkv, int64_t t0, int64_t nq, bool want_kv) {
  const int64_t m = nq * c.G;
  pack_q_bf16(c, c.q, b, hkv, t0, nq, w.Dq, w.Qb);
  pack_q_bf16(c, c.dout, b, hkv, t0, nq, w.Dq, w.dOb);
  if (want_kv) {
    pair_packed_rows(w.Qb, m, w.Dq, w.Qi);
    pair_packed_rows(w.dOb, m, w.Dq, w.dOi);
  }
  load_row_stats(c, b, hkv, t0, nq, w.lse2, w.Di);
}

// One (query block, key block in slot g) pair: S, dP, P, dS, then dV += P^T dO and dK += dS^T Q
// (want_kv: into slot g of w.dK / w.dV) and dQ += dS K (dQ: the block's m rows, row stride Dq;
// nullptr to skip).
static inline void bwd_pair(const Ctx& c, BwdTiles& w, int64_t g, int64_t t0, int64_t nq, int64_t ks, int64_t nk, bool want_kv, float* dQ) {
  const int64_t m = nq * c.G, Dq = w.Dq;
  const int64_t Pd = (c.D + 1) / 2;
  // Runs of rows r0..r1 that see at most nkr keys (row_runs; even bounds: the row pairs of P^T and
  // dS^T start at pair r0 / 2); rows that see none of the keys are skipped.
  row_runs(c, t0, ks, nk, m, true, [&](int64_t r0, int64_t r1, int64_t nkr) {
    const int64_t i0 = r0 / 2, i1 = (r1 + 1) / 2;
    qk_bf16(w.Qb + r0 * w.Dh, w.Dh, r1 - r0, w.Kp + g * kBk * w.Dh, Pd, w.Sb + r0 * kBk, nkr);
    qk_bf16(w.dOb + r0 * w.Dh, w.Dh, r1 - r0, w.Vp + g * kBk * w.Dh, Pd, w.dPb + r0 * kBk, nkr);
    probs_and_dscores(c, t0, ks, nk, r1, w.lse2, w.Di, w.Sb, w.dPb, r0);
    if (want_kv) {
      for (int64_t i = i0; i < i1; ++i) {
        const bool odd = 2 * i + 1 < r1;
        pair_f32_rows(w.Sb + 2 * i * kBk, odd ? w.Sb + (2 * i + 1) * kBk : nullptr, w.Pi + i * kBk);
        pair_f32_rows(w.dPb + 2 * i * kBk, odd ? w.dPb + (2 * i + 1) * kBk : nullptr, w.dSi + i * kBk);
      }
      bgemm(w.Pi + i0 * kBk, 1, kBk, nkr, i1 - i0, w.dOi + i0 * Dq, Dq, Dq, w.dV + g * kBk * Dq, Dq);   // dV += P^T dO
      bgemm(w.dSi + i0 * kBk, 1, kBk, nkr, i1 - i0, w.Qi + i0 * Dq, Dq, Dq, w.dK + g * kBk * Dq, Dq);   // dK += dS^T Q
    }
    if (dQ) {
      for (int64_t r = r0; r < r1; ++r) row_f32_to_pairs(w.dPb + r * kBk, w.dSb + r * 32);
      bgemm(w.dSb + r0 * 32, 32, 1, r1 - r0, (nkr + 1) / 2, w.Ki + g * 32 * Dq, Dq, Dq, dQ + r0 * Dq, Dq);  // dQ += dS K
    }
  });
}

// dK, dV rows ks..ks+n (n <= kGroup * 64: slots 0, 1, .. are consecutive rows) -> dk, dv.
static inline void bwd_store_kv(const Ctx& c, const BwdTiles& w, int64_t b, int64_t hkv, int64_t ks, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t off = ((b * c.S + ks + j) * c.Hkv + hkv) * c.D;
    store_row(c.dk, off, true, c.D, w.dK + j * w.Dq, c.scale);
    store_row(c.dv, off, true, c.D, w.dV + j * w.Dq, 1.f);
  }
}

// dQ rows (m x Dq f32) of the block at t0 -> dq.
static inline void bwd_store_q(const Ctx& c, const float* dQ, int64_t Dq, int64_t b, int64_t hkv, int64_t t0, int64_t m) {
  for (int64_t r = 0; r < m; ++r) {
    const int64_t t = t0 + r / c.G, h = hkv * c.G + r % c.G;
    store_row(c.dq, ((b * c.T + t) * c.H + h) * c.D, true, c.D, dQ + r * Dq, c.scale);
  }
}

// The work items of attention_kernels.h, bf16 edition (same items, same loop orders as
// attention_impl.inc's, with the tiles above).
void bwd_kv_items(const Ctx& c, int64_t lo, int64_t hi) {
  if (!c.bf16) return bwd_kv_items_f32(c, lo, hi);
  const int64_t M = c.Bq * c.G, Dq = (c.D + 31) / 32 * 32;
  Scratch buf(BwdTiles::words(M, Dq));
  if (!buf.p) return;
  BwdTiles w(buf.p, M, Dq);
  const int64_t BH = c.B * c.Hkv;
  for (int64_t it = lo; (it = next_item(c, it, hi)) < hi; ++it) {
    const int64_t kb = it / BH, b = (it % BH) / c.Hkv, hkv = it % c.Hkv;
    const int64_t ks = kb * kBk, nk = imin(kBk, c.S - ks);
    bwd_pack_keys(c, w, 0, b, hkv, ks, nk, false);
    __builtin_memset(w.dK, 0, size_t(kBk * Dq) * 4);
    __builtin_memset(w.dV, 0, size_t(kBk * Dq) * 4);
    const int64_t tfirst = c.causal ? imax(0, ks - (c.S - c.T)) : 0;
    for (int64_t t0 = tfirst; t0 < c.T; t0 += c.Bq) {
      const int64_t nq = imin(c.Bq, c.T - t0);
      bwd_pack_queries(c, w, b, hkv, t0, nq, true);
      prefetch_next(c, b, hkv, t0, ks, ks);
      bwd_pair(c, w, 0, t0, nq, ks, nk, true, nullptr);
    }
    bwd_store_kv(c, w, b, hkv, ks, nk);
  }
}

void bwd_q_items(const Ctx& c, int64_t lo, int64_t hi) {
  if (!c.bf16) return bwd_q_items_f32(c, lo, hi);
  const int64_t M = c.Bq * c.G, Dq = (c.D + 31) / 32 * 32;
  Scratch buf(BwdTiles::words(M, Dq) + M * Dq);
  if (!buf.p) return;
  BwdTiles w(buf.p, M, Dq);
  float* dQ = buf.p + BwdTiles::words(M, Dq);  // M x Dq
  const int64_t BH = c.B * c.Hkv;
  for (int64_t it = lo; (it = next_item(c, it, hi)) < hi; ++it) {
    const int64_t qb = c.nqb - 1 - it / BH, b = (it % BH) / c.Hkv, hkv = it % c.Hkv;
    const int64_t t0 = qb * c.Bq, nq = imin(c.Bq, c.T - t0), m = nq * c.G;
    bwd_pack_queries(c, w, b, hkv, t0, nq, false);
    __builtin_memset(dQ, 0, size_t(m * Dq) * 4);
    const int64_t kend = key_end(c, t0 + nq - 1);
    for (int64_t ks = 0; ks < kend; ks += kBk) {
      const int64_t nk = imin(kBk, kend - ks);
      bwd_pack_keys(c, w, 0, b, hkv, ks, nk, true);
      prefetch_next_keys(c, b, hkv, ks, kend);
      bwd_pair(c, w, 0, t0, nq, ks, nk, false, dQ);
    }
    bwd_store_q(c, dQ, Dq, b, hkv, t0, m);
  }
}

// One pass per (b, kv head), dQ of all T x G rows in f32 scratch, kGroup key blocks per pass over
// the query blocks (see attention_impl.inc).
void bwd_single_items(const Ctx& c, int64_t lo, int64_t hi) {
  if (!c.bf16) return bwd_single_items_f32(c, lo, hi);
  const int64_t M = c.Bq * c.G, Dq = (c.D + 31) / 32 * 32;
  Scratch buf(BwdTiles::words(M, Dq));
  Scratch dQbuf(c.T * c.G * Dq);
  if (!buf.p || !dQbuf.p) return;
  BwdTiles w(buf.p, M, Dq);
  float* dQ = dQbuf.p;  // (T * G) x Dq, row t * G + g
  for (int64_t it = lo; (it = next_item(c, it, hi)) < hi; ++it) {
    const int64_t b = it / c.Hkv, hkv = it % c.Hkv;
    __builtin_memset(dQ, 0, size_t(c.T * c.G * Dq) * 4);
    for (int64_t ks0 = 0; ks0 < c.S; ks0 += kGroup * kBk) {
      const int64_t ng = imin(kGroup, (c.S - ks0 + kBk - 1) / kBk), kend = imin(c.S, ks0 + ng * kBk);
      for (int64_t g = 0; g < ng; ++g) {
        const int64_t ks = ks0 + g * kBk;
        bwd_pack_keys(c, w, g, b, hkv, ks, imin(kBk, c.S - ks), true);
      }
      __builtin_memset(w.dK, 0, size_t(ng * kBk * Dq) * 4);
      __builtin_memset(w.dV, 0, size_t(ng * kBk * Dq) * 4);
      const int64_t tfirst = c.causal ? imax(0, ks0 - (c.S - c.T)) : 0;
      for (int64_t t0 = tfirst; t0 < c.T; t0 += c.Bq) {
        const int64_t nq = imin(c.Bq, c.T - t0);
        bwd_pack_queries(c, w, b, hkv, t0, nq, true);
        prefetch_next(c, b, hkv, t0, kend - kBk, c.S);
        for (int64_t g = 0; g < ng; ++g) {
          const int64_t ks = ks0 + g * kBk;
          if (key_end(c, t0 + nq - 1) <= ks) break;  // causal: no query of the block sees these keys
          bwd_pair(c, w, g, t0, nq, ks, imin(kBk, c.S - ks), true, dQ + t0 * c.G * Dq);
        }
      }
      bwd_store_kv(c, w, b, hkv, ks0, kend - ks0);
    }
    bwd_store_q(c, dQ, Dq, b, hkv, 0, c.T * c.G);
  }
}

// D[b, h, t] = sum_d dout * out for rows bt in [lo, hi) of (B*T): 16 rows at a time, one per lane,
// transposed to pairs of d so that each lane runs vdpbf16ps over d in the order qk_bf16 forms
// dP = dO . V^T (pairs p = 0, 1, ... from a zero accumulator): where out equals a row of V
// (one-hot P), dP - D is exactly 0.
void dvec_items(const Ctx& c, float* Dvec, int64_t lo, int64_t hi) {
  if (!c.bf16) return dvec_items_f32(c, Dvec, lo, hi);
  const int64_t Dq = (c.D + 31) / 32 * 32, Dh = Dq / 2, Pd = (c.D + 1) / 2;
  Scratch buf(4 * 16 * Dh);
  if (!buf.p) return;
  uint32_t* so = reinterpret_cast<uint32_t*>(buf.p);  // 16 x Dh rows of out
  uint32_t* sg = so + 16 * Dh;                         // 16 x Dh rows of dout
  uint32_t* to = sg + 16 * Dh;                         // Dh x 16 transposed
  uint32_t* tg = to + 16 * Dh;
  const uint16_t* o = static_cast<const uint16_t*>(c.out_in);
  const uint16_t* g = static_cast<const uint16_t*>(c.dout);
  const int64_t n_end = hi * c.H;  // rows n = (b*T + t)*H + h
  for (int64_t n0 = lo * c.H; n0 < n_end; n0 += 16) {
    const int64_t cnt = imin(16, n_end - n0);
    for (int64_t i = 0; i < cnt; ++i) {
      copy_bf16_row(o + (n0 + i) * c.D, c.D, Dq, reinterpret_cast<uint16_t*>(so + i * Dh));
      copy_bf16_row(g + (n0 + i) * c.D, c.D, Dq, reinterpret_cast<uint16_t*>(sg + i * Dh));
    }
    for (int64_t p0 = 0; p0 < Dh; p0 += 16) {
      transpose16(reinterpret_cast<const float*>(so + p0), Dh, reinterpret_cast<float*>(to + p0 * 16), 16);
      transpose16(reinterpret_cast<const float*>(sg + p0), Dh, reinterpret_cast<float*>(tg + p0 * 16), 16);
    }
    __m512 acc = _mm512_setzero_ps();
    for (int64_t p = 0; p < Pd; ++p)
      acc = _mm512_dpbf16_ps(acc, as_bh(_mm512_load_si512(tg + p * 16)), as_bh(_mm512_load_si512(to + p * 16)));
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc);
    for (int64_t i = 0; i < cnt; ++i) {
      const int64_t n = n0 + i, h = n % c.H, bt = n / c.H, b = bt / c.T, t = bt % c.T;
      Dvec[(b * c.H + h) * c.T + t] = lanes[i];
    }
  }
}

}  // namespace hf::attn::avx512bf16
