/*
 * kernels.h: the element-wise and row-wise kernels of the Llama-style model (csrc/model/).
 *
 * Activations are "A" typed: f32, or bf16 in mixed-precision mode (the GEMM inputs); every
 * statistic (RMS, softmax max/sum, loss) is f32. Each kernel is one parallel pass over its rows,
 * fusing the element-wise work the model needs at that point (residual add + norm, RoPE + the
 * q/k/v split, SwiGLU) so activations are read and written once. Shapes are in comments at the
 * arguments; N = B*T tokens, d = d_model.
 */
#pragma once
#include <cstdint>
#include <cstring>

#include "runtime/bf16.h"
#include "runtime/gemm.h"

namespace hf::model {

// ---- typed load/store (A = float or bf16_t) ------------------------------------------------
inline float ld(const float* p, int64_t i) { return p[i]; }
inline float ld(const bf16_t* p, int64_t i) { return bf16_to_f32(p[i]); }
inline void st(float* p, int64_t i, float v) { p[i] = v; }
// Round to nearest even like hf::f32_to_bf16, written branch-free so loops storing bf16 vectorise.
inline bf16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan_mask = 0u - uint32_t((bits & 0x7fffffffu) > 0x7f800000u);
  return bf16_t((nan_mask & ((bits >> 16) | 0x40u)) | (~nan_mask & rounded));
}
inline void st(bf16_t* p, int64_t i, float v) { p[i] = to_bf16(v); }

inline int64_t dsize(DType t) { return t == DType::f32 ? 4 : 2; }

// exp(x) to ~2 ulp, branch-free and libm-free so loops over it vectorise even at the SSE2
// baseline (std::exp and floorf do not). Round-to-nearest of x*log2(e) uses the 1.5*2^23 trick;
// the clamp keeps 2^n a normal float. Softmax/silu only feed it x <= ~88.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float big = 12582912.0f;  // 1.5 * 2^23
  const float n = (x * 1.44269504088896341f + big) - big;
  float r = x - n * 0.693359375f;  // Cody-Waite: ln2 = 0.693359375 - 2.12194440e-4
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (int32_t(n) + 127) * (1 << 23);
  float s;
  std::memcpy(&s, &e, 4);
  return p * s;
}

// x[j] = exp(x[j] - shift) in place, and s[j] = 1 / (1 + exp(-g[j])): fast_exp on 4 lanes with
// SSE2 intrinsics (the compiler will not vectorise the clamp without -ffinite-math-only).
void exp_shift_inplace(float* x, int64_t n, float shift);
void sigmoid_row_f32(const float* g, float* s, int64_t n);

// Row reductions compiled with reassociation allowed (so they vectorise); the order is fixed by
// the binary, so results are still deterministic. Inputs must be finite.
float row_max(const float* x, int64_t n);
// out[j] = to_bf16(x[j] * s) (the softmax gradient's store in mixed precision).
void scale_row_to_bf16(const float* x, float s, bf16_t* out, int64_t n);
float row_sum(const float* x, int64_t n);
float row_sumsq(const float* x, int64_t n);
float row_dot(const float* a, const float* b, int64_t n);

// Convert n f32 values to bf16 (round to nearest even), in parallel.
void cast_f32_to_bf16(const float* src, bf16_t* dst, int64_t n);

// ---- embedding -----------------------------------------------------------------------------
// x (N, d) f32 = table[tokens[n]]; table (V, d) f32.
void embedding_forward(const int32_t* tokens, int64_t N, const float* table, int64_t d, float* x);
// dtable[tokens[n]] += dx[n]: grouped by token id (counting sort) so each table row is owned by
// one task and summed in token order: deterministic for any thread count.
void embedding_backward(const int32_t* tokens, int64_t N, const float* dx, int64_t d, int64_t V, float* dtable);

// ---- RMSNorm (with the residual add fused in) ------------------------------------------------
// If add != nullptr: x_out = x + add (both (N, d) f32; x_out may alias x). Then
// h = w * (x_out * rstd), rstd = 1/sqrt(mean(x_out^2) + eps); h is (N, d) of type `ht`.
void add_rmsnorm_forward(const float* x, const float* add, float* x_out, const float* w, int64_t N, int64_t d,
                         float eps, void* h, DType ht, float* rstd);
// Given dh (N, d) f32, x (N, d) f32, rstd (N): dx += rstd * (dh*w - xhat * mean(dh*w*xhat)),
// dw += sum_n dh * xhat (deterministic fixed-chunk reduction). If dx_copy != nullptr, the
// updated dx is also written there as `ct` (the bf16 GEMM input of the next backward step).
void rmsnorm_backward(const float* dh, const float* x, const float* rstd, const float* w, int64_t N, int64_t d,
                      float* dx, float* dw, void* dx_copy, DType ct);

// ---- RoPE (transformers' Llama convention: rotate_half on pairs (i, i + D/2)) ---------------
// cos/sin tables: (max_seq_len, D/2) f32.
// qkv (N, H*D + 2*Hkv*D) f32 rows [q | k | v] -> q (N, H*D), k and v written at k_out/v_out
// (rows of Hkv*D; row n goes to k_out + (n % T) * Hkv*D + (n / T) * kv_batch_stride), all
// type `at`; the position of row n is pos0 + n % T.
struct RopeTables { const float* cos; const float* sin; };
void rope_qkv_forward(const float* qkv, int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t pos0,
                      RopeTables tab, void* q, void* k_out, void* v_out, int64_t kv_batch_stride, DType at);
// dq (N, H*D), dk/dv (N, Hkv*D) -> dqkv (N, H*D + 2*Hkv*D): the inverse rotation of dq/dk,
// dv copied, all of type `at`.
void rope_qkv_backward(const void* dq, const void* dk, const void* dv, int64_t B, int64_t T, int64_t H, int64_t Hkv,
                       int64_t D, RopeTables tab, void* dqkv, DType at);

// ---- SwiGLU --------------------------------------------------------------------------------
// gu (N, 2F) rows [gate | up] -> act (N, F) = silu(gate) * up. gu and act of type `at`.
void swiglu_forward(const void* gu, int64_t N, int64_t F, void* act, DType at);
// dact (N, F) -> dgu (N, 2F): dgate = dact*up*s*(1 + g*(1-s)), dup = dact*silu(g).
void swiglu_backward(const void* dact, const void* gu, int64_t N, int64_t F, void* dgu, DType at);

// ---- fused chunked cross-entropy -------------------------------------------------------------
// Over rows of h (N, d) (type `ht`) and the output matrix W (V, d) (type `ht` for the GEMM; f32
// master for nothing here): processes `chunk` rows at a time: logits (chunk, V) f32 = h W^T,
// loss_n = lse - logit[target], and (if dh != nullptr) dlogits = (softmax - onehot) * scale
// written over the chunk's logits (cast to `ht`), then dh[chunk] = dlogits W (f32) and
// dW += dlogits^T h[chunk] (f32, accumulated). Targets of -100 contribute nothing.
// Returns the SUM of per-token losses (double) over valid targets. `work` must hold
// ce_workspace_bytes(chunk, N, V, ht, dh != nullptr) bytes. In bf16 with a gradient, dW is
// updated once per group of ce_group_rows(chunk, N, V, ht) rows (a multiple of chunk, or N;
// bf16 dlogits of up to 64 MiB are kept) rather than once per chunk. dW_zero: dW is known to be
// all zeros (zero_grad, nothing written since): the first dW GEMM overwrites instead of adding.
int64_t ce_group_rows(int64_t chunk, int64_t N, int64_t V, DType ht);
int64_t ce_workspace_bytes(int64_t chunk, int64_t N, int64_t V, DType ht, bool with_grad);
double cross_entropy_fused(const void* h, const void* W, const int32_t* targets, int64_t N, int64_t d, int64_t V,
                           DType ht, int64_t chunk, float scale, float* dh, float* dW, void* work,
                           bool dW_zero = false);

}  // namespace hf::model

namespace hf::model {

// ---- linear layers on hf::gemm (weights [out, in], as transformers stores them) -------------
// y (N, out) = x (N, in) W^T + beta * y. x and W of type `ab`, y of type `ct`.
void linear_forward(const void* x, const void* W, int64_t N, int64_t in, int64_t out, DType ab, void* y, DType ct,
                    float beta = 0.0f);
// dx (N, in) = dy (N, out) W + beta * dx.
void linear_backward_input(const void* dy, const void* W, int64_t N, int64_t in, int64_t out, DType ab, void* dx,
                           DType ct, float beta = 0.0f);
// dW (out, in) f32 = dy^T (out, N) x (N, in) + beta * dW: accumulated (beta = 1) into the flat f32
// gradient buffer, or written (beta = 0) when the region is known to hold zeros. ld_dy: dy's row
// stride in elements (0: packed, = out), e.g. V for a block of the LM head's dlogits columns.
void linear_backward_weight(const void* dy, const void* x, int64_t N, int64_t in, int64_t out, DType ab, float* dW,
                            float beta = 1.0f, int64_t ld_dy = 0);

}  // namespace hf::model
