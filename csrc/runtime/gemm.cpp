/*
 * gemm.cpp: GemmShape -> cached dnnl::matmul, executed in the shared TBB arena.
 *
 * Cost notes: building a matmul primitive costs tens of microseconds to milliseconds (JIT), so
 * we key a cache on every field that changes the primitive. Scratchpad is user-managed and
 * thread_local, so the same cached primitive may run concurrently from several threads.
 */
#include "runtime/gemm.h"

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/tbb/task_arena.h>

#include "runtime/errors.h"
#include "runtime/onednn.h"
#include "runtime/parallel.h"

namespace hf {
namespace {

struct Prim {
  dnnl::matmul prim;
  dnnl::memory::desc a_md, b_md, c_md, scratch_md;
};

std::mutex g_cache_mutex;
std::unordered_map<std::string, std::shared_ptr<Prim>> g_cache;

dnnl::memory::data_type dt(DType t) {
  return t == DType::bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

std::string key_of(const GemmShape& s, int threads) {
  std::string k;
  k.reserve(160);
  for (int64_t v : {s.M, s.N, s.K, s.batch, int64_t(s.trans_a), int64_t(s.trans_b), s.lda, s.ldb, s.ldc, s.stride_a,
                    s.stride_b, s.stride_c, int64_t(s.ab_type), int64_t(s.c_type), int64_t(threads)}) {
    k += std::to_string(v);
    k += ',';
  }
  k += std::to_string(s.alpha) + ',' + std::to_string(s.beta);
  return k;
}

std::shared_ptr<Prim> build(const GemmShape& s) {
  using dims = dnnl::memory::dims;
  const int64_t B = s.batch;
  // A viewed as (B, M, K), B as (B, K, N), C as (B, M, N), with explicit strides.
  dims a_dims{s.stride_a == 0 ? 1 : B, s.M, s.K};
  dims b_dims{s.stride_b == 0 ? 1 : B, s.K, s.N};
  dims c_dims{B, s.M, s.N};
  dims a_str = s.trans_a ? dims{s.stride_a, 1, s.lda} : dims{s.stride_a, s.lda, 1};
  dims b_str = s.trans_b ? dims{s.stride_b, 1, s.ldb} : dims{s.stride_b, s.ldb, 1};
  dims c_str{s.stride_c, s.ldc, 1};
  if (a_str[0] == 0) a_str[0] = s.M * s.K;  // broadcast dim has size 1; its stride is unused
  if (b_str[0] == 0) b_str[0] = s.K * s.N;
  auto p = std::make_shared<Prim>();
  p->a_md = dnnl::memory::desc(a_dims, dt(s.ab_type), a_str);
  p->b_md = dnnl::memory::desc(b_dims, dt(s.ab_type), b_str);
  p->c_md = dnnl::memory::desc(c_dims, dt(s.c_type), c_str);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops ops;
  if (s.alpha != 1.0f) ops.append_eltwise(dnnl::algorithm::eltwise_linear, s.alpha, 0.0f);
  if (s.beta != 0.0f) ops.append_sum(s.beta);
  attr.set_post_ops(ops);
  if (s.ab_type == DType::f32) attr.set_fpmath_mode(dnnl::fpmath_mode::strict);
  try {
    auto pd = dnnl::matmul::primitive_desc(onednn_engine(), p->a_md, p->b_md, p->c_md, attr);
    p->scratch_md = pd.scratchpad_desc();
    p->prim = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    HF_THROW(ValueError, "oneDNN matmul rejected M=" << s.M << " N=" << s.N << " K=" << s.K << " batch=" << s.batch
                                                     << ": " << e.what());
  }
  return p;
}

}  // namespace

void gemm(const GemmShape& in, const void* A, const void* B, void* C) {
  GemmShape s = in;
  HF_CHECK(s.M >= 0 && s.N >= 0 && s.K >= 0 && s.batch >= 1, ValueError,
           "gemm: bad shape M=" << s.M << " N=" << s.N << " K=" << s.K << " batch=" << s.batch);
  if (s.M == 0 || s.N == 0) return;
  if (s.lda == 0) s.lda = s.trans_a ? s.M : s.K;
  if (s.ldb == 0) s.ldb = s.trans_b ? s.K : s.N;
  if (s.ldc == 0) s.ldc = s.N;
  if (s.stride_a < 0) s.stride_a = s.M * s.K;
  if (s.stride_b < 0) s.stride_b = s.K * s.N;
  if (s.stride_c < 0) s.stride_c = s.M * s.N;
  const int threads = s.single_thread ? 1 : num_threads();
  const std::string key = key_of(s, threads);
  std::shared_ptr<Prim> p;
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = g_cache.find(key);
    if (it != g_cache.end()) p = it->second;
  }
  if (!p) {
    // Build inside the arena that will run it, so oneDNN sizes its partition to our threads.
    if (s.single_thread) {
      tbb::task_arena one(1);
      one.execute([&] { p = build(s); });
    } else {
      run_in_arena([&] { p = build(s); });
    }
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    if (g_cache.size() > 4096) g_cache.clear();  // bound memory for pathological shape streams
    g_cache.emplace(key, p);
  }
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < p->scratch_md.get_size()) scratch.resize(p->scratch_md.get_size());
  auto& eng = onednn_engine();
  dnnl::memory a_mem(p->a_md, eng, const_cast<void*>(A));
  dnnl::memory b_mem(p->b_md, eng, const_cast<void*>(B));
  dnnl::memory c_mem(p->c_md, eng, C);
  dnnl::memory s_mem(p->scratch_md, eng, scratch.data());
  auto run = [&] {
    dnnl::stream strm(eng);
    p->prim.execute(strm, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem},
                           {DNNL_ARG_SCRATCHPAD, s_mem}});
    strm.wait();
  };
  if (s.single_thread) {
    thread_local tbb::task_arena one(1);
    one.execute(run);
  } else {
    run_in_arena(run);
  }
}

int64_t gemm_cache_size() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  return int64_t(g_cache.size());
}

}  // namespace hf
