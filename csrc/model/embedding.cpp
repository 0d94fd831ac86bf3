/*
 * embedding.cpp: token embedding lookup and its gradient.
 *
 *   forward   x (N, d) = table (V, d)[tokens (N)]
 *   backward  dtable[v] += sum over n with tokens[n] == v of dx[n]
 *
 * The backward groups positions by token id with a counting sort, then each task owns whole
 * table rows and adds their positions in increasing n: no atomics, no races, and the same sum
 * order for any thread count (bitwise deterministic). Cost: one pass over dx plus O(N + V).
 */
#include <vector>

#include "model/kernels.h"
#include "runtime/parallel.h"

namespace hf::model {

void embedding_forward(const int32_t* tokens, int64_t N, const float* table, int64_t d, float* x) {
  parallel_for(0, N, std::max<int64_t>(1, 8192 / d), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) std::memcpy(x + n * d, table + int64_t(tokens[n]) * d, sizeof(float) * d);
  });
}

void embedding_backward(const int32_t* tokens, int64_t N, const float* dx, int64_t d, int64_t V, float* dtable) {
  // Counting sort of positions by token id (stable: increasing n within one id).
  std::vector<int64_t> start(V + 1, 0);
  for (int64_t n = 0; n < N; ++n) ++start[tokens[n] + 1];
  for (int64_t v = 0; v < V; ++v) start[v + 1] += start[v];
  std::vector<int64_t> order(N), fill(start.begin(), start.end() - 1);
  for (int64_t n = 0; n < N; ++n) order[fill[tokens[n]]++] = n;
  // Distinct ids present, so the parallel loop only visits rows that change.
  std::vector<int32_t> ids;
  for (int64_t v = 0; v < V; ++v)
    if (start[v + 1] > start[v]) ids.push_back(int32_t(v));
  parallel_for(0, int64_t(ids.size()), std::max<int64_t>(1, 4096 / d), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t v = ids[i];
      float* row = dtable + v * d;
      for (int64_t p = start[v]; p < start[v + 1]; ++p) {
        const float* src = dx + order[p] * d;
        for (int64_t j = 0; j < d; ++j) row[j] += src[j];
      }
    }
  });
}

}  // namespace hf::model
