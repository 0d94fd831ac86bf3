/*
 * optim.cpp: the segment table, its fixed chunks, the one parallel region per step, the
 * deterministic gradient norm, and the per-segment float32 coefficients.
 *
 * Cost model: a step is one parallel_for over num_chunks() chunks of kChunk elements in the
 * flattened element space; each chunk walks the few segments it overlaps (chunk_first_ gives the
 * first without a search). Per chunk the four fp32 streams (p, g, m, v) are 64 KiB each, large
 * enough to amortise the walk and small enough for TBB to balance two or more threads.
 */
#include "optim/optim.h"

#include <cmath>

#include "runtime/cpu_features.h"
#include "runtime/errors.h"
#include "runtime/parallel.h"

namespace hf::optim {

uint32_t hash32(uint32_t x) {
  x ^= x >> 16; x *= 0x85ebca6bu; x ^= x >> 13; x *= 0xc2b2ae35u; x ^= x >> 16;
  return x;
}

namespace {

StepPieceFn pick_step() {
  switch (active_isa()) {
    case Isa::avx512:
    case Isa::avx512_bf16: return step_piece_avx512();
    case Isa::avx2: return step_piece_avx2();
    default: return step_piece_scalar();
  }
}
SumsqPieceFn pick_sumsq() {
  switch (active_isa()) {
    case Isa::avx512:
    case Isa::avx512_bf16: return sumsq_piece_avx512();
    case Isa::avx2: return sumsq_piece_avx2();
    default: return sumsq_piece_scalar();
  }
}

// The 16 lanes of one chunk, combined in a fixed pairwise order.
double fold16(const double* a) {
  double b[8];
  for (int i = 0; i < 8; ++i) b[i] = a[i] + a[i + 8];
  for (int i = 0; i < 4; ++i) b[i] = b[i] + b[i + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// The same fixed tree as parallel_reduce_deterministic with grain 1 (midpoint splits).
double tree_sum(const std::vector<double>& v, int64_t lo, int64_t hi) {
  if (hi - lo <= 1) return 0.0 + v[lo];
  const int64_t mid = lo + (hi - lo) / 2;
  return tree_sum(v, lo, mid) + tree_sum(v, mid, hi);
}

Coef make_coef(Algo algo, const Hyper& h, int64_t t) {
  // t is the step number being taken (1-based), as torch's per-parameter state["step"].
  Coef k;
  switch (algo) {
    case Algo::adamw: {
      const double w1 = 1.0 - h.beta1;
      k.decay = float(1.0 - h.lr * h.weight_decay);
      k.a = float(w1);
      k.b = 1.f - float(w1);
      k.small_w = std::abs(w1) < 0.5;
      k.c = float(h.beta2);
      k.d = float(1.0 - h.beta2);
      const double bc1 = 1.0 - std::pow(h.beta1, double(t));
      const double bc2 = 1.0 - std::pow(h.beta2, double(t));
      k.bc2s = float(std::sqrt(bc2));
      k.eps = float(h.eps);
      k.neg_step = float(-(h.lr / bc1));
      break;
    }
    case Algo::lion:
      k.decay = float(1.0 - h.lr * h.weight_decay);
      k.a = float(h.beta1);
      k.b = float(1.0 - h.beta1);
      k.c = float(h.beta2);
      k.d = float(1.0 - h.beta2);
      k.neg_step = float(-h.lr);
      break;
    case Algo::sgd:
      k.eps = float(h.weight_decay);
      k.c = float(h.beta1);
      k.d = float(1.0 - h.beta2);
      k.momentum = h.beta1 != 0.0;
      k.nesterov = h.nesterov;
      k.first = t == 1;  // t counts momentum steps for SGD: no momentum buffer yet
      k.neg_step = float(-h.lr);
      break;
  }
  return k;
}

}  // namespace

Plan::Plan(Algo algo, bool bf16, std::vector<Segment> segs, uint64_t index_base)
    : algo_(algo), bf16_(bf16), segs_(std::move(segs)), index_base_(index_base) {
  starts_.resize(segs_.size() + 1);
  int64_t pos = 0;
  for (size_t i = 0; i < segs_.size(); ++i) {
    HF_CHECK(segs_[i].n >= 0, ValueError, "segment " << i << " has negative size " << segs_[i].n);
    starts_[i] = pos;
    pos += segs_[i].n;
  }
  starts_[segs_.size()] = pos;
  total_ = pos;
  chunk_first_.resize(num_chunks());
  size_t s = 0;
  for (int64_t c = 0; c < num_chunks(); ++c) {
    while (s + 1 < segs_.size() && starts_[s + 1] <= c * kChunk) ++s;
    chunk_first_[c] = int32_t(s);
  }
}

// Calls piece(seg_index, Piece, acc16) for every piece of chunk c (the segments it overlaps,
// split where the global element index crosses a multiple of 2^32), then folds acc16 to one sum.
template <class F>
double Plan::walk_chunk(int64_t c, F&& piece, bool want) const {
  alignas(64) double acc[16] = {0};
  const int64_t lo = c * kChunk, hi = std::min(lo + kChunk, total_);
  const size_t es = bf16_ ? 2 : 4;
  for (size_t s = size_t(chunk_first_[c]); s < segs_.size() && starts_[s] < hi; ++s) {
    const Segment& sg = segs_[s];
    const int64_t a = std::max(lo, starts_[s]), b = std::min(hi, starts_[s + 1]);
    if (b <= a || sg.grad == nullptr) continue;
    int64_t off = a - starts_[s];
    int64_t left = b - a;
    while (left > 0) {
      const uint64_t idx = index_base_ + uint64_t(starts_[s] + off);
      const uint64_t room = (uint64_t(1) << 32) - (idx & 0xffffffffu);
      const int64_t len = int64_t(std::min<uint64_t>(uint64_t(left), room));
      Piece pc{static_cast<char*>(sg.param) + off * es, static_cast<const char*>(sg.grad) + off * es,
               sg.master ? sg.master + off : nullptr, sg.m ? sg.m + off : nullptr, sg.v ? sg.v + off : nullptr,
               len, idx};
      piece(s, pc, want ? acc : nullptr);
      off += len;
      left -= len;
    }
  }
  return want ? fold16(acc) : 0.0;
}

double Plan::grad_sumsq() const {
  const SumsqPieceFn fn = pick_sumsq();
  const bool bf = bf16_;
  // Reads only the gradient (4 or 2 bytes per element). Grain 1 over chunks: the leaves of the
  // fixed tree are single chunks, so the sum is the same for any thread count.
  auto leaf = [&](int64_t c0, int64_t c1) {
    double s = 0.0;
    for (int64_t c = c0; c < c1; ++c)
      s += walk_chunk(c, [&](size_t, const Piece& pc, double* acc) { fn(pc.g, bf, pc.n, acc); }, true);
    return s;
  };
  return parallel_reduce_deterministic(int64_t(0), num_chunks(), int64_t(1), 0.0, leaf,
                                       [](double x, double y) { return x + y; });
}

double Plan::step(const std::vector<Hyper>& hypers, const StepConfig& cfg_in, bool want_sumsq) {
  StepConfig cfg = cfg_in;
  cfg.algo = algo_;
  cfg.bf16 = bf16_;
  HF_CHECK(std::isfinite(cfg.grad_mul), ValueError, "grad multiplier (grad_scale * clip_coef) is not finite: " << cfg.grad_mul);
  std::vector<Coef> coefs(segs_.size());
  for (size_t i = 0; i < segs_.size(); ++i) {
    const Segment& sg = segs_[i];
    if (sg.grad == nullptr) continue;
    HF_CHECK(sg.group >= 0 && size_t(sg.group) < hypers.size(), ValueError,
             "segment " << i << " names group " << sg.group << " but there are " << hypers.size() << " groups");
    HF_CHECK(sg.step != nullptr, ValueError, "segment " << i << " has no step counter");
    coefs[i] = make_coef(algo_, hypers[size_t(sg.group)], *sg.step + 1);
    HF_CHECK(!coefs[i].momentum || sg.m != nullptr, ValueError,
             "group " << sg.group << " uses momentum but this optimizer was built without a momentum buffer "
                      "(momentum was 0 in every group at construction)");
  }
  const StepPieceFn fn = pick_step();
  // ONE parallel region for every segment. When asked, each chunk's gradient squares (the same
  // 16 lanes as grad_sumsq) are kept and summed afterwards in grad_sumsq's tree: bitwise equal.
  const int64_t nc = num_chunks();
  std::vector<double> partial(want_sumsq ? nc : 0);
  parallel_for(0, nc, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const double s = walk_chunk(c, [&](size_t i, const Piece& pc, double* acc) { fn(cfg, coefs[i], pc, acc); },
                                  want_sumsq);
      if (want_sumsq) partial[c] = s;
    }
  });
  const double sumsq = want_sumsq && nc > 0 ? tree_sum(partial, 0, nc) : 0.0;
  // SGD counts only the steps that used momentum: as torch, the first step WITH momentum (even
  // if earlier steps ran without) starts the buffer at d, undamped.
  for (size_t i = 0; i < segs_.size(); ++i)
    if (segs_[i].grad != nullptr && (algo_ != Algo::sgd || coefs[i].momentum)) ++*segs_[i].step;
  return sumsq;
}

}  // namespace hf::optim
