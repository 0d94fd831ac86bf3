/*
 * module.cpp: homeforge._core. Maps the core's exceptions to Python's and runs every
 * registered binding family (see registry.h).
 */
#include <algorithm>

#include <pybind11/pybind11.h>

#include "bindings/registry.h"
#include "runtime/errors.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "homeforge's C++ core (tokenizer, attention, optimizers, model kernels) on oneDNN and oneTBB.";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const hf::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const hf::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const hf::IOError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });
  auto entries = hf_bind::registry();
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  for (auto& e : entries) e.fn(m);
}
