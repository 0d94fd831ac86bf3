/*
 * onednn.cpp: engine and versions. The engine is created once, on first use.
 */
#include "runtime/onednn.h"

#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/tbb/version.h>

namespace hf {

dnnl::engine& onednn_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

std::string onednn_cpu_runtime() {
  switch (dnnl_version()->cpu_runtime) {
    case DNNL_RUNTIME_TBB: return "TBB";
    case DNNL_RUNTIME_OMP: return "OMP";
    case DNNL_RUNTIME_SEQ: return "SEQ";
    case DNNL_RUNTIME_THREADPOOL: return "THREADPOOL";
    case DNNL_RUNTIME_SYCL: return "SYCL";
    default: return "unknown";
  }
}

std::string tbb_version() { return TBB_runtime_version(); }

}  // namespace hf
