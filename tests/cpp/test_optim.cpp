/*
 * test_optim.cpp: C++ unit tests of the fused optimizer step, run under ASan+UBSan by
 * scripts/test.sh. Exact-size heap buffers (no slack) for many odd segment sizes, so any read or
 * write past a tail shows up; the reference is a plain float64 AdamW loop written here.
 */
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "optim/optim.h"
#include "runtime/cpu_features.h"
#include "runtime/parallel.h"

#include "expect.h"  // EXPECT(cond)

using namespace hf::optim;

struct Tensor {
  std::unique_ptr<float[]> p, g, m, v;
  int64_t n;
  explicit Tensor(int64_t n_) : p(new float[n_]), g(new float[n_]), m(new float[n_]()), v(new float[n_]()), n(n_) {
    for (int64_t i = 0; i < n; ++i) {
      p[i] = float(std::sin(0.37 * double(i + n)));
      g[i] = float(std::cos(1.3 * double(i) + 0.1 * double(n)));
    }
  }
};

// Runs `steps` AdamW steps over tensors of the given sizes; each tensor's m/v are its own exact-size
// buffers, so segments are built by hand (Plan takes per-segment state pointers).
static std::vector<std::vector<float>> run(const std::vector<int64_t>& sizes, int steps, double* sumsq_out) {
  std::vector<Tensor> ts;
  for (int64_t n : sizes) ts.emplace_back(n);
  std::vector<int64_t> counters(sizes.size(), 0);
  std::vector<Segment> segs;
  for (size_t i = 0; i < ts.size(); ++i) {
    Segment s;
    s.param = ts[i].p.get();
    s.grad = ts[i].g.get();
    s.m = ts[i].m.get();
    s.v = ts[i].v.get();
    s.n = ts[i].n;
    s.step = &counters[i];
    segs.push_back(s);
  }
  Plan plan(Algo::adamw, false, segs, 0);
  Hyper h;
  h.lr = 1e-2;
  h.weight_decay = 0.1;
  StepConfig cfg;
  double sq = 0;
  for (int k = 0; k < steps; ++k) sq = plan.step({h}, cfg, true);
  *sumsq_out = sq;
  EXPECT(sq == plan.grad_sumsq());
  std::vector<std::vector<float>> out;
  for (auto& t : ts) out.emplace_back(t.p.get(), t.p.get() + t.n);
  return out;
}

static void test_matches_float64_reference_for_odd_sizes() {
  std::vector<int64_t> sizes;
  for (int64_t n = 0; n < 40; ++n) sizes.push_back(n);
  sizes.push_back(kChunk - 1);
  sizes.push_back(kChunk + 17);
  double sq = 0;
  const int steps = 3;
  auto got = run(sizes, steps, &sq);
  double expect_sq = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor t(sizes[i]);
    for (int64_t j = 0; j < t.n; ++j) {
      double p = t.p[j], g = t.g[j], m = 0, v = 0;
      expect_sq += g * g;
      for (int k = 1; k <= steps; ++k) {
        p *= 1 - 1e-2 * 0.1;
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        p -= 1e-2 / (1 - std::pow(0.9, k)) * m / (std::sqrt(v) / std::sqrt(1 - std::pow(0.999, k)) + 1e-8);
      }
      EXPECT(std::fabs(got[i][j] - p) <= 1e-6 * (1 + std::fabs(p)));
    }
  }
  EXPECT(std::fabs(sq - expect_sq) <= 1e-12 * expect_sq);
}

static void test_isas_and_threads_agree_bitwise() {
  const std::vector<int64_t> sizes = {5, 100, 16, 33, 70001, 1, 0, 257};
  double sq0 = 0;
  auto base = run(sizes, 2, &sq0);
  for (hf::Isa isa : {hf::Isa::avx2, hf::Isa::scalar}) {
    hf::set_isa_limit(isa);
    for (int threads : {1, 3}) {
      hf::set_num_threads(threads);
      double sq = 0;
      EXPECT(run(sizes, 2, &sq) == base);
      EXPECT(sq == sq0);
    }
  }
  hf::set_isa_limit(hf::Isa::avx512_bf16);
}

int main() {
  test_matches_float64_reference_for_odd_sizes();
  test_isas_and_threads_agree_bitwise();
  std::puts("test_optim: ok");
  return 0;
}
