/*
 * parallel.h: the one parallel_for of the C++ core, over oneTBB.
 *
 * Every kernel and every oneDNN primitive runs inside one tbb::task_arena whose concurrency
 * is hf::num_threads(). oneDNN is built with the TBB threading runtime (DNNL_CPU_THREADING_
 * RUNTIME=TBB), so a primitive executed from inside the arena takes its thread count from
 * tbb::this_task_arena::max_concurrency() and runs on the same workers: one pool, never
 * oversubscribed. A tbb::global_control caps the process-wide worker count to match.
 *
 * parallel_for(begin, end, grain, f) calls f(lo, hi) on disjoint sub-ranges that cover
 * [begin, end), each at least `grain` long except possibly the last. The serial backend
 * (set_parallel_backend(Backend::serial)) runs the same chunks in order on the calling thread,
 * which tests use to check that results do not depend on threading.
 *
 * parallel_reduce_deterministic splits [begin, end) into fixed chunks of `grain` and combines
 * them in a fixed tree, so the floating-point result is identical for any thread count.
 */
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/parallel_reduce.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

namespace hf {

enum class Backend { tbb, serial };

int num_threads();
void set_num_threads(int n);        // n >= 1; throws hf::ValueError otherwise
int default_num_threads();          // HOMEFORGE_NUM_THREADS, else the CPUs in our affinity mask
void set_parallel_backend(Backend b);
Backend parallel_backend();

// The arena every parallel region runs in. Held by shared_ptr so that set_num_threads from
// another thread never destroys an arena a running kernel is using.
std::shared_ptr<tbb::task_arena> current_arena();

// Runs f inside the arena (used around oneDNN primitive execution).
template <class F>
void run_in_arena(F&& f) {
  if (parallel_backend() == Backend::serial) { f(); return; }
  auto arena = current_arena();
  arena->execute(std::forward<F>(f));
}

template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  if (parallel_backend() == Backend::serial || end - begin <= grain || num_threads() == 1) {
    for (int64_t lo = begin; lo < end; lo += grain) f(lo, lo + grain < end ? lo + grain : end);
    return;
  }
  auto arena = current_arena();
  arena->execute([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(begin, end, grain),
                      [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
  });
}

// Deterministic sum-like reduction: chunk(lo, hi) -> T, combine(T, T) -> T.
template <class T, class Chunk, class Combine>
T parallel_reduce_deterministic(int64_t begin, int64_t end, int64_t grain, T identity,
                                Chunk&& chunk, Combine&& combine) {
  if (end <= begin) return identity;
  if (grain < 1) grain = 1;
  auto body = [&](const tbb::blocked_range<int64_t>& r, T acc) { return combine(acc, chunk(r.begin(), r.end())); };
  if (parallel_backend() == Backend::serial) {
    // The same fixed tree as tbb::parallel_deterministic_reduce with a simple_partitioner.
    std::function<T(int64_t, int64_t)> rec = [&](int64_t lo, int64_t hi) -> T {
      if (hi - lo <= grain) return combine(identity, chunk(lo, hi));
      const int64_t mid = lo + (hi - lo) / 2;
      return combine(rec(lo, mid), rec(mid, hi));
    };
    return rec(begin, end);
  }
  T result = identity;
  auto arena = current_arena();
  arena->execute([&] {
    result = tbb::parallel_deterministic_reduce(tbb::blocked_range<int64_t>(begin, end, grain), identity, body,
                                                combine, tbb::simple_partitioner());
  });
  return result;
}

// Diagnostics: how many distinct threads entered the arena while `work` ran.
int count_threads_during(const std::function<void()>& work);

}  // namespace hf
