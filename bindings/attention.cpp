/*
 * attention.cpp: numpy bindings of the fused attention kernels (csrc/attention/attention.h).
 *
 *   attention(q, k, v, causal, scale) -> (out, lse)
 *   attention_backward(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv)
 *
 * q/out/dout are (B, T, H, D), k/v (B, S, Hkv, D), lse float32 (B, H, T); all C-contiguous and of
 * one dtype: float32, or bfloat16 as ml_dtypes.bfloat16 or a uint16 view (results come back in
 * the dtype of q). Zero-copy in and out; the GIL is released while the kernel runs.
 * scale = 0 means 1/sqrt(D) (the Python layer maps None to it).
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "attention/attention.h"
#include "bindings/common.h"
#include "bindings/registry.h"

namespace hf_bind {
namespace {

struct Checked {
  py::array q, k, v;
  hf::AttentionShape s;
};

std::string dims(const py::array& a) { return shape_str(a); }

Checked check_qkv(const py::handle& qo, const py::handle& ko, const py::handle& vo, bool causal, float scale) {
  Checked c{as_array(qo, "q"), as_array(ko, "k"), as_array(vo, "v"), {}};
  const hf::DType dt = float_dtype(c.q, "q");
  HF_CHECK(float_dtype(c.k, "k") == dt && float_dtype(c.v, "v") == dt && dtype_str(c.k) == dtype_str(c.q) &&
               dtype_str(c.v) == dtype_str(c.q),
           TypeError, "q, k and v must have one dtype, got " << dtype_str(c.q) << ", " << dtype_str(c.k) << ", " << dtype_str(c.v));
  require_ndim(c.q, 4, "q", "(B, T, H, D)");
  require_ndim(c.k, 4, "k", "(B, S, Hkv, D)");
  require_ndim(c.v, 4, "v", "(B, S, Hkv, D)");
  for (py::ssize_t i = 0; i < 4; ++i)
    HF_CHECK(c.q.shape(i) > 0 && c.k.shape(i) > 0 && c.v.shape(i) > 0, ValueError,
             "attention: empty dimension: q " << dims(c.q) << ", k " << dims(c.k) << ", v " << dims(c.v));
  HF_CHECK(c.k.shape(0) == c.q.shape(0) && c.k.shape(3) == c.q.shape(3), ValueError,
           "k must be (B, S, Hkv, D) with q's B and D: q " << dims(c.q) << ", k " << dims(c.k));
  for (py::ssize_t i = 0; i < 4; ++i)
    HF_CHECK(c.v.shape(i) == c.k.shape(i), ValueError, "v must have k's shape: k " << dims(c.k) << ", v " << dims(c.v));
  HF_CHECK(c.q.shape(2) % c.k.shape(2) == 0, ValueError,
           "q's heads H=" << c.q.shape(2) << " must be divisible by k's heads Hkv=" << c.k.shape(2) << ": q " << dims(c.q)
                          << ", k " << dims(c.k));
  require_c_contiguous(c.q, "q");
  require_c_contiguous(c.k, "k");
  require_c_contiguous(c.v, "v");
  c.s.B = c.q.shape(0);
  c.s.T = c.q.shape(1);
  c.s.H = c.q.shape(2);
  c.s.D = c.q.shape(3);
  c.s.S = c.k.shape(1);
  c.s.Hkv = c.k.shape(2);
  c.s.causal = causal;
  c.s.scale = scale;
  c.s.dtype = dt;
  return c;
}

py::tuple forward(const py::handle& qo, const py::handle& ko, const py::handle& vo, bool causal, float scale) {
  Checked c = check_qkv(qo, ko, vo, causal, scale);
  py::array out(c.q.dtype(), {c.s.B, c.s.T, c.s.H, c.s.D});
  py::array_t<float> lse({c.s.B, c.s.H, c.s.T});
  const void *q = c.q.data(), *k = c.k.data(), *v = c.v.data();
  void* o = out.mutable_data();
  float* l = lse.mutable_data();
  {
    py::gil_scoped_release release;
    hf::attention_forward(c.s, q, k, v, o, l);
  }
  return py::make_tuple(out, lse);
}

void same_as_q(const py::array& a, const Checked& c, const char* name) {
  HF_CHECK(dtype_str(a) == dtype_str(c.q), TypeError, name << " must have q's dtype " << dtype_str(c.q) << ", got " << dtype_str(a));
  HF_CHECK(a.ndim() == 4 && a.shape(0) == c.s.B && a.shape(1) == c.s.T && a.shape(2) == c.s.H && a.shape(3) == c.s.D,
           ValueError, name << " must have q's shape " << dims(c.q) << ", got " << dims(a));
  require_c_contiguous(a, name);
}

py::tuple backward(const py::handle& go, const py::handle& qo, const py::handle& ko, const py::handle& vo,
                   const py::handle& oo, const py::handle& lo, bool causal, float scale) {
  Checked c = check_qkv(qo, ko, vo, causal, scale);
  py::array dout = as_array(go, "dout"), out = as_array(oo, "out"), lse = as_array(lo, "lse");
  same_as_q(dout, c, "dout");
  same_as_q(out, c, "out");
  HF_CHECK(is_f32(lse), TypeError, "lse must be float32, got " << dtype_str(lse));
  HF_CHECK(lse.ndim() == 3 && lse.shape(0) == c.s.B && lse.shape(1) == c.s.H && lse.shape(2) == c.s.T, ValueError,
           "lse must be (B, H, T) = (" << c.s.B << ", " << c.s.H << ", " << c.s.T << ") for q " << dims(c.q) << ", got "
                                       << dims(lse));
  require_c_contiguous(lse, "lse");
  py::array dq(c.q.dtype(), {c.s.B, c.s.T, c.s.H, c.s.D});
  py::array dk(c.q.dtype(), {c.s.B, c.s.S, c.s.Hkv, c.s.D});
  py::array dv(c.q.dtype(), {c.s.B, c.s.S, c.s.Hkv, c.s.D});
  const void *g = dout.data(), *q = c.q.data(), *k = c.k.data(), *v = c.v.data(), *o = out.data();
  const float* l = static_cast<const float*>(lse.data());
  void *dqp = dq.mutable_data(), *dkp = dk.mutable_data(), *dvp = dv.mutable_data();
  {
    py::gil_scoped_release release;
    hf::attention_backward(c.s, g, q, k, v, o, l, dqp, dkp, dvp);
  }
  return py::make_tuple(dq, dk, dv);
}

Registration reg("attention", 20, [](py::module_& m) {
  m.def("attention", &forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("causal") = true,
        py::arg("scale") = 0.0f, "Fused attention forward: (out, lse). scale=0 means 1/sqrt(D).");
  m.def("attention_backward", &backward, py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("lse"), py::arg("causal") = true, py::arg("scale") = 0.0f,
        "Fused attention backward (FlashAttention-2): (dq, dk, dv).");
});

}  // namespace
}  // namespace hf_bind
