/*
 * profile.cpp: storage for the optional per-kernel timing of profile.h.
 */
#include "model/profile.h"

#include <cstdlib>
#include <mutex>

namespace hf::model {
namespace {
std::mutex g_mutex;
std::map<std::string, double> g_prof;
}  // namespace

bool profiling() {
  static const bool on = [] {
    const char* e = std::getenv("HOMEFORGE_MODEL_PROFILE");
    return e && *e && *e != '0';
  }();
  return on;
}

void profile_add(const char* name, double seconds) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_prof[name] += seconds;
}

std::map<std::string, double> take_profile() {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto out = g_prof;
  g_prof.clear();
  return out;
}

}  // namespace hf::model
