/*
 * gemm.h: dense matrix products on oneDNN's matmul primitive, the one GEMM of the core.
 *
 *   C[b] (M, N) = alpha * op(A[b]) (M, K) @ op(B[b]) (K, N) + beta * C[b]
 *
 * A, B and C are row-major with leading dimensions lda/ldb/ldc (elements). trans_a means A is
 * stored as (K, M); trans_b means B is stored as (N, K) -- the [out, in] weight layout, so a
 * linear layer y = x W^T is gemm(M=tokens, N=out, K=in, trans_b=true). A batch stride of 0
 * broadcasts that operand over the batch. A and B are f32 or bf16 (both the same); C is f32 or
 * bf16, accumulation is always f32.
 *
 * Primitives are cached by their full description (oneDNN's own cache would still pay for
 * building the primitive descriptor on every call, ~10-50 us). Execution runs inside the
 * shared arena (parallel.h), so oneDNN uses exactly hf::num_threads() threads. Calls made
 * from inside a parallel region should set `single_thread` to run the product on the
 * calling thread only.
 */
#pragma once
#include <cstdint>

namespace hf {

enum class DType : int { f32 = 0, bf16 = 1 };

struct GemmShape {
  int64_t M = 0, N = 0, K = 0;
  int64_t batch = 1;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;              // 0 = packed (K or M for A, N or K for B, N for C)
  int64_t stride_a = -1, stride_b = -1, stride_c = -1;  // per-batch strides; -1 = packed, 0 = broadcast
  DType ab_type = DType::f32;
  DType c_type = DType::f32;
  float alpha = 1.0f, beta = 0.0f;
  bool single_thread = false;
};

void gemm(const GemmShape& shape, const void* A, const void* B, void* C);

// Number of primitives currently cached (diagnostics and tests).
int64_t gemm_cache_size();

}  // namespace hf
