/*
 * runtime.cpp: bindings for threads, ISA, versions, the shared GEMM, the bandwidth kernels and the
 * core-peak loops.
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/common.h"
#include "bindings/registry.h"
#include "runtime/cpu_features.h"
#include "runtime/gemm.h"
#include "runtime/onednn.h"
#include "runtime/parallel.h"
#include "runtime/peak.h"
#include "runtime/stream.h"

namespace hf_bind {
namespace {

// C = alpha * op(A) @ op(B) + beta * C over 2-D or 3-D (batched) C-contiguous arrays.
void gemm_py(const py::handle& a_obj, const py::handle& b_obj, const py::handle& c_obj, bool trans_a, bool trans_b,
             float alpha, float beta) {
  py::array a = as_array(a_obj, "a"), b = as_array(b_obj, "b"), c = as_array(c_obj, "out");
  const hf::DType ab = float_dtype(a, "a");
  HF_CHECK(float_dtype(b, "b") == ab, TypeError, "a and b must have the same dtype, got " << dtype_str(a) << " and " << dtype_str(b));
  const hf::DType ct = float_dtype(c, "out");
  for (auto* p : {&a, &b, &c}) require_c_contiguous(*p, p == &a ? "a" : p == &b ? "b" : "out");
  require_writeable(c, "out");
  HF_CHECK(c.ndim() == 2 || c.ndim() == 3, ValueError, "out must be 2-D or 3-D, got shape " << shape_str(c));
  const int nd = int(c.ndim());
  HF_CHECK(a.ndim() == nd || a.ndim() == 2, ValueError, "a must be 2-D or match out's rank, got shape " << shape_str(a));
  HF_CHECK(b.ndim() == nd || b.ndim() == 2, ValueError, "b must be 2-D or match out's rank, got shape " << shape_str(b));
  hf::GemmShape s;
  s.batch = nd == 3 ? c.shape(0) : 1;
  s.M = c.shape(nd - 2);
  s.N = c.shape(nd - 1);
  const int64_t a_rows = a.shape(a.ndim() - 2), a_cols = a.shape(a.ndim() - 1);
  const int64_t b_rows = b.shape(b.ndim() - 2), b_cols = b.shape(b.ndim() - 1);
  s.K = trans_a ? a_rows : a_cols;
  const int64_t am = trans_a ? a_cols : a_rows;
  const int64_t bk = trans_b ? b_cols : b_rows, bn = trans_b ? b_rows : b_cols;
  HF_CHECK(am == s.M && bk == s.K && bn == s.N, ValueError,
           "gemm: shapes do not match: a " << shape_str(a) << (trans_a ? "^T" : "") << ", b " << shape_str(b)
                                            << (trans_b ? "^T" : "") << ", out " << shape_str(c));
  if (nd == 3) {
    HF_CHECK(a.ndim() == 2 || a.shape(0) == s.batch, ValueError, "a's batch " << shape_str(a) << " != out's " << shape_str(c));
    HF_CHECK(b.ndim() == 2 || b.shape(0) == s.batch, ValueError, "b's batch " << shape_str(b) << " != out's " << shape_str(c));
  }
  s.trans_a = trans_a;
  s.trans_b = trans_b;
  s.stride_a = a.ndim() == 2 && nd == 3 ? 0 : -1;
  s.stride_b = b.ndim() == 2 && nd == 3 ? 0 : -1;
  s.ab_type = ab;
  s.c_type = ct;
  s.alpha = alpha;
  s.beta = beta;
  const void* ap = a.data();
  const void* bp = b.data();
  void* cp = c.mutable_data();
  py::gil_scoped_release release;
  hf::gemm(s, ap, bp, cp);
}

py::array_t<double> checked_f64(const py::handle& obj, const char* name) {
  py::array a = as_array(obj, name);
  HF_CHECK(a.dtype().is(py::dtype::of<double>()), TypeError, name << " must be float64, got " << dtype_str(a));
  require_c_contiguous(a, name);
  return py::reinterpret_borrow<py::array_t<double>>(a);
}

Registration reg("runtime", 0, [](py::module_& m) {
  m.attr("__version__") = HOMEFORGE_VERSION;
  m.def("num_threads", &hf::num_threads, "Threads used by homeforge kernels and oneDNN.");
  m.def("set_num_threads", &hf::set_num_threads, py::arg("n"),
        "Set the threads used by homeforge kernels and oneDNN (one shared oneTBB arena).");
  m.def("default_num_threads", &hf::default_num_threads);
  m.def("set_serial_backend", [](bool serial) { hf::set_parallel_backend(serial ? hf::Backend::serial : hf::Backend::tbb); },
        py::arg("serial"), "Run every parallel_for serially on the calling thread (for tests).");
  m.def("serial_backend", [] { return hf::parallel_backend() == hf::Backend::serial; });
  m.def("detected_isa", [] { return std::string(hf::isa_name(hf::detected_isa())); });
  m.def("active_isa", [] { return std::string(hf::isa_name(hf::active_isa())); });
  m.def("set_isa_limit", [](const std::string& name) { hf::set_isa_limit(hf::isa_from_name(name)); }, py::arg("isa"),
        "Cap the ISA kernels may use (scalar, avx2, avx512, avx512_bf16); for testing fallbacks.");
  m.def("onednn_version", &hf::onednn_version);
  m.def("onednn_cpu_runtime", &hf::onednn_cpu_runtime);
  m.def("tbb_version", &hf::tbb_version);
  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f,
        "out = alpha * op(a) @ op(b) + beta * out on oneDNN (f32 or bf16 inputs, f32 accumulation).");
  m.def("gemm_cache_size", &hf::gemm_cache_size);
  m.def("stream_copy", [](const py::handle& c, const py::handle& a) {
    auto cc = checked_f64(c, "c"), aa = checked_f64(a, "a");
    HF_CHECK(cc.size() == aa.size(), ValueError, "stream_copy: sizes differ (" << cc.size() << " vs " << aa.size() << ")");
    double* cp = cc.mutable_data();
    const double* ap = aa.data();
    const int64_t n = cc.size();
    py::gil_scoped_release r;
    hf::stream_copy(cp, ap, n);
  }, py::arg("c"), py::arg("a"));
  m.def("stream_triad", [](const py::handle& a, const py::handle& b, const py::handle& c, double s) {
    auto aa = checked_f64(a, "a"), bb = checked_f64(b, "b"), cc = checked_f64(c, "c");
    HF_CHECK(aa.size() == bb.size() && bb.size() == cc.size(), ValueError, "stream_triad: sizes differ");
    double* ap = aa.mutable_data();
    const double *bp = bb.data(), *cp = cc.data();
    const int64_t n = aa.size();
    py::gil_scoped_release r;
    hf::stream_triad(ap, bp, cp, s, n);
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("s"));
  m.def("core_peak_gflops", [](const std::string& kind, int64_t iters) {
    py::gil_scoped_release r;
    return hf::core_peak_gflops(kind, iters);
  }, py::arg("kind") = "f32", py::arg("iters") = 20'000'000,
        "The core's arithmetic peak in GFLOP/s over all threads, from register-only loops: kind 'f32' "
        "(vfmadd231ps zmm/ymm) or 'bf16' (vdpbf16ps, needs AVX512_BF16); iters per thread.");
  m.def("_threads_seen", [](const std::string& what, int64_t size) {
    // How many distinct threads ran `what` ("matmul": a size^3 oneDNN f32 GEMM; "parallel_for":
    // a busy parallel_for over `size` items). Used by tests to show set_num_threads governs both.
    py::gil_scoped_release r;
    if (what == "matmul") {
      std::vector<float> a(size * size, 1.0f), c(size * size);
      hf::GemmShape s;
      s.M = s.N = s.K = size;
      return hf::count_threads_during([&] { for (int i = 0; i < 3; ++i) hf::gemm(s, a.data(), a.data(), c.data()); });
    }
    if (what == "parallel_for") {
      std::vector<double> sink(size, 0.0);
      return hf::count_threads_during([&] {
        hf::parallel_for(0, size, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) {
            double x = double(i);
            for (int k = 0; k < 20000; ++k) x = x * 0.999999 + 1e-9;
            sink[i] = x;
          }
        });
      });
    }
    throw hf::ValueError("_threads_seen: what must be 'matmul' or 'parallel_for', got '" + what + "'");
  }, py::arg("what"), py::arg("size"));
});

}  // namespace
}  // namespace hf_bind
