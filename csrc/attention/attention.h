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
 * Extra memory, never T x S: the backward's (B, H, T) f32 vector D = rowsum(dout * out); per running
 * work item (at most one per thread) its tiles, O((M + 64 * 2) * D + M * 64) floats with M <= 256
 * query rows; and, when the backward runs its one-pass schedule (attention.cpp), each running item's
 * f32 dQ of all its query rows: T * G * D' floats (G = H / Hkv, D' = D rounded up to 16 for f32, to
 * 32 for bf16). In all: 4 * (B*H*T + threads * (T*G*D' + tiles)) bytes, e.g. 2 threads at T = 4096,
 * H = 8, Hkv = 2, D = 128 hold 16 MiB of dQ scratch (a thread's share of dq itself, in f32).
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
