/*
 * parallel.cpp: the arena, its size, and the global_control that caps oneTBB's workers.
 */
#include "runtime/parallel.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_scheduler_observer.h>
#include <sched.h>

#include "runtime/errors.h"

namespace hf {
namespace {

std::mutex g_mutex;
std::shared_ptr<tbb::task_arena> g_arena;
std::unique_ptr<tbb::global_control> g_control;
std::atomic<int> g_threads{0};
std::atomic<int> g_backend{int(Backend::tbb)};

void install(int n) {
  // Caller holds g_mutex.
  g_control.reset();
  g_control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, size_t(n));
  auto arena = std::make_shared<tbb::task_arena>(n);
  arena->initialize();
  std::atomic_store(&g_arena, arena);
  g_threads.store(n);
}

void ensure_init() {
  if (g_threads.load(std::memory_order_acquire) > 0) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_threads.load() == 0) install(default_num_threads());
}

}  // namespace

int default_num_threads() {
  if (const char* env = std::getenv("HOMEFORGE_NUM_THREADS")) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1) return int(n);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
  int n = int(tbb::info::default_concurrency());
  return n >= 1 ? n : 1;
}

int num_threads() {
  ensure_init();
  return g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) {
  HF_CHECK(n >= 1, ValueError, "set_num_threads: n must be >= 1, got " << n);
  HF_CHECK(n <= 4096, ValueError, "set_num_threads: n=" << n << " is not a plausible thread count");
  std::lock_guard<std::mutex> lock(g_mutex);
  install(n);
}

void set_parallel_backend(Backend b) { g_backend.store(int(b)); }
Backend parallel_backend() { return Backend(g_backend.load(std::memory_order_relaxed)); }

std::shared_ptr<tbb::task_arena> current_arena() {
  ensure_init();
  return std::atomic_load(&g_arena);
}

namespace {
class ThreadCounter : public tbb::task_scheduler_observer {
 public:
  explicit ThreadCounter(tbb::task_arena& a) : tbb::task_scheduler_observer(a) { observe(true); }
  ~ThreadCounter() override { observe(false); }
  void on_scheduler_entry(bool) override {
    std::lock_guard<std::mutex> lock(mu_);
    ids_.insert(std::this_thread::get_id());
  }
  int count() {
    std::lock_guard<std::mutex> lock(mu_);
    return int(ids_.size());
  }
  void note_caller() {
    std::lock_guard<std::mutex> lock(mu_);
    ids_.insert(std::this_thread::get_id());
  }

 private:
  std::mutex mu_;
  std::set<std::thread::id> ids_;
};
}  // namespace

int count_threads_during(const std::function<void()>& work) {
  auto arena = current_arena();
  ThreadCounter counter(*arena);
  counter.note_caller();
  work();
  return counter.count();
}

}  // namespace hf
