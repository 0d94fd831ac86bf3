/*
 * common.h: argument checks shared by every binding file.
 *
 * Arrays cross the boundary zero-copy. These helpers check dtype, rank, contiguity and
 * writability and throw hf::TypeError / hf::ValueError (-> TypeError / ValueError) naming the
 * argument and its shape. bf16 arrays are accepted as ml_dtypes.bfloat16 or as uint16 views.
 */
#pragma once
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "runtime/errors.h"
#include "runtime/gemm.h"

namespace hf_bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
  if (a.ndim() == 1) os << ",";
  os << ")";
  return os.str();
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Accepts numpy arrays only (no silent conversion of lists: callers convert explicitly).
inline py::array as_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw hf::TypeError(std::string(name) + " must be a numpy array, got " +
                        py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
  }
  return py::reinterpret_borrow<py::array>(obj);
}

inline bool is_bf16(const py::array& a) {
  const std::string name = dtype_str(a);
  return a.itemsize() == 2 && (name == "bfloat16" || name == "uint16");
}
inline bool is_f32(const py::array& a) { return a.dtype().is(py::dtype::of<float>()); }

// The array's element type as a core DType; throws TypeError for anything else.
inline hf::DType float_dtype(const py::array& a, const char* name) {
  if (is_f32(a)) return hf::DType::f32;
  if (is_bf16(a)) return hf::DType::bf16;
  throw hf::TypeError(std::string(name) + " must be float32 or bfloat16 (ml_dtypes.bfloat16 or a uint16 view), got " +
                      dtype_str(a));
}

inline void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw hf::ValueError(std::string(name) + " must be C-contiguous; got strides that are not (shape " + shape_str(a) +
                         "); pass np.ascontiguousarray(" + name + ")");
}

inline void require_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) throw hf::ValueError(std::string(name) + " must be writeable");
}

inline void require_ndim(const py::array& a, int ndim, const char* name, const char* layout) {
  if (a.ndim() != ndim)
    throw hf::ValueError(std::string(name) + " must be " + std::to_string(ndim) + "-D " + layout + ", got shape " +
                         shape_str(a));
}

}  // namespace hf_bind
