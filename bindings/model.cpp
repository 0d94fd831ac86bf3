/*
 * model.cpp (bindings): homeforge._core.LlamaModel, the native Llama-style decoder.
 *
 * The Python layer (python/homeforge/model.py) validates dtypes and converts token arrays to
 * C-contiguous int32; this layer re-checks shapes, exposes the flat parameter/gradient buffers as
 * zero-copy numpy arrays (kept alive by the model object) and releases the GIL around the work.
 * The gradient-ready hook is called with the GIL re-acquired.
 */
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/common.h"
#include "bindings/registry.h"
#include "model/model.h"

namespace hf_bind {
namespace {

using hf::model::Model;

py::array_t<int32_t> tokens_2d(const py::handle& obj, const char* name) {
  py::array a = as_array(obj, name);
  HF_CHECK(a.dtype().is(py::dtype::of<int32_t>()), TypeError, name << " must be int32, got " << dtype_str(a));
  require_c_contiguous(a, name);
  require_ndim(a, 2, name, "(B, T)");
  return py::reinterpret_borrow<py::array_t<int32_t>>(a);
}

py::array flat_view(py::object self, float* ptr, int64_t n) {
  return py::array_t<float>({n}, {int64_t(4)}, ptr, self);
}

Registration reg("model", 60, [](py::module_& m) {
  m.def("_model_profile", &hf::model::take_profile,
        "Seconds per kernel kind since the last call (set HOMEFORGE_MODEL_PROFILE=1 before import).");
  py::class_<Model>(m, "LlamaModel", "Native Llama-style decoder; use homeforge.Model instead.")
      .def(py::init([](int64_t V, int64_t d, int64_t L, int64_t H, int64_t Hkv, int64_t F, int64_t S, float theta,
                       float eps, bool tie, const std::string& dtype, bool recompute) {
             HF_CHECK(dtype == "fp32" || dtype == "bf16", ValueError, "dtype must be 'fp32' or 'bf16', got '" << dtype << "'");
             hf::model::Config c;
             c.vocab_size = V; c.d_model = d; c.n_layers = L; c.n_heads = H; c.n_kv_heads = Hkv; c.ffn_hidden = F;
             c.max_seq_len = S; c.rope_theta = theta; c.norm_eps = eps; c.tie_embeddings = tie;
             c.dtype = dtype == "bf16" ? hf::DType::bf16 : hf::DType::f32;
             c.recompute = recompute;
             return std::make_unique<Model>(c);
           }),
           py::arg("vocab_size"), py::arg("d_model"), py::arg("n_layers"), py::arg("n_heads"), py::arg("n_kv_heads"),
           py::arg("ffn_hidden"), py::arg("max_seq_len"), py::arg("rope_theta"), py::arg("norm_eps"),
           py::arg("tie_embeddings"), py::arg("dtype"), py::arg("recompute"))
      .def("num_params", &Model::num_params)
      .def("state_bytes", &Model::state_bytes)
      .def("workspace_bytes", &Model::workspace_bytes)
      .def("params", [](py::object self) { Model& mo = self.cast<Model&>(); return flat_view(self, mo.params(), mo.num_params()); })
      .def("grads", [](py::object self) { Model& mo = self.cast<Model&>(); return flat_view(self, mo.grads(), mo.num_params()); })
      .def("layout", [](Model& mo) {
        // [(name, offset, shape)] in flat-buffer order, named as transformers' LlamaForCausalLM state_dict.
        const auto& c = mo.config();
        const auto& o = mo.layer_offsets();
        const int64_t d = c.d_model, Hd = c.n_heads * c.head_dim(), Kd = c.n_kv_heads * c.head_dim(), F = c.ffn_hidden;
        py::list out;
        auto add = [&](const std::string& name, int64_t off, std::vector<int64_t> shape) {
          out.append(py::make_tuple(name, off, py::tuple(py::cast(shape))));
        };
        add("model.embed_tokens.weight", 0, {c.vocab_size, d});
        for (int64_t l = 0; l < c.n_layers; ++l) {
          const std::string p = "model.layers." + std::to_string(l) + ".";
          const int64_t b = mo.layer_begin(l);
          add(p + "input_layernorm.weight", b + o.attn_norm, {d});
          add(p + "self_attn.q_proj.weight", b + o.wq, {Hd, d});
          add(p + "self_attn.k_proj.weight", b + o.wk, {Kd, d});
          add(p + "self_attn.v_proj.weight", b + o.wv, {Kd, d});
          add(p + "self_attn.o_proj.weight", b + o.wo, {d, Hd});
          add(p + "post_attention_layernorm.weight", b + o.mlp_norm, {d});
          add(p + "mlp.gate_proj.weight", b + o.wgate, {F, d});
          add(p + "mlp.up_proj.weight", b + o.wup, {F, d});
          add(p + "mlp.down_proj.weight", b + o.wdown, {d, F});
        }
        add("model.norm.weight", mo.final_norm_offset(), {d});
        if (!c.tie_embeddings) add("lm_head.weight", mo.lm_head_offset(), {c.vocab_size, d});
        return out;
      })
      .def("layer_ranges", [](Model& mo) {
        // Flat ranges [begin, end) of: the embedding, each layer, and the tail (final norm + lm_head).
        py::list out;
        out.append(py::make_tuple(0, mo.embed_size()));
        for (int64_t l = 0; l < mo.config().n_layers; ++l) out.append(py::make_tuple(mo.layer_begin(l), mo.layer_begin(l + 1)));
        out.append(py::make_tuple(mo.final_norm_offset(), mo.num_params()));
        return out;
      })
      .def("zero_grad", [](Model& mo, bool overwrite_next) { py::gil_scoped_release r; mo.zero_grad(overwrite_next); },
           py::arg("overwrite_next") = false)
      .def("forward_backward", [](Model& mo, const py::handle& tok, const py::handle& tgt, py::object hook) {
        auto t = tokens_2d(tok, "tokens"), y = tokens_2d(tgt, "targets");
        HF_CHECK(t.shape(0) == y.shape(0) && t.shape(1) == y.shape(1), ValueError,
                 "targets shape " << shape_str(y) << " must equal tokens shape " << shape_str(t));
        Model::GradHook h;
        if (!hook.is_none()) {
          h = [hook](int64_t b, int64_t e) { py::gil_scoped_acquire g; hook(b, e); };
        }
        const int32_t* tp = t.data();
        const int32_t* yp = y.data();
        const int64_t B = t.shape(0), T = t.shape(1);
        py::gil_scoped_release r;
        return mo.forward_backward(tp, yp, B, T, h);
      }, py::arg("tokens"), py::arg("targets"), py::arg("hook") = py::none())
      .def("forward", [](Model& mo, const py::handle& tok) {
        auto t = tokens_2d(tok, "tokens");
        const int64_t B = t.shape(0), T = t.shape(1), V = mo.config().vocab_size;
        py::array_t<float> out({B, T, V});
        float* op = out.mutable_data();
        const int32_t* tp = t.data();
        {
          py::gil_scoped_release r;
          mo.forward(tp, B, T, op);
        }
        return out;
      }, py::arg("tokens"))
      .def("loss", [](Model& mo, const py::handle& tok, const py::handle& tgt) {
        auto t = tokens_2d(tok, "tokens"), y = tokens_2d(tgt, "targets");
        HF_CHECK(t.shape(0) == y.shape(0) && t.shape(1) == y.shape(1), ValueError,
                 "targets shape " << shape_str(y) << " must equal tokens shape " << shape_str(t));
        int64_t count = 0;
        double sum;
        const int32_t* tp = t.data();
        const int32_t* yp = y.data();
        const int64_t B = t.shape(0), T = t.shape(1);
        {
          py::gil_scoped_release r;
          sum = mo.loss(tp, yp, B, T, &count);
        }
        return py::make_tuple(sum, count);
      }, py::arg("tokens"), py::arg("targets"))
      .def("decode", [](Model& mo, const py::handle& tok, int64_t pos0) {
        py::array a = as_array(tok, "tokens");
        HF_CHECK(a.dtype().is(py::dtype::of<int32_t>()), TypeError, "tokens must be int32, got " << dtype_str(a));
        require_c_contiguous(a, "tokens");
        require_ndim(a, 1, "tokens", "(n,)");
        HF_CHECK(a.shape(0) >= 1, ValueError, "decode needs at least one token");
        py::array_t<float> out({mo.config().vocab_size});
        float* op = out.mutable_data();
        const int32_t* tp = static_cast<const int32_t*>(a.data());
        const int64_t n = a.shape(0);
        {
          py::gil_scoped_release r;
          mo.decode(tp, n, pos0, op);
        }
        return out;
      }, py::arg("tokens"), py::arg("pos0"));
});

}  // namespace
}  // namespace hf_bind
