/*
 * onednn.h: the process-wide oneDNN CPU engine, and version facts for runtime_info().
 */
#pragma once
#include <string>

namespace dnnl { struct engine; }

namespace hf {

dnnl::engine& onednn_engine();
std::string onednn_version();      // e.g. "3.2.0"
std::string onednn_cpu_runtime();  // "TBB", "OMP", "SEQ", "THREADPOOL" or "SYCL"
std::string tbb_version();         // the loaded libtbb's version string

}  // namespace hf
