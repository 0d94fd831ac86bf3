/*
 * swiglu.cpp: the SwiGLU gate of the Llama MLP, forward and backward.
 *
 *   forward   act = silu(g) * u,  silu(g) = g * s,  s = 1 / (1 + exp(-g))
 *   backward  dg = dact * u * s * (1 + g * (1 - s)),  du = dact * silu(g)
 *
 * gu rows (N, 2F) = [gate | up] come from ONE GEMM against the contiguous [W_gate; W_up] block
 * of the flat parameters; the backward writes dgu in the same layout so the two weight
 * gradients and the input gradient are again one GEMM each. Math in f32 (fast_exp vectorises),
 * storage f32 or bf16. One read and one write per element. With AVX-512 and F % 16 == 0 the
 * per-row loops run in swiglu_avx512.cpp (bitwise equal given the same sigmoid row).
 */
#include <type_traits>
#include <vector>

#include "model/kernels.h"
#include "runtime/cpu_features.h"
#include "runtime/parallel.h"

namespace hf::model {

// AVX-512 row loops (swiglu_avx512.cpp): bitwise the same results as the loops below.
void swiglu_fwd_row_avx512(const float* g, const float* u, const float* sig, float* a, int64_t F);
void swiglu_fwd_row_avx512(const bf16_t* g, const bf16_t* u, const float* sig, bf16_t* a, int64_t F);
void swiglu_bwd_row_avx512(const float* g, const float* u, const float* da, const float* sig, float* dg, float* du,
                           int64_t F);
void swiglu_bwd_row_avx512(const bf16_t* g, const bf16_t* u, const bf16_t* da, const float* sig, bf16_t* dg,
                           bf16_t* du, int64_t F);
void widen_row_bf16_avx512(const bf16_t* src, float* dst, int64_t n);

namespace {

bool wide_swiglu(int64_t F) { return active_isa() >= Isa::avx512 && F % 16 == 0; }

// s[j] = 1 / (1 + exp(-g[j])), 4 lanes at a time (kernels.h: sigmoid_row_f32).
template <class A>
void sigmoid_row(const A* g, float* s, int64_t F, bool wide) {
  if constexpr (std::is_same_v<A, float>) {
    sigmoid_row_f32(g, s, F);
  } else {
    if (wide) widen_row_bf16_avx512(g, s, F);
    else
      for (int64_t j = 0; j < F; ++j) s[j] = ld(g, j);
    sigmoid_row_f32(s, s, F);
  }
}

template <class A>
void fwd(const A* gu, int64_t N, int64_t F, A* act) {
  const bool wide = wide_swiglu(F);
  parallel_for(0, N, std::max<int64_t>(1, 4096 / F), [&](int64_t lo, int64_t hi) {
    std::vector<float> sig(static_cast<size_t>(F));
    for (int64_t n = lo; n < hi; ++n) {
      const A* g = gu + n * 2 * F;
      const A* u = g + F;
      A* a = act + n * F;
      sigmoid_row(g, sig.data(), F, wide);
      if (wide) swiglu_fwd_row_avx512(g, u, sig.data(), a, F);
      else
        for (int64_t j = 0; j < F; ++j) st(a, j, ld(g, j) * sig[j] * ld(u, j));
    }
  });
}

template <class A>
void bwd(const A* dact, const A* gu, int64_t N, int64_t F, A* dgu) {
  const bool wide = wide_swiglu(F);
  parallel_for(0, N, std::max<int64_t>(1, 4096 / F), [&](int64_t lo, int64_t hi) {
    std::vector<float> sig(static_cast<size_t>(F));
    for (int64_t n = lo; n < hi; ++n) {
      const A* g = gu + n * 2 * F;
      const A* u = g + F;
      const A* da = dact + n * F;
      A* dg = dgu + n * 2 * F;
      A* du = dg + F;
      sigmoid_row(g, sig.data(), F, wide);
      if (wide) {
        swiglu_bwd_row_avx512(g, u, da, sig.data(), dg, du, F);
        continue;
      }
      for (int64_t j = 0; j < F; ++j) {
        const float gv = ld(g, j), uv = ld(u, j), d = ld(da, j);
        const float s = sig[j];
        st(dg, j, d * uv * s * (1.0f + gv * (1.0f - s)));
        st(du, j, d * gv * s);
      }
    }
  });
}

}  // namespace

void swiglu_forward(const void* gu, int64_t N, int64_t F, void* act, DType at) {
  if (at == DType::f32) fwd(static_cast<const float*>(gu), N, F, static_cast<float*>(act));
  else fwd(static_cast<const bf16_t*>(gu), N, F, static_cast<bf16_t*>(act));
}

void swiglu_backward(const void* dact, const void* gu, int64_t N, int64_t F, void* dgu, DType at) {
  if (at == DType::f32)
    bwd(static_cast<const float*>(dact), static_cast<const float*>(gu), N, F, static_cast<float*>(dgu));
  else
    bwd(static_cast<const bf16_t*>(dact), static_cast<const bf16_t*>(gu), N, F, static_cast<bf16_t*>(dgu));
}

}  // namespace hf::model
