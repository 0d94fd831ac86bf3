/*
 * optim.cpp: homeforge._core._OptimPlan, the segment table of homeforge.optim.
 *
 * Arrays cross zero-copy: the plan keeps references to the params, grads and the flat state
 * buffers (so the pointers it holds stay valid) and checks dtype, shape, contiguity and
 * writability here, naming the offending list index. The GIL is released around each step.
 */
#include <cstring>
#include <memory>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/common.h"
#include "bindings/registry.h"
#include "optim/optim.h"

namespace hf_bind {
namespace {

using hf::optim::Algo;

std::string idx_name(const char* what, size_t i) { return std::string(what) + "[" + std::to_string(i) + "]"; }

bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) != b.shape(i)) return false;
  return true;
}

class PyPlan {
 public:
  PyPlan(const std::string& algo, const py::list& params, const py::list& groups, const py::object& m,
         const py::object& v, const py::object& master, py::array_t<int64_t> steps, uint64_t index_base) {
    if (algo == "adamw") algo_ = Algo::adamw;
    else if (algo == "lion") algo_ = Algo::lion;
    else if (algo == "sgd") algo_ = Algo::sgd;
    else throw hf::ValueError("unknown optimizer '" + algo + "'; expected adamw, lion or sgd");
    const size_t n = params.size();
    HF_CHECK(groups.size() == n, ValueError, "groups has " << groups.size() << " entries for " << n << " params");
    HF_CHECK(steps.ndim() == 1 && size_t(steps.shape(0)) == n && (steps.flags() & py::array::c_style) && steps.writeable(),
             ValueError, "steps must be a writeable contiguous int64 array of " << n << " counters");
    std::vector<hf::optim::Segment> segs(n);
    bool have_dtype = false;
    int64_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      const std::string name = idx_name("params", i);
      py::array p = as_array(params[i], name.c_str());
      const hf::DType dt = float_dtype(p, name.c_str());
      if (!have_dtype) { bf16_ = dt == hf::DType::bf16; have_dtype = true; }
      HF_CHECK((dt == hf::DType::bf16) == bf16_, ValueError,
               name << " has dtype " << dtype_str(p) << " but params[0] is " << (bf16_ ? "bfloat16" : "float32")
                    << "; all params of one optimizer must share a dtype");
      require_c_contiguous(p, name.c_str());
      require_writeable(p, name.c_str());
      segs[i].param = p.mutable_data();
      segs[i].n = p.size();
      segs[i].group = groups[i].cast<int32_t>();
      segs[i].step = steps.mutable_data() + i;
      params_.push_back(p);
      total += p.size();
    }
    auto state = [&](const py::object& obj, const char* what) -> float* {
      if (obj.is_none()) return nullptr;
      py::array a = as_array(obj, what);
      HF_CHECK(is_f32(a), TypeError, what << " must be float32, got " << dtype_str(a));
      require_c_contiguous(a, what);
      require_writeable(a, what);
      HF_CHECK(a.size() == total, ValueError, what << " has " << a.size() << " elements; the params have " << total);
      keep_.push_back(a);
      return static_cast<float*>(a.mutable_data());
    };
    float* mp = state(m, "exp_avg");
    float* vp = state(v, "exp_avg_sq");
    float* wp = state(master, "master");
    HF_CHECK(!bf16_ || wp != nullptr || n == 0, ValueError, "bf16 params need fp32 master weights");
    HF_CHECK(algo_ == Algo::sgd || mp != nullptr || n == 0, ValueError, "this optimizer needs an exp_avg buffer");
    HF_CHECK(algo_ != Algo::adamw || vp != nullptr || n == 0, ValueError, "AdamW needs an exp_avg_sq buffer");
    int64_t off = 0;
    for (auto& s : segs) {
      if (mp) s.m = mp + off;
      if (vp) s.v = vp + off;
      if (wp) s.master = wp + off;
      off += s.n;
    }
    keep_.push_back(steps);
    grads_.assign(n, py::none());
    plan_ = std::make_unique<hf::optim::Plan>(algo_, bf16_, std::move(segs), index_base);
  }

  // grads: a list (one per param) of arrays of the param's shape and dtype, or None (skipped).
  void set_grads(const py::list& grads) {
    auto& segs = plan_->segments();
    HF_CHECK(grads.size() == segs.size(), ValueError,
             "got " << grads.size() << " grads for " << segs.size() << " params");
    std::vector<const void*> ptrs(segs.size(), nullptr);
    for (size_t i = 0; i < segs.size(); ++i) {
      if (grads[i].is_none()) continue;
      const std::string name = idx_name("grads", i);
      py::array g = as_array(grads[i], name.c_str());
      const py::array& p = params_[i];
      HF_CHECK(same_shape(g, p), ValueError,
               name << " has shape " << shape_str(g) << " but params[" << i << "] has shape " << shape_str(p));
      const hf::DType dt = float_dtype(g, name.c_str());
      HF_CHECK((dt == hf::DType::bf16) == bf16_, ValueError,
               name << " has dtype " << dtype_str(g) << " but params[" << i << "] has dtype " << dtype_str(p));
      require_c_contiguous(g, name.c_str());
      ptrs[i] = g.data();
    }
    for (size_t i = 0; i < segs.size(); ++i) {
      segs[i].grad = ptrs[i];
      grads_[i] = grads[i];
    }
  }

  double grad_sumsq() {
    py::gil_scoped_release r;
    return plan_->grad_sumsq();
  }

  // hypers: one (lr, beta1, beta2, eps, weight_decay, nesterov) tuple per group.
  double step(const std::vector<std::tuple<double, double, double, double, double, bool>>& hypers, float grad_mul,
              bool stochastic, uint32_t sr_key, bool want_sumsq) {
    std::vector<hf::optim::Hyper> hs;
    for (const auto& t : hypers) {
      hf::optim::Hyper h;
      std::tie(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.nesterov) = t;
      hs.push_back(h);
    }
    hf::optim::StepConfig cfg;
    cfg.grad_mul = grad_mul;
    cfg.stochastic = stochastic;
    cfg.sr_key = sr_key;
    py::gil_scoped_release r;
    return plan_->step(hs, cfg, want_sumsq);
  }

  int64_t total() const { return plan_->total(); }
  int64_t num_chunks() const { return plan_->num_chunks(); }
  bool bf16() const { return bf16_; }

 private:
  Algo algo_ = Algo::adamw;
  bool bf16_ = false;
  std::vector<py::array> params_;
  std::vector<py::object> keep_;
  std::vector<py::object> grads_;
  std::unique_ptr<hf::optim::Plan> plan_;
};

Registration reg("optim", 50, [](py::module_& m) {
  py::class_<PyPlan>(m, "_OptimPlan",
                     "Segment table of a fused optimizer (used by homeforge.optim; not a public API).")
      .def(py::init<const std::string&, const py::list&, const py::list&, const py::object&, const py::object&,
                    const py::object&, py::array_t<int64_t>, uint64_t>(),
           py::arg("algo"), py::arg("params"), py::arg("groups"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
           py::arg("master"), py::arg("steps"), py::arg("index_base") = 0)
      .def("set_grads", &PyPlan::set_grads, py::arg("grads"))
      .def("grad_sumsq", &PyPlan::grad_sumsq)
      .def("step", &PyPlan::step, py::arg("hypers"), py::arg("grad_mul"), py::arg("stochastic"), py::arg("sr_key"),
           py::arg("want_sumsq"))
      .def_property_readonly("total", &PyPlan::total)
      .def_property_readonly("num_chunks", &PyPlan::num_chunks)
      .def_property_readonly("bf16", &PyPlan::bf16);
  m.def("_optim_hash32", &hf::optim::hash32, py::arg("x"));
});

}  // namespace
}  // namespace hf_bind
