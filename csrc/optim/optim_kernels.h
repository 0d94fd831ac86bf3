/*
 * optim_kernels.h: the element-wise AdamW / Lion / SGD updates, written ONCE over a small
 * vector-traits type V and included by optim_scalar.cpp, optim_avx2.cpp and optim_avx512.cpp.
 *
 * Every file compiles this with FMA contraction off (see the pragma at the top of each), and
 * the math uses only IEEE add/sub/mul/div/sqrt in a fixed order, so scalar, AVX2 and AVX-512
 * produce bitwise identical parameters and state. The order of operations follows torch's
 * single-tensor implementations (torch/optim/adamw.py, sgd.py) so fp32 results agree with
 * torch to within a few ulps (torch's own vector kernels may contract to FMA).
 *
 * The gradient norm uses 16 float64 lanes: element j of a piece (j counted from the piece
 * start) goes to lane j % 16. Squares of float32 values are exact in float64, so only the
 * lane sums round, and they round identically for every ISA.
 *
 * V provides: W (floats per vector), F (float vector), U (uint32 vector), Acc (16 double lanes),
 * load/store of f32 and bf16 (RNE and stochastic), arithmetic, sign, iota and the hash.
 */
#pragma once
#include <cstdint>

#include "optim/optim.h"

namespace hf::optim::kern {

// Scalar traits: the reference every vector ISA reproduces, also used for every tail.
struct ScalarV {
  static constexpr int W = 1;
  using F = float;
  using U = uint32_t;
  static F load(const float* p) { return *p; }
  static void store(float* p, F x) { *p = x; }
  static F loadbf(const uint16_t* p) {
    uint32_t b = uint32_t(*p) << 16;
    float f;
    __builtin_memcpy(&f, &b, 4);
    return f;
  }
  static uint32_t bits(F x) {
    uint32_t b;
    __builtin_memcpy(&b, &x, 4);
    return b;
  }
  static uint16_t rne(F x) {
    uint32_t b = bits(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40u);
    b += 0x7fffu + ((b >> 16) & 1u);
    return uint16_t(b >> 16);
  }
  static void storebf(uint16_t* p, F x) { *p = rne(x); }
  static void storebf_sr(uint16_t* p, F x, U r) {
    uint32_t b = bits(x);
    if ((b & 0x7fffffffu) >= 0x7f800000u) { storebf(p, x); return; }
    *p = uint16_t((b + (r & 0xffffu)) >> 16);
  }
  // The fp32 master w, or the bf16 param *p itself when *p is not a rounding of w (the caller
  // changed the param in place after a step): RNE steps leave *p == rne(w); stochastic steps leave
  // w truncated or one ulp above (or rne(w) for inf/NaN).
  template <bool SR>
  static F follow(F w, const uint16_t* p) {
    const uint16_t pb = *p;
    bool ok = pb == rne(w);
    if constexpr (SR) ok = ok || uint16_t(pb - uint16_t(bits(w) >> 16)) <= 1;
    return ok ? w : loadbf(p);
  }
  static F set1(float a) { return a; }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F div(F a, F b) { return a / b; }
  static F sqrt(F a) { return __builtin_sqrtf(a); }
  // +1, -1, or c*0 (0 for zeros, NaN for NaN)
  static F sign(F c) { return c > 0.f ? 1.f : (c < 0.f ? -1.f : c * 0.f); }
  static U iota(uint32_t base) { return base; }
  static U hash(U x) {
    x ^= x >> 16; x *= 0x85ebca6bu; x ^= x >> 13; x *= 0xc2b2ae35u; x ^= x >> 16;
    return x;
  }
  static U xor_(U a, uint32_t k) { return a ^ k; }
  struct Acc {
    double* out;
    explicit Acc(double* o) : out(o) {}
    void add(F x, int64_t j) { out[j & 15] += double(x) * double(x); }
    void flush() {}
  };
};

template <class V, bool BF>
inline typename V::F load_p(const void* base, int64_t i) {
  if constexpr (BF) return V::loadbf(static_cast<const uint16_t*>(base) + i);
  else return V::load(static_cast<const float*>(base) + i);
}

// Processes elements [j0, j1) of the piece with traits V; (j1 - j0) is a multiple of V::W.
template <class V, Algo A, bool BF, bool SR, bool NORM>
inline void run_range(const StepConfig& cfg, const Coef& k, const Piece& pc, double* acc16, int64_t j0, int64_t j1) {
  using F = typename V::F;
  typename V::Acc acc(acc16);
  const F gm = V::set1(cfg.grad_mul);
  float* const pf = static_cast<float*>(pc.p);
  uint16_t* const pb = static_cast<uint16_t*>(pc.p);
  float* const w = BF ? pc.master : pf;  // the fp32 weights being updated
  // Pieces never straddle a 2^32 boundary of the global index (Plan splits them), so the high
  // half is constant here and folds into the key.
  const uint32_t key = ScalarV::hash((uint32_t(pc.index >> 32) * 0x9E3779B9u) ^ cfg.sr_key);
  const uint32_t lo0 = uint32_t(pc.index);
  for (int64_t j = j0; j < j1; j += V::W) {
    const F graw = load_p<V, BF>(pc.g, j);
    if constexpr (NORM) acc.add(graw, j);
    const F g = V::mul(graw, gm);
    F p = V::load(w + j);
    // bf16: the param is read back (its cache lines are fetched for the store below anyway) so an
    // in-place edit of it (fill_, load_state_dict of the model) re-seeds the master, as torch would
    // see the edited param.
    if constexpr (BF) p = V::template follow<SR>(p, pb + j);
    if constexpr (A == Algo::adamw) {
      F m = V::load(pc.m + j), v = V::load(pc.v + j);
      p = V::mul(p, V::set1(k.decay));
      if (k.small_w) m = V::add(m, V::mul(V::set1(k.a), V::sub(g, m)));
      else m = V::sub(g, V::mul(V::sub(g, m), V::set1(k.b)));
      v = V::add(V::mul(v, V::set1(k.c)), V::mul(V::mul(V::set1(k.d), g), g));
      const F den = V::add(V::div(V::sqrt(v), V::set1(k.bc2s)), V::set1(k.eps));
      p = V::add(p, V::mul(V::set1(k.neg_step), V::div(m, den)));
      V::store(pc.m + j, m);
      V::store(pc.v + j, v);
    } else if constexpr (A == Algo::lion) {
      F m = V::load(pc.m + j);
      const F c = V::add(V::mul(m, V::set1(k.a)), V::mul(g, V::set1(k.b)));
      p = V::add(V::mul(p, V::set1(k.decay)), V::mul(V::set1(k.neg_step), V::sign(c)));
      m = V::add(V::mul(m, V::set1(k.c)), V::mul(g, V::set1(k.d)));
      V::store(pc.m + j, m);
    } else {  // SGD
      F d = g;
      if (k.eps != 0.f) d = V::add(g, V::mul(V::set1(k.eps), p));
      if (k.momentum) {
        F buf = k.first ? d : V::add(V::mul(V::load(pc.m + j), V::set1(k.c)), V::mul(V::set1(k.d), d));
        V::store(pc.m + j, buf);
        d = k.nesterov ? V::add(d, V::mul(V::set1(k.c), buf)) : buf;
      }
      p = V::add(p, V::mul(V::set1(k.neg_step), d));
    }
    V::store(w + j, p);
    if constexpr (BF) {
      if constexpr (SR) V::storebf_sr(pb + j, p, V::hash(V::xor_(V::iota(lo0 + uint32_t(j)), key)));
      else V::storebf(pb + j, p);
    }
  }
  acc.flush();
}

template <class V, Algo A, bool BF, bool SR, bool NORM>
inline void run_piece(const StepConfig& cfg, const Coef& k, const Piece& pc, double* acc16) {
  const int64_t body = pc.n - pc.n % V::W;
  run_range<V, A, BF, SR, NORM>(cfg, k, pc, acc16, 0, body);
  if constexpr (V::W > 1) run_range<ScalarV, A, BF, SR, NORM>(cfg, k, pc, acc16, body, pc.n);
}

template <class V, Algo A, bool BF>
inline void dispatch_sr_norm(const StepConfig& cfg, const Coef& k, const Piece& pc, double* acc16) {
  if (acc16) {
    if (BF && cfg.stochastic) run_piece<V, A, BF, BF, true>(cfg, k, pc, acc16);
    else run_piece<V, A, BF, false, true>(cfg, k, pc, acc16);
  } else {
    if (BF && cfg.stochastic) run_piece<V, A, BF, BF, false>(cfg, k, pc, acc16);
    else run_piece<V, A, BF, false, false>(cfg, k, pc, acc16);
  }
}

template <class V>
void step_piece(const StepConfig& cfg, const Coef& k, const Piece& pc, double* acc16) {
  switch (cfg.algo) {
    case Algo::adamw:
      return cfg.bf16 ? dispatch_sr_norm<V, Algo::adamw, true>(cfg, k, pc, acc16)
                      : dispatch_sr_norm<V, Algo::adamw, false>(cfg, k, pc, acc16);
    case Algo::lion:
      return cfg.bf16 ? dispatch_sr_norm<V, Algo::lion, true>(cfg, k, pc, acc16)
                      : dispatch_sr_norm<V, Algo::lion, false>(cfg, k, pc, acc16);
    case Algo::sgd:
      return cfg.bf16 ? dispatch_sr_norm<V, Algo::sgd, true>(cfg, k, pc, acc16)
                      : dispatch_sr_norm<V, Algo::sgd, false>(cfg, k, pc, acc16);
  }
}

template <class V, bool BF>
inline void sumsq_range(const void* g, int64_t j0, int64_t j1, double* acc16) {
  typename V::Acc acc(acc16);
  for (int64_t j = j0; j < j1; j += V::W) acc.add(load_p<V, BF>(g, j), j);
  acc.flush();
}

template <class V>
void sumsq_piece(const void* g, bool bf16, int64_t n, double* acc16) {
  const int64_t body = n - n % V::W;
  if (bf16) {
    sumsq_range<V, true>(g, 0, body, acc16);
    if constexpr (V::W > 1) sumsq_range<ScalarV, true>(g, body, n, acc16);
  } else {
    sumsq_range<V, false>(g, 0, body, acc16);
    if constexpr (V::W > 1) sumsq_range<ScalarV, false>(g, body, n, acc16);
  }
}

}  // namespace hf::optim::kern
