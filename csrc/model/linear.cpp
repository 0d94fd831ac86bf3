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
#include "model/kernels.h"
#include "runtime/parallel.h"

namespace hf::model {

void cast_f32_to_bf16(const float* src, bf16_t* dst, int64_t n) {
  parallel_for(0, n, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) dst[i] = f32_to_bf16(src[i]);
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

void linear_backward_weight(const void* dy, const void* x, int64_t N, int64_t in, int64_t out, DType ab, float* dW) {
  GemmShape s;
  s.M = out;
  s.N = in;
  s.K = N;
  s.trans_a = true;
  s.ab_type = ab;
  s.c_type = DType::f32;
  s.beta = 1.0f;
  gemm(s, dy, x, dW);
}

}  // namespace hf::model
