/*
 * optim.h: fused optimizer steps (AdamW, Lion, SGD) over a "segment table" of many tensors.
 *
 * An optimizer step is pure memory traffic (AdamW fp32: read p, g, m, v and write p, m, v =
 * 28 bytes per parameter), so everything here is organised around touching each byte once:
 *
 *   - A Plan flattens the list of (param, grad, state) segments into one element space of
 *     `total` elements cut into fixed chunks of kChunk elements (64 KiB of fp32 per stream).
 *     A chunk may span many small segments, so 10,000 small tensors cost ONE parallel region
 *     (one thread wake-up) and a few hundred chunks, not 10,000 parallel_for calls.
 *   - The gradient's global L2 norm is one deterministic pass (fixed chunks, 16 float64 lanes
 *     per chunk, fixed combine tree): identical for any thread count and any ISA. The clip
 *     coefficient and the caller's grad_scale are folded into the step as one multiplier
 *     (`grad_mul`); the gradient is never written. When the caller needs no clipping and no
 *     skip decision, the same sum of squares is accumulated inside the step pass itself.
 *   - Every ISA (scalar, AVX2, AVX-512) runs the same float32 operations in the same order with
 *     no FMA contraction, so results are bitwise identical across ISAs and thread counts.
 *   - bf16 params keep fp32 master weights and fp32 moments; the param is re-rounded from the
 *     master each step (round-to-nearest-even, or stochastic rounding with a counter-based hash
 *     of (seed, step, global element index), independent of threads).
 *
 * Shapes: every segment is a flat run of n elements; param/grad are float32 or bf16 (uint16
 * storage), m/v/master are float32 of the same n (or null when the algorithm needs none).
 */
#pragma once
#include <cstdint>
#include <vector>

namespace hf::optim {

enum class Algo : int { adamw = 0, lion = 1, sgd = 2 };

constexpr int64_t kChunk = 16384;  // elements per work chunk; a power of two dividing 2^32

// Hyperparameters of one parameter group for one step (double: converted to float32 the way
// torch converts Python scalars, once per segment).
struct Hyper {
  double lr = 1e-3;
  double beta1 = 0.9;   // AdamW/Lion beta1; SGD momentum
  double beta2 = 0.999; // AdamW/Lion beta2; SGD dampening
  double eps = 1e-8;    // AdamW only
  double weight_decay = 0.0;
  bool nesterov = false;  // SGD only
};

struct Segment {
  void* param = nullptr;        // n elements, f32 or bf16
  const void* grad = nullptr;   // n elements, same dtype as param; null: not stepped this step
  float* master = nullptr;      // n fp32 master weights (bf16 mode only)
  float* m = nullptr;           // exp_avg / momentum_buffer (null for SGD without momentum)
  float* v = nullptr;           // exp_avg_sq (AdamW only)
  int64_t n = 0;
  int32_t group = 0;
  int64_t* step = nullptr;      // this segment's step counter (torch keeps one per param); SGD: momentum steps
};

// Per-segment float32 coefficients of one step, precomputed in double once per segment.
struct Coef {
  float decay = 1.f;       // 1 - lr*wd (AdamW, Lion)
  float a = 0.f, b = 0.f;  // AdamW: lerp weight w1 = 1-beta1 and (1-w1); Lion: beta1, 1-beta1
  float c = 0.f, d = 0.f;  // AdamW/Lion: beta2, 1-beta2; SGD: momentum, 1-dampening
  float bc2s = 1.f;        // AdamW: sqrt(1 - beta2^t)
  float eps = 0.f;         // AdamW eps; SGD weight decay
  float neg_step = 0.f;    // AdamW: -lr/(1-beta1^t); Lion, SGD: -lr
  bool small_w = true;     // AdamW: torch's lerp branch (w1 < 0.5)
  bool nesterov = false, first = false, momentum = false;  // SGD
};

// One contiguous piece of a segment inside one chunk.
struct Piece {
  void* p;
  const void* g;
  float* master;
  float* m;
  float* v;
  int64_t n;
  uint64_t index;  // global element index of the first element (stochastic-rounding counter)
};

struct StepConfig {
  Algo algo = Algo::adamw;
  bool bf16 = false;
  bool stochastic = false;
  uint32_t sr_key = 0;   // hash of (seed, step) for stochastic rounding
  float grad_mul = 1.f;  // grad_scale * clip_coef, applied to every gradient element
};

// The per-ISA kernels (optim_scalar.cpp, optim_avx2.cpp, optim_avx512.cpp).
// acc16 (nullable) receives the squares of the raw gradient, element j of the piece into lane j%16.
using StepPieceFn = void (*)(const StepConfig&, const Coef&, const Piece&, double* acc16);
using SumsqPieceFn = void (*)(const void* g, bool bf16, int64_t n, double* acc16);
StepPieceFn step_piece_scalar();
StepPieceFn step_piece_avx2();
StepPieceFn step_piece_avx512();
SumsqPieceFn sumsq_piece_scalar();
SumsqPieceFn sumsq_piece_avx2();
SumsqPieceFn sumsq_piece_avx512();

class Plan {
 public:
  Plan(Algo algo, bool bf16, std::vector<Segment> segs, uint64_t index_base);
  Algo algo() const { return algo_; }
  bool bf16() const { return bf16_; }
  int64_t total() const { return total_; }
  int64_t num_chunks() const { return (total_ + kChunk - 1) / kChunk; }
  std::vector<Segment>& segments() { return segs_; }

  // Sum of squares of the raw gradients (float64), deterministic; segments without grad skipped.
  double grad_sumsq() const;
  // One step. Returns the raw-gradient sum of squares when want_sumsq (accumulated in this pass),
  // else 0. hypers[g] is the group g's; segments whose grad is null are left alone.
  double step(const std::vector<Hyper>& hypers, const StepConfig& cfg, bool want_sumsq);

 private:
  template <class F>
  double walk_chunk(int64_t c, F&& piece, bool want) const;
  Algo algo_;
  bool bf16_;
  std::vector<Segment> segs_;
  std::vector<int64_t> starts_;       // starts_[i] = first element of segment i (size nseg+1)
  std::vector<int32_t> chunk_first_;  // first segment overlapping each chunk
  int64_t total_ = 0;
  uint64_t index_base_ = 0;
};

uint32_t hash32(uint32_t x);  // the stochastic-rounding mixer (also used to derive sr_key)

}  // namespace hf::optim
