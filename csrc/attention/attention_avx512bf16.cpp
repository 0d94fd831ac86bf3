/*
 * attention_avx512bf16.cpp: the attention forward for bf16 inputs on CPUs with AVX512_BF16.
 *
 *   S (M x 64)  = Q (M x D) . K^T     vdpbf16ps: Q as bf16 pairs (d, d+1), K packed (D/2 x 64) pairs
 *   O (M x D)  += P (M x 64) . V      P rounded to bf16 pairs (j, j+1), V packed (32 x D) pairs
 * Each vdpbf16ps does 32 multiply-adds (16 lanes x 2) into f32 accumulators, twice the FMA rate
 * of the f32 kernels, with the same register blocking (6 x 64 for S, R x NV vectors for O). The
 * softmax (max, 2^x, sums, rescaling) stays in f32; only P is rounded to bf16 for P.V, as bf16
 * attention kernels do (torch's included). K^T is packed with the 16 x 16 transposes of 32-bit
 * pairs; V's pairs are interleaved with vpermt2w. D is padded to 32 with zeros.
 * The backward and float32 inputs use the AVX-512 f32 tile driver (attention_impl.inc), compiled
 * here too.
 */
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "attention/attention_kernels.h"

namespace hf::attn::avx512bf16 {

#include "attention/attention_avx512_kernels.inc"
#define HF_ATTN_FWD_NAME fwd_items_f32
#include "attention/attention_impl.inc"
#undef HF_ATTN_FWD_NAME

static inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

// S (M x 64) = Q (M x 2*P pairs, row stride ldq u32) . Kp (P x 64 u32)
template <int R>
static inline void qk_bf16_rows(const uint32_t* Q, int64_t ldq, const uint32_t* Kp, int64_t P, float* S) {
  __m512 acc[R][4];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < P; ++p) {
    const uint32_t* k = Kp + p * kBk;
    const __m512bh k0 = as_bh(_mm512_load_si512(k)), k1 = as_bh(_mm512_load_si512(k + 16)),
                   k2 = as_bh(_mm512_load_si512(k + 32)), k3 = as_bh(_mm512_load_si512(k + 48));
    for (int i = 0; i < R; ++i) {
      const __m512bh a = as_bh(_mm512_set1_epi32(int(Q[i * ldq + p])));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, k0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, k1);
      acc[i][2] = _mm512_dpbf16_ps(acc[i][2], a, k2);
      acc[i][3] = _mm512_dpbf16_ps(acc[i][3], a, k3);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < 4; ++j) _mm512_store_ps(S + i * kBk + j * 16, acc[i][j]);
}

static inline void qk_bf16(const uint32_t* Q, int64_t ldq, int64_t M, const uint32_t* Kp, int64_t P, float* S) {
  int64_t r = 0;
  for (; r + 6 <= M; r += 6) qk_bf16_rows<6>(Q + r * ldq, ldq, Kp, P, S + r * kBk);
  switch (M - r) {
    case 5: qk_bf16_rows<5>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 4: qk_bf16_rows<4>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 3: qk_bf16_rows<3>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 2: qk_bf16_rows<2>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    case 1: qk_bf16_rows<1>(Q + r * ldq, ldq, Kp, P, S + r * kBk); break;
    default: break;
  }
}

// O (R rows x NV*16 cols, stride Dq) += Pb (R x JP pairs, stride 32 u32) . Vp (JP x Dq pairs)
template <int R, int NV>
static inline void pv_bf16_block(const uint32_t* Pb, int64_t JP, const uint32_t* Vp, int64_t Dq, float* O) {
  __m512 acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t jp = 0; jp < JP; ++jp) {
    const uint32_t* b = Vp + jp * Dq;
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = as_bh(_mm512_load_si512(b + v * 16));
    for (int i = 0; i < R; ++i) {
      const __m512bh a = as_bh(_mm512_set1_epi32(int(Pb[i * 32 + jp])));
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, bv[v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v)
      _mm512_store_ps(O + i * Dq + v * 16, _mm512_add_ps(_mm512_load_ps(O + i * Dq + v * 16), acc[i][v]));
}

template <int NV>
static inline void pv_bf16_cols(const uint32_t* Pb, int64_t M, int64_t JP, const uint32_t* Vp, int64_t Dq, float* O) {
  constexpr int R = NV >= 7 ? 3 : NV >= 5 ? 4 : NV >= 3 ? 6 : 8;
  int64_t i = 0;
  for (; i + R <= M; i += R) pv_bf16_block<R, NV>(Pb + i * 32, JP, Vp, Dq, O + i * Dq);
  for (; i < M; ++i) pv_bf16_block<1, NV>(Pb + i * 32, JP, Vp, Dq, O + i * Dq);
}

static inline void pv_bf16(const uint32_t* Pb, int64_t M, int64_t JP, const uint32_t* Vp, int64_t Dq, float* O) {
  // Vp rows are Dq pairs (u32) long; column chunk c0 of O is chunk c0 of pairs.
  for (int64_t c0 = 0; c0 < Dq; c0 += 128) {
    const int64_t nv = (Dq - c0) / 16 < 8 ? (Dq - c0) / 16 : 8;
    const uint32_t* b = Vp + c0;
    float* o = O + c0;
    switch (nv) {
      case 8: pv_bf16_cols<8>(Pb, M, JP, b, Dq, o); break;
      case 6: pv_bf16_cols<6>(Pb, M, JP, b, Dq, o); break;
      case 4: pv_bf16_cols<4>(Pb, M, JP, b, Dq, o); break;
      default: pv_bf16_cols<2>(Pb, M, JP, b, Dq, o); break;  // Dq is a multiple of 32
    }
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

void fwd_items(const Ctx& c, int64_t lo, int64_t hi) {
  if (!c.bf16) {
    fwd_items_f32(c, lo, hi);
    return;
  }
  const int64_t M = c.Bq * c.G, Dq = (c.D + 31) / 32 * 32, Dh = Dq / 2;  // Dh: pairs per row
  const int64_t Pd = (c.D + 1) / 2;                                        // pairs that hold data
  // floats / u32 words: Qb M*Dh, O M*Dq, Kst 64*Dh, Kp Dh*64, Vp 32*Dq, S M*64, Pb M*32, m, l
  Scratch buf(M * Dh + M * Dq + kBk * Dh * 2 + 32 * Dq + M * kBk + M * 32 + 2 * M);
  if (!buf.p) return;
  uint32_t* Qb = reinterpret_cast<uint32_t*>(buf.p);
  float* O = buf.p + M * Dh;
  uint32_t* Kst = reinterpret_cast<uint32_t*>(O + M * Dq);
  uint32_t* Kp = Kst + kBk * Dh;
  uint32_t* Vp = Kp + kBk * Dh;
  float* Sb = reinterpret_cast<float*>(Vp + 32 * Dq);
  uint32_t* Pb = reinterpret_cast<uint32_t*>(Sb + M * kBk);
  float* mrow = reinterpret_cast<float*>(Pb + M * 32);
  float* lrow = mrow + M;
  const uint16_t* q = static_cast<const uint16_t*>(c.q);
  const uint16_t* k = static_cast<const uint16_t*>(c.k);
  const uint16_t* v = static_cast<const uint16_t*>(c.v);
  // vpermt2w indices: pair i of the low half = (a[i], b[i]), of the high half = (a[16+i], b[16+i]).
  alignas(64) uint16_t lo_idx[32], hi_idx[32];
  for (int i = 0; i < 16; ++i) {
    lo_idx[2 * i] = uint16_t(i), lo_idx[2 * i + 1] = uint16_t(32 + i);
    hi_idx[2 * i] = uint16_t(16 + i), hi_idx[2 * i + 1] = uint16_t(48 + i);
  }
  const __m512i vlo = _mm512_load_si512(lo_idx), vhi = _mm512_load_si512(hi_idx);
  const int64_t BH = c.B * c.Hkv;
  for (int64_t it = lo; it < hi; ++it) {
    const int64_t qb = c.nqb - 1 - it / BH, b = (it % BH) / c.Hkv, hkv = it % c.Hkv;
    const int64_t t0 = qb * c.Bq, nq = imin(c.Bq, c.T - t0), m = nq * c.G;
    for (int64_t r = 0; r < m; ++r) {
      const int64_t t = t0 + r / c.G, h = hkv * c.G + r % c.G;
      copy_bf16_row(q + ((b * c.T + t) * c.H + h) * c.D, c.D, Dq, reinterpret_cast<uint16_t*>(Qb + r * Dh));
      mrow[r] = kNegInf;
      lrow[r] = 0.f;
    }
    __builtin_memset(O, 0, size_t(m * Dq) * 4);
    const int64_t kend = key_end(c, t0 + nq - 1);
    for (int64_t ks = 0; ks < kend; ks += kBk) {
      const int64_t nk = imin(kBk, kend - ks);
      const int64_t rs = c.Hkv * c.D;  // row stride of k and v
      const uint16_t* kr = k + ((b * c.S + ks) * c.Hkv + hkv) * c.D;
      const uint16_t* vr = v + ((b * c.S + ks) * c.Hkv + hkv) * c.D;
      // K^T as pairs: stage rows (64 x Dh u32), transpose 16 x 16 tiles of u32.
      for (int64_t j = 0; j < nk; ++j) copy_bf16_row(kr + j * rs, c.D, Dq, reinterpret_cast<uint16_t*>(Kst + j * Dh));
      for (int64_t j0 = 0; j0 < nk; j0 += 16)
        for (int64_t p0 = 0; p0 < Dh; p0 += 16)
          transpose16(reinterpret_cast<const float*>(Kst + j0 * Dh + p0), Dh, reinterpret_cast<float*>(Kp + p0 * kBk + j0), kBk);
      // V as pairs of keys: Vp[jp][d] = (V[2jp][d], V[2jp+1][d]); a missing odd row is zero.
      const int64_t JP = (nk + 1) / 2;
      for (int64_t jp = 0; jp < JP; ++jp) {
        const bool has_b = 2 * jp + 1 < nk;
        for (int64_t d = 0; d < Dq; d += 32) {
          const int64_t left = c.D - d;
          const __mmask32 km = left >= 32 ? __mmask32(0xffffffffu) : left <= 0 ? __mmask32(0) : __mmask32((1u << left) - 1);
          const __m512i a = _mm512_maskz_loadu_epi16(km, vr + 2 * jp * rs + d);
          const __m512i bb = has_b ? _mm512_maskz_loadu_epi16(km, vr + (2 * jp + 1) * rs + d) : _mm512_setzero_si512();
          _mm512_store_si512(Vp + jp * Dq + d, _mm512_permutex2var_epi16(a, vlo, bb));
          _mm512_store_si512(Vp + jp * Dq + d + 16, _mm512_permutex2var_epi16(a, vhi, bb));
        }
      }
      qk_bf16(Qb, Dh, m, Kp, Pd, Sb);
      for (int64_t r = 0; r < m; ++r) {
        float* s = Sb + r * kBk;
        const int64_t n = visible(c, t0 + r / c.G, ks, nk);
        if (n > 0) {
          const float mx = row_max(s, n) * c.c2;
          const float mnew = mx > mrow[r] ? mx : mrow[r];
          const float sum = row_exp2(s, n, c.c2, mnew, s);
          if (mnew != mrow[r] && lrow[r] != 0.f) {
            const float alpha = __builtin_exp2f(mrow[r] - mnew);
            float* o = O + r * Dq;
            for (int64_t d = 0; d < Dq; ++d) o[d] *= alpha;
            lrow[r] *= alpha;
          }
          mrow[r] = mnew;
          lrow[r] += sum;
        } else {
          for (int64_t j = 0; j < kBk; ++j) s[j] = 0.f;
        }
        // P to bf16 pairs (round to nearest even).
        const __m512bh p01 = _mm512_cvtne2ps_pbh(_mm512_load_ps(s + 16), _mm512_load_ps(s));
        const __m512bh p23 = _mm512_cvtne2ps_pbh(_mm512_load_ps(s + 48), _mm512_load_ps(s + 32));
        _mm512_store_si512(Pb + r * 32, (__m512i)p01);
        _mm512_store_si512(Pb + r * 32 + 16, (__m512i)p23);
      }
      pv_bf16(Pb, m, JP, Vp, Dq, O);
    }
    for (int64_t r = 0; r < m; ++r) {
      const int64_t t = t0 + r / c.G, h = hkv * c.G + r % c.G;
      const bool any = lrow[r] > 0.f;
      store_row(c.out, ((b * c.T + t) * c.H + h) * c.D, true, c.D, O + r * Dq, any ? 1.f / lrow[r] : 0.f);
      c.lse[(b * c.H + h) * c.T + t] = any ? (mrow[r] + __builtin_log2f(lrow[r])) * kLn2 : kNegInf;
    }
  }
}

}  // namespace hf::attn::avx512bf16
