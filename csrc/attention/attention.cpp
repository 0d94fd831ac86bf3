/*
 * attention.cpp: hf::attention_forward / hf::attention_backward (contract in attention.h).
 *
 * Checks the shape, sizes the query block, picks the ISA's tile driver and runs the work items
 * (attention_kernels.h) on the shared arena. Items are claimed from an atomic counter in order,
 * heaviest first (largest-processing-time-first), which balances the causal triangle for any
 * thread count: every thread works until the queue is empty and the last items are the short ones.
 *
 * Backward recomputes P from lse (FlashAttention-2) with D = rowsum(dO*O), in one of two schedules:
 *   one pass (when the B * Hkv items balance the threads, e.g. B*Hkv = 8 on 2 or 8 threads): item
 *     (b, kv head) loops over pairs of key blocks, then the query blocks that see them, accumulating
 *     dK/dV per key block and dQ for all T x G rows in f32 scratch -- 5 tile products per block pair;
 *   two passes (otherwise, e.g. B * Hkv = 1, or 3 items on 2 threads): 1. dK, dV over items
 *     (b, kv head, 64-key block); 2. dQ over items (b, kv head, query block), recomputing
 *     Q.K^T and dO.V^T -- 7 products per block pair, but B * Hkv * T/64 items, which balance
 *     any thread count.
 * Either way each output is written by exactly one item: no atomics, no per-thread partial copies
 * of dQ, and results do not depend on the thread count within a schedule.
 * Extra memory: the (B, H, T) vector D; per running item one tile set (O((M + 128) * D + M * 64)
 * floats, M = 128 or 256 query rows) plus, in the one-pass schedule, the item's f32 dQ (T * G * D'
 * floats, D' = D padded to 16 or, for bf16, 32): the bound is spelt out in attention.h. Never T x S.
 * Tile sets are allocated once per worker per call, not per item (next_item in attention_impl.inc).
 */
#include "attention/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "attention/attention_kernels.h"
#include "runtime/cpu_features.h"
#include "runtime/errors.h"
#include "runtime/parallel.h"

namespace hf {
namespace {

using ItemFn = void (*)(const attn::Ctx&, int64_t, int64_t);

struct Kernels {
  ItemFn fwd, bwd_kv, bwd_q, bwd_single;
  void (*dvec)(const attn::Ctx&, float*, int64_t, int64_t);
};

Kernels pick(bool bf16) {
  const Isa isa = active_isa();
  if (isa == Isa::avx512_bf16 && bf16) return {attn::avx512bf16::fwd_items, attn::avx512bf16::bwd_kv_items, attn::avx512bf16::bwd_q_items, attn::avx512bf16::bwd_single_items, attn::avx512bf16::dvec_items};
  if (isa >= Isa::avx512) return {attn::avx512::fwd_items, attn::avx512::bwd_kv_items, attn::avx512::bwd_q_items, attn::avx512::bwd_single_items, attn::avx512::dvec_items};
  if (isa == Isa::avx2) return {attn::avx2::fwd_items, attn::avx2::bwd_kv_items, attn::avx2::bwd_q_items, attn::avx2::bwd_single_items, attn::avx2::dvec_items};
  return {attn::scalar::fwd_items, attn::scalar::bwd_kv_items, attn::scalar::bwd_q_items, attn::scalar::bwd_single_items, attn::scalar::dvec_items};
}

void check_shape(const AttentionShape& s) {
  HF_CHECK(s.B >= 1 && s.T >= 1 && s.S >= 1 && s.H >= 1 && s.Hkv >= 1 && s.D >= 1, ValueError,
           "attention: empty dimension in B=" << s.B << " T=" << s.T << " S=" << s.S << " H=" << s.H
                                              << " Hkv=" << s.Hkv << " D=" << s.D);
  HF_CHECK(s.H % s.Hkv == 0, ValueError, "attention: H=" << s.H << " is not divisible by Hkv=" << s.Hkv);
  HF_CHECK(std::isfinite(s.scale), ValueError, "attention: scale must be finite, got " << s.scale);
}

// Query rows (positions x heads) per tile: rows are the M of every tile product, and each key block
// is packed once per query block. The f32 forward takes 256 rows (K^T and V of a key block, 16-32
// KiB at D = 64-128, packed and streamed from L3 once per 256 rows: measured +4-5% at T = 4096);
// elsewhere 128 (the backward's tiles are five times as many, and the bf16 forward measured no gain).
int64_t tile_rows(const AttentionShape& s, bool forward) { return forward && s.dtype == DType::f32 ? 256 : 128; }

attn::Ctx make_ctx(const AttentionShape& s, int64_t kRows) {
  attn::Ctx c;
  c.B = s.B; c.T = s.T; c.S = s.S; c.H = s.H; c.Hkv = s.Hkv; c.D = s.D;
  c.G = s.H / s.Hkv;
  c.Dp = (s.D + 15) / 16 * 16;
  c.causal = s.causal;
  c.bf16 = s.dtype == DType::bf16;
  c.scale = s.scale != 0.f ? s.scale : float(1.0 / std::sqrt(double(s.D)));
  c.c2 = float(double(c.scale) * 1.4426950408889634);
  // M = Bq * G rows of about kRows per tile; smaller blocks when there would be too few items to
  // keep every thread busy (short sequences, B * Hkv small).
  int64_t bq = c.G >= kRows ? 1 : kRows / c.G;
  const int64_t want = 4 * int64_t(num_threads());
  while (bq > 8 && c.B * c.Hkv * ((c.T + bq - 1) / bq) < want) bq /= 2;
  c.Bq = bq;
  c.nqb = (c.T + bq - 1) / bq;
  c.nkb = (c.S + attn::kBk - 1) / attn::kBk;
  return c;
}

// Runs fn over items [0, n) claimed in order from a shared counter by up to num_threads() workers;
// each worker makes one call of fn, which claims items until none is left (next_item in
// attention_impl.inc), on one set of scratch tiles.
void run_items(ItemFn fn, attn::Ctx c, int64_t n) {
  const int64_t workers = std::min<int64_t>(n, num_threads());
  int64_t next = 0;
  c.next = &next;
  parallel_for(0, workers, 1, [&](int64_t, int64_t) { fn(c, 0, n); });
}

}  // namespace

void attention_forward(const AttentionShape& shape, const void* q, const void* k, const void* v, void* out, float* lse) {
  check_shape(shape);
  attn::Ctx c = make_ctx(shape, tile_rows(shape, true));
  c.q = q; c.k = k; c.v = v; c.out = out; c.lse = lse;
  run_items(pick(c.bf16).fwd, c, c.B * c.Hkv * c.nqb);
}

void attention_backward(const AttentionShape& shape, const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, void* dq, void* dk, void* dv) {
  check_shape(shape);
  attn::Ctx c = make_ctx(shape, tile_rows(shape, false));
  c.q = q; c.k = k; c.v = v; c.out_in = out; c.dout = dout; c.lse_in = lse;
  c.dq = dq; c.dk = dk; c.dv = dv;
  const Kernels kern = pick(c.bf16);
  // D[b, h, t] = sum_d dout * out (see dvec_items for why in f32, in qk's order).
  std::vector<float> Dvec(size_t(c.B * c.H * c.T));
  parallel_for(0, c.B * c.T, 16, [&](int64_t lo, int64_t hi) { kern.dvec(c, Dvec.data(), lo, hi); });
  c.Dvec = Dvec.data();
  // One pass over B * Hkv equal items when they keep the threads busy (>= 85% of the ideal
  // balance, e.g. 8 items on 2 or 8 threads, 12 on 7); else the two-pass scheme, whose items are
  // small enough to balance any thread count at 7/5 of the work.
  const int64_t n = c.B * c.Hkv, p = num_threads(), rounds = (n + p - 1) / p;
  if (c.nkb > 1 && double(n) / double(rounds * p) >= 0.85) {
    run_items(kern.bwd_single, c, n);
  } else {
    run_items(kern.bwd_kv, c, c.B * c.Hkv * c.nkb);
    run_items(kern.bwd_q, c, c.B * c.Hkv * c.nqb);
  }
}

}  // namespace hf
