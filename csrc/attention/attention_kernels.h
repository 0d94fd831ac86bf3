/*
 * attention_kernels.h: what the per-ISA attention translation units share with the driver.
 *
 * attention.cpp (baseline ISA) validates the shape, picks an ISA and runs hf::parallel_for over
 * work items; each attention_<isa>.cpp compiles the same tile driver (attention_impl.inc) inside
 * its own namespace around that ISA's microkernels, so no inline function is ever shared between
 * translation units built with different flags (the linker would keep just one copy of it).
 *
 * Work items (each independent, each writes disjoint outputs, so results do not depend on threads):
 *   forward / dQ pass:   (b, kv head, query block of Bq positions x the G = H/Hkv query heads)
 *   dK/dV pass:          (b, kv head, key block of 64 keys), looping over every query that sees it
 *   one-pass backward:   (b, kv head), all of its key and query blocks
 * Each worker calls an item function once; the function claims items from the shared counter
 * Ctx::next until none is left (next_item), so its scratch tiles are allocated once per worker.
 * Items are numbered heaviest first (causal: late query blocks, early key blocks), so the dynamic
 * scheduler hands out the long items first and the short ones fill the gaps: no core idles at
 * the end of the causal triangle.
 */
#pragma once
#include <cstdint>

namespace hf::attn {

constexpr int64_t kBk = 64;  // keys per block (the S tile is M x 64 floats)

struct Ctx {
  int64_t B = 0, T = 0, S = 0, H = 0, Hkv = 0, D = 0;
  int64_t G = 1;    // query heads per kv head
  int64_t Dp = 0;   // D rounded up to 16 (packed rows are zero padded)
  int64_t Bq = 0;   // query positions per block; a block holds M = Bq * G rows
  int64_t nqb = 0, nkb = 0;
  bool causal = true;
  bool bf16 = false;
  float scale = 0.f;   // softmax scale
  float c2 = 0.f;      // scale * log2(e): scores in base-2 units
  const void *q = nullptr, *k = nullptr, *v = nullptr, *out_in = nullptr, *dout = nullptr;
  void *out = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
  float* lse = nullptr;          // (B, H, T), natural log
  const float* lse_in = nullptr;
  const float* Dvec = nullptr;   // (B, H, T): rowsum(dout * out)
  int64_t* next = nullptr;       // shared queue of the next unclaimed item (see next_item), or none
};

#define HF_ATTN_DECLARE(ns)                                          \
  namespace ns {                                                     \
  void fwd_items(const Ctx& c, int64_t lo, int64_t hi);              \
  void bwd_kv_items(const Ctx& c, int64_t lo, int64_t hi);           \
  void bwd_q_items(const Ctx& c, int64_t lo, int64_t hi);            \
  void bwd_single_items(const Ctx& c, int64_t lo, int64_t hi);       \
  void dvec_items(const Ctx& c, float* Dvec, int64_t lo, int64_t hi); \
  }
HF_ATTN_DECLARE(scalar)
HF_ATTN_DECLARE(avx2)
HF_ATTN_DECLARE(avx512)
HF_ATTN_DECLARE(avx512bf16)
#undef HF_ATTN_DECLARE

}  // namespace hf::attn
