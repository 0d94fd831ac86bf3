/*
 * optim_avx2.cpp: AVX2 traits (8 floats per vector) for the optimizer kernels in
 * optim_kernels.h. Same operations, same order, no FMA contraction: bitwise equal to scalar.
 */
#include <immintrin.h>
// After the intrinsic headers (GCC 12 warns spuriously inside them otherwise): no FMA contraction.
#pragma GCC optimize("fp-contract=off")

#include "optim/optim_kernels.h"

namespace hf::optim {
namespace {

struct Avx2V {
  static constexpr int W = 8;
  using F = __m256;
  using U = __m256i;
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F x) { _mm256_storeu_ps(p, x); }
  static F loadbf(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  // |b| > 0x7f800000 as a mask, via signed compare on the (non-negative) absolute bits.
  static __m256i rne(F x) {
    const __m256i b = _mm256_castps_si256(x);
    const __m256i absb = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff));
    const __m256i nan = _mm256_cmpgt_epi32(absb, _mm256_set1_epi32(0x7f800000));
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i q = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
  }
  static void put8(uint16_t* p, __m256i r) {
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
  static void storebf(uint16_t* p, F x) { put8(p, rne(x)); }
  static void storebf_sr(uint16_t* p, F x, U rnd) {
    const __m256i b = _mm256_castps_si256(x);
    const __m256i absb = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff));
    const __m256i special = _mm256_cmpgt_epi32(absb, _mm256_set1_epi32(0x7f7fffff));
    const __m256i sr = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_and_si256(rnd, _mm256_set1_epi32(0xffff))), 16);
    put8(p, _mm256_blendv_epi8(sr, rne(x), special));
  }
  template <bool SR>
  static F follow(F w, const uint16_t* p) {  // see ScalarV::follow
    const __m256i pw = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    __m256i ok = _mm256_cmpeq_epi32(pw, rne(w));
    if constexpr (SR) {
      const __m256i d = _mm256_and_si256(_mm256_sub_epi32(pw, _mm256_srli_epi32(_mm256_castps_si256(w), 16)),
                                         _mm256_set1_epi32(0xffff));
      ok = _mm256_or_si256(ok, _mm256_cmpgt_epi32(_mm256_set1_epi32(2), d));
    }
    return _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_slli_epi32(pw, 16)), w, _mm256_castsi256_ps(ok));
  }
  static F set1(float a) { return _mm256_set1_ps(a); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  static F sign(F c) {
    const F z = _mm256_setzero_ps();
    F s = _mm256_mul_ps(c, z);
    s = _mm256_blendv_ps(s, _mm256_set1_ps(1.f), _mm256_cmp_ps(c, z, _CMP_GT_OQ));
    return _mm256_blendv_ps(s, _mm256_set1_ps(-1.f), _mm256_cmp_ps(c, z, _CMP_LT_OQ));
  }
  static U iota(uint32_t base) {
    return _mm256_add_epi32(_mm256_set1_epi32(int(base)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static U hash(U x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(int(0x85ebca6bu)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 13));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(int(0xc2b2ae35u)));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  }
  static U xor_(U a, uint32_t k) { return _mm256_xor_si256(a, _mm256_set1_epi32(int(k))); }
  // 16 lanes as 4 x 4 doubles; j is a multiple of 8: j % 16 == 0 -> lanes 0-7, else 8-15.
  struct Acc {
    double* out;
    __m256d a[4];
    explicit Acc(double* o) : out(o) {
      for (int i = 0; i < 4; ++i) a[i] = out ? _mm256_loadu_pd(out + 4 * i) : _mm256_setzero_pd();
    }
    void add(F x, int64_t j) {
      const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
      const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
      const int h = (j & 8) ? 2 : 0;
      a[h] = _mm256_add_pd(a[h], _mm256_mul_pd(lo, lo));
      a[h + 1] = _mm256_add_pd(a[h + 1], _mm256_mul_pd(hi, hi));
    }
    void flush() {
      if (out)
        for (int i = 0; i < 4; ++i) _mm256_storeu_pd(out + 4 * i, a[i]);
    }
  };
};

}  // namespace

StepPieceFn step_piece_avx2() { return &kern::step_piece<Avx2V>; }
SumsqPieceFn sumsq_piece_avx2() { return &kern::sumsq_piece<Avx2V>; }
}  // namespace hf::optim
