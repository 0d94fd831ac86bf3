/*
 * registry.h: each bindings/<family>.cpp registers itself here, so adding a family never edits
 * a shared file. module.cpp runs the registered functions in `order`, then names are final.
 *
 *   static hf_bind::Registration reg("tokenizer", 30, [](py::module_& m) { ... });
 */
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>

namespace hf_bind {

namespace py = pybind11;

struct BindEntry {
  std::string name;
  int order;
  std::function<void(py::module_&)> fn;
};

inline std::vector<BindEntry>& registry() {
  static std::vector<BindEntry> entries;
  return entries;
}

struct Registration {
  Registration(const char* name, int order, std::function<void(py::module_&)> fn) {
    registry().push_back({name, order, std::move(fn)});
  }
};

}  // namespace hf_bind
