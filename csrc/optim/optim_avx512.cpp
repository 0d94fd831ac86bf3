/*
 * optim_avx512.cpp: AVX-512 traits (16 floats per vector) for the optimizer kernels in
 * optim_kernels.h. bf16 is converted with integer bit operations (not vcvtneps2bf16, which
 * flushes denormals) so that it matches the scalar rounding bit for bit. No FMA contraction.
 */
// GCC 12 reports a known false -Wmaybe-uninitialized inside avx512fintrin.h (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
// After the intrinsic headers (GCC 12 warns spuriously inside them otherwise): no FMA contraction.
#pragma GCC optimize("fp-contract=off")

#include "optim/optim_kernels.h"

namespace hf::optim {
namespace {

struct Avx512V {
  static constexpr int W = 16;
  using F = __m512;
  using U = __m512i;
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F x) { _mm512_storeu_ps(p, x); }
  static F loadbf(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static __m512i rne(F x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i absb = _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(absb, _mm512_set1_epi32(0x7f800000));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __m512i q = _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
    return _mm512_mask_mov_epi32(r, nan, q);
  }
  static void put16(uint16_t* p, __m512i r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
  static void storebf(uint16_t* p, F x) { put16(p, rne(x)); }
  static void storebf_sr(uint16_t* p, F x, U rnd) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i absb = _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 special = _mm512_cmpge_epu32_mask(absb, _mm512_set1_epi32(0x7f800000));
    const __m512i sr = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_and_si512(rnd, _mm512_set1_epi32(0xffff))), 16);
    put16(p, _mm512_mask_mov_epi32(sr, special, rne(x)));
  }
  template <bool SR>
  static F follow(F w, const uint16_t* p) {  // see ScalarV::follow
    const __m512i pw = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    __mmask16 ok = _mm512_cmpeq_epi32_mask(pw, rne(w));
    if constexpr (SR) {
      const __m512i d = _mm512_and_si512(_mm512_sub_epi32(pw, _mm512_srli_epi32(_mm512_castps_si512(w), 16)),
                                         _mm512_set1_epi32(0xffff));
      ok = __mmask16(ok | _mm512_cmple_epu32_mask(d, _mm512_set1_epi32(1)));
    }
    return _mm512_mask_mov_ps(_mm512_castsi512_ps(_mm512_slli_epi32(pw, 16)), ok, w);
  }
  static F set1(float a) { return _mm512_set1_ps(a); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F sqrt(F a) { return _mm512_sqrt_ps(a); }
  static F sign(F c) {
    F s = _mm512_mul_ps(c, _mm512_setzero_ps());
    s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(c, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.f));
    return _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(c, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_set1_ps(-1.f));
  }
  static U iota(uint32_t base) {
    return _mm512_add_epi32(_mm512_set1_epi32(int(base)),
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  }
  static U hash(U x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(int(0x85ebca6bu)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 13));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(int(0xc2b2ae35u)));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  }
  static U xor_(U a, uint32_t k) { return _mm512_xor_si512(a, _mm512_set1_epi32(int(k))); }
  // Lanes 0-7 and 8-15 of the 16-lane accumulator; j is a multiple of 16.
  struct Acc {
    double* out;
    __m512d a0, a1;
    explicit Acc(double* o) : out(o) {
      if (out) { a0 = _mm512_loadu_pd(out); a1 = _mm512_loadu_pd(out + 8); }
      else { a0 = a1 = _mm512_setzero_pd(); }
    }
    void add(F x, int64_t) {
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
      const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
      a0 = _mm512_add_pd(a0, _mm512_mul_pd(lo, lo));
      a1 = _mm512_add_pd(a1, _mm512_mul_pd(hi, hi));
    }
    void flush() {
      if (out) { _mm512_storeu_pd(out, a0); _mm512_storeu_pd(out + 8, a1); }
    }
  };
};

}  // namespace

StepPieceFn step_piece_avx512() { return &kern::step_piece<Avx512V>; }
SumsqPieceFn sumsq_piece_avx512() { return &kern::sumsq_piece<Avx512V>; }
}  // namespace hf::optim
