/*
 * swiglu.cpp: the SwiGLU gate of the Llama MLP, forward and backward.
 *
 *   forward   act = silu(g) * u,  silu(g) = g * s,  s = 1 / (1 + exp(-g))
 *   backward  dg = dact * u * s * (1 + g * (1 - s)),  du = dact * silu(g)
 *
 * gu rows (N, 2F) = [gate | up] come from ONE GEMM against the contiguous [W_gate; W_up] block
 * of the flat parameters; the backward writes dgu in the same layout so the two weight
 * gradients and the input gradient are again one GEMM each. Math in f32 (fast_exp vectorises),
 * storage f32 or bf16. One read and one write per element.
 */
#include <type_traits>
#include <vector>

#include "model/kernels.h"
#include "runtime/parallel.h"

namespace hf::model {
namespace {

// s[j] = 1 / (1 + exp(-g[j])), 4 lanes at a time (kernels.h: sigmoid_row_f32).
template <class A>
void sigmoid_row(const A* g, float* s, int64_t F) {
  if constexpr (std::is_same_v<A, float>) {
    sigmoid_row_f32(g, s, F);
  } else {
    for (int64_t j = 0; j < F; ++j) s[j] = ld(g, j);
    sigmoid_row_f32(s, s, F);
  }
}

template <class A>
void fwd(const A* gu, int64_t N, int64_t F, A* act) {
  parallel_for(0, N, std::max<int64_t>(1, 4096 / F), [&](int64_t lo, int64_t hi) {
    std::vector<float> sig(static_cast<size_t>(F));
    for (int64_t n = lo; n < hi; ++n) {
      const A* g = gu + n * 2 * F;
      const A* u = g + F;
      A* a = act + n * F;
      sigmoid_row(g, sig.data(), F);
      for (int64_t j = 0; j < F; ++j) st(a, j, ld(g, j) * sig[j] * ld(u, j));
    }
  });
}

template <class A>
void bwd(const A* dact, const A* gu, int64_t N, int64_t F, A* dgu) {
  parallel_for(0, N, std::max<int64_t>(1, 4096 / F), [&](int64_t lo, int64_t hi) {
    std::vector<float> sig(static_cast<size_t>(F));
    for (int64_t n = lo; n < hi; ++n) {
      const A* g = gu + n * 2 * F;
      const A* u = g + F;
      const A* da = dact + n * F;
      A* dg = dgu + n * 2 * F;
      A* du = dg + F;
      sigmoid_row(g, sig.data(), F);
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
