/*
 * attention.h: the contract of the fused causal attention kernels (implemented in this folder).
 *
 *   forward:  out = softmax(scale * q k^T + mask) v,   lse = logsumexp of each row (natural log, f32)
 *   backward: dq, dk, dv from dout, recomputing P from lse (FlashAttention-2), D = rowsum(dout * out)
 *
 * Layouts (all C-contiguous, row-major):
 *   q, out, dout, dq: (B, T, H, D)     k, v, dk, dv: (B, S, Hkv, D)     lse: (B, H, T) float32
 * H % Hkv == 0; query head h uses kv head h / (H / Hkv). dq/dk/dv are overwritten (not accumulated),
 * and dk/dv are summed over the query heads that share a kv head.
 * dtype applies to q, k, v, out, dout, dq, dk, dv alike (f32, or bf16 with f32 accumulation).
 * Causal with S != T aligns the last query with the last key: query i sees keys j <= i + (S - T)
 * (torch's is_causal for T == S). A query row that sees no key (only when T > S) gives out = 0,
 * lse = -inf, and zero gradients.
 * Extra memory is O(threads * block * (block + D)), never T x S.
 */
#pragma once
#include <cstdint>

#include "runtime/gemm.h"  // hf::DType

namespace hf {

struct AttentionShape {
  int64_t B = 0, T = 0, S = 0, H = 0, Hkv = 0, D = 0;
  bool causal = true;
  float scale = 0.0f;  // 0 means 1/sqrt(D)
  DType dtype = DType::f32;
};

void attention_forward(const AttentionShape& shape, const void* q, const void* k, const void* v, void* out, float* lse);

void attention_backward(const AttentionShape& shape, const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, void* dq, void* dk, void* dv);

}  // namespace hf
