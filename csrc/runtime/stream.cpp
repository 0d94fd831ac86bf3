#include "runtime/stream.h"

#include "runtime/parallel.h"

namespace hf {

namespace {
int64_t grain_for(int64_t n) {
  const int64_t t = num_threads();
  const int64_t g = (n + t - 1) / t;
  return g < 4096 ? 4096 : g;
}
}  // namespace

void stream_copy(double* __restrict c, const double* __restrict a, int64_t n) {
  parallel_for(0, n, grain_for(n), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) c[i] = a[i];
  });
}

void stream_triad(double* __restrict a, const double* __restrict b, const double* __restrict c, double s, int64_t n) {
  parallel_for(0, n, grain_for(n), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) a[i] = b[i] + s * c[i];
  });
}

}  // namespace hf
