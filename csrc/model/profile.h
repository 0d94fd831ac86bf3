/*
 * profile.h: optional wall-time accounting per kernel kind, for finding where a step goes.
 * Enabled by HOMEFORGE_MODEL_PROFILE=1 in the environment (read once); otherwise one branch.
 *   { HF_PHASE("swiglu_forward"); swiglu_forward(...); }
 * homeforge._core._model_profile() returns and clears the accumulated seconds.
 */
#pragma once
#include <chrono>
#include <map>
#include <string>

namespace hf::model {

bool profiling();
void profile_add(const char* name, double seconds);
std::map<std::string, double> take_profile();

struct Phase {
  const char* name;
  std::chrono::steady_clock::time_point t0;
  explicit Phase(const char* n) : name(n) {
    if (profiling()) t0 = std::chrono::steady_clock::now();
  }
  ~Phase() {
    if (profiling()) profile_add(name, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
};

}  // namespace hf::model

#define HF_PHASE_CAT2(a, b) a##b
#define HF_PHASE_CAT(a, b) HF_PHASE_CAT2(a, b)
#define HF_PHASE(name) ::hf::model::Phase HF_PHASE_CAT(hf_phase_, __LINE__)(name)
