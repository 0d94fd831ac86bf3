/*
 * test_runtime.cpp: C++ unit tests of the runtime plumbing, run under ASan+UBSan by scripts/test.sh.
 * References are plain serial loops and float64 math, written here, not our own earlier outputs.
 */
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "runtime/bf16.h"
#include "runtime/errors.h"
#include "runtime/gemm.h"
#include "runtime/parallel.h"

#include "expect.h"  // EXPECT(cond)

static void test_parallel_for_covers_range() {
  for (int threads : {1, 2, 3}) {
    hf::set_num_threads(threads);
    for (int64_t n : {0, 1, 7, 1000, 100003}) {
      std::vector<int> hits(n, 0);
      hf::parallel_for(0, n, 13, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) hits[i] += 1;
      });
      for (int64_t i = 0; i < n; ++i) EXPECT(hits[i] == 1);
    }
  }
}

static void test_deterministic_reduce() {
  const int64_t n = 1 << 18;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = std::sin(double(i)) * 1e3f;
  auto sum = [&] {
    return hf::parallel_reduce_deterministic<double>(0, n, 1024, 0.0, [&](int64_t lo, int64_t hi) {
      double s = 0;
      for (int64_t i = lo; i < hi; ++i) s += x[i];
      return s;
    }, [](double a, double b) { return a + b; });
  };
  hf::set_num_threads(1);
  const double one = sum();
  hf::set_num_threads(3);
  const double three = sum();
  hf::set_parallel_backend(hf::Backend::serial);
  const double serial = sum();
  hf::set_parallel_backend(hf::Backend::tbb);
  EXPECT(one == three && three == serial);
  double ref = 0;
  for (float v : x) ref += v;
  EXPECT(std::fabs(one - ref) < 1e-6 * std::fabs(ref) + 1e-3);
}

static void test_bf16_rounding() {
  EXPECT(hf::f32_to_bf16(1.0f) == 0x3f80);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to even (1.0).
  EXPECT(hf::f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80);
  EXPECT(hf::f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82);
  EXPECT(std::isnan(hf::bf16_to_f32(hf::f32_to_bf16(NAN))));
  EXPECT(std::isinf(hf::bf16_to_f32(hf::f32_to_bf16(INFINITY))));
}

static void test_gemm_against_loops() {
  hf::set_num_threads(2);
  const int64_t M = 37, N = 19, K = 23;
  std::vector<float> A(M * K), B(N * K), C(M * N, 1.0f);
  for (size_t i = 0; i < A.size(); ++i) A[i] = float((i * 7) % 11) - 5;
  for (size_t i = 0; i < B.size(); ++i) B[i] = float((i * 3) % 13) - 6;
  hf::GemmShape s;
  s.M = M; s.N = N; s.K = K; s.trans_b = true; s.beta = 1.0f;
  hf::gemm(s, A.data(), B.data(), C.data());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 1.0;
      for (int64_t k = 0; k < K; ++k) ref += double(A[m * K + k]) * B[n * K + k];
      EXPECT(std::fabs(C[m * N + n] - ref) < 1e-4);
    }
  bool threw = false;
  try { hf::set_num_threads(0); } catch (const hf::ValueError&) { threw = true; }
  EXPECT(threw);
}

int main() {
  test_parallel_for_covers_range();
  test_deterministic_reduce();
  test_bf16_rounding();
  test_gemm_against_loops();
  std::puts("test_runtime: all passed");
  return 0;
}
