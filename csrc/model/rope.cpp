/*
 * rope.cpp: rotary position embedding in transformers' Llama convention, fused with the split
 * of the one QKV GEMM output into the q, k, v layouts attention expects.
 *
 *   inv_freq[i] = 1 / theta^(2i/D),  angle = pos * inv_freq[i]  (both f32, as transformers does)
 *   out[i]       = x[i] * cos - x[i + D/2] * sin
 *   out[i + D/2] = x[i + D/2] * cos + x[i] * sin          for i < D/2 ("rotate_half")
 *   backward: the transposed rotation (angle -> -angle).
 *
 * qkv rows (N, H*D + 2*Hkv*D) come from a single GEMM against the contiguous [Wq; Wk; Wv]
 * block of the flat parameter buffer. One pass reads each row once and writes rotated q, rotated
 * k and the copied v, already in the attention dtype (bf16 in mixed precision): the rotation,
 * the split and the cast cost one memory pass together. k/v may go straight into a KV cache.
 * With AVX-512 and D % 32 == 0 the per-row loops run in rope_avx512.cpp (bitwise equal results).
 */
#include <type_traits>

#include "model/kernels.h"
#include "runtime/cpu_features.h"
#include "runtime/parallel.h"

namespace hf::model {

// AVX-512 row loops (rope_avx512.cpp): bitwise the same results as rot_fwd/rot_bwd below.
void rope_heads_fwd_avx512(const float* x, float* out, const float* c, const float* s, int64_t heads, int64_t D);
void rope_heads_fwd_avx512(const float* x, bf16_t* out, const float* c, const float* s, int64_t heads, int64_t D);
void rope_heads_bwd_avx512(const float* g, float* out, const float* c, const float* s, int64_t heads, int64_t D);
void rope_heads_bwd_avx512(const bf16_t* g, bf16_t* out, const float* c, const float* s, int64_t heads, int64_t D);
void cast_row_bf16_avx512(const float* src, bf16_t* dst, int64_t n);

namespace {

// The AVX-512 loops need whole 16-lane vectors in each half of a head.
bool wide_rope(int64_t D) { return active_isa() >= Isa::avx512 && D % 32 == 0; }

template <class A>
inline void rot_fwd(const float* x, A* out, const float* c, const float* s, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    st(out, i, a * c[i] - b * s[i]);
    st(out, i + half, b * c[i] + a * s[i]);
  }
}

template <class A>
inline void rot_bwd(const A* g, A* out, const float* c, const float* s, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = ld(g, i), b = ld(g, i + half);
    st(out, i, a * c[i] + b * s[i]);
    st(out, i + half, b * c[i] - a * s[i]);
  }
}

template <class A>
void fwd(const float* qkv, int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t pos0, RopeTables tab,
         A* q, A* k_out, A* v_out, int64_t kv_stride) {
  const int64_t half = D / 2, qd = H * D, kd = Hkv * D, row = qd + 2 * kd;
  const bool wide = wide_rope(D);
  parallel_for(0, B * T, std::max<int64_t>(1, 2048 / row), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t b = n / T, t = n % T, pos = pos0 + t;
      const float* c = tab.cos + pos * half;
      const float* s = tab.sin + pos * half;
      const float* src = qkv + n * row;
      A* qr = q + n * qd;
      A* kr = k_out + b * kv_stride + t * kd;
      A* vr = v_out + b * kv_stride + t * kd;
      if (wide) {
        rope_heads_fwd_avx512(src, qr, c, s, H, D);
        rope_heads_fwd_avx512(src + qd, kr, c, s, Hkv, D);
        if constexpr (std::is_same_v<A, bf16_t>) cast_row_bf16_avx512(src + qd + kd, vr, kd);
        else std::memcpy(vr, src + qd + kd, sizeof(float) * kd);
        continue;
      }
      for (int64_t h = 0; h < H; ++h) rot_fwd(src + h * D, qr + h * D, c, s, half);
      for (int64_t h = 0; h < Hkv; ++h) rot_fwd(src + qd + h * D, kr + h * D, c, s, half);
      for (int64_t j = 0; j < kd; ++j) st(vr, j, src[qd + kd + j]);
    }
  });
}

template <class A>
void bwd(const A* dq, const A* dk, const A* dv, int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D,
         RopeTables tab, A* dqkv) {
  const int64_t half = D / 2, qd = H * D, kd = Hkv * D, row = qd + 2 * kd;
  const bool wide = wide_rope(D);
  parallel_for(0, B * T, std::max<int64_t>(1, 2048 / row), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const int64_t t = n % T;
      const float* c = tab.cos + t * half;
      const float* s = tab.sin + t * half;
      A* dst = dqkv + n * row;
      if (wide) {
        rope_heads_bwd_avx512(dq + n * qd, dst, c, s, H, D);
        rope_heads_bwd_avx512(dk + n * kd, dst + qd, c, s, Hkv, D);
        std::memcpy(dst + qd + kd, dv + n * kd, sizeof(A) * kd);
        continue;
      }
      for (int64_t h = 0; h < H; ++h) rot_bwd(dq + n * qd + h * D, dst + h * D, c, s, half);
      for (int64_t h = 0; h < Hkv; ++h) rot_bwd(dk + n * kd + h * D, dst + qd + h * D, c, s, half);
      std::memcpy(dst + qd + kd, dv + n * kd, sizeof(A) * kd);
    }
  });
}

}  // namespace

void rope_qkv_forward(const float* qkv, int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t pos0,
                      RopeTables tab, void* q, void* k_out, void* v_out, int64_t kv_stride, DType at) {
  if (at == DType::f32)
    fwd(qkv, B, T, H, Hkv, D, pos0, tab, static_cast<float*>(q), static_cast<float*>(k_out), static_cast<float*>(v_out),
        kv_stride);
  else
    fwd(qkv, B, T, H, Hkv, D, pos0, tab, static_cast<bf16_t*>(q), static_cast<bf16_t*>(k_out),
        static_cast<bf16_t*>(v_out), kv_stride);
}

void rope_qkv_backward(const void* dq, const void* dk, const void* dv, int64_t B, int64_t T, int64_t H, int64_t Hkv,
                       int64_t D, RopeTables tab, void* dqkv, DType at) {
  if (at == DType::f32)
    bwd(static_cast<const float*>(dq), static_cast<const float*>(dk), static_cast<const float*>(dv), B, T, H, Hkv, D,
        tab, static_cast<float*>(dqkv));
  else
    bwd(static_cast<const bf16_t*>(dq), static_cast<const bf16_t*>(dk), static_cast<const bf16_t*>(dv), B, T, H, Hkv,
        D, tab, static_cast<bf16_t*>(dqkv));
}

}  // namespace hf::model
