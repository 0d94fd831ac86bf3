/*
 * errors.h: the one way the C++ core reports bad input.
 *
 * The core knows nothing of Python. It throws one of three exception types, and the
 * binding layer (bindings/module.cpp) maps each to a Python exception:
 *   hf::ValueError -> ValueError   bad shapes, dtypes, values
 *   hf::TypeError  -> TypeError    wrong kinds of object
 *   hf::IOError    -> OSError      files
 * HF_CHECK builds the message with a stream so call sites can name shapes cheaply:
 *   HF_CHECK(H % Hkv == 0, ValueError, "H=" << H << " is not divisible by Hkv=" << Hkv);
 */
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace hf {

struct ValueError : std::runtime_error { using std::runtime_error::runtime_error; };
struct TypeError : std::runtime_error { using std::runtime_error::runtime_error; };
struct IOError : std::runtime_error { using std::runtime_error::runtime_error; };

}  // namespace hf

#define HF_CHECK(cond, kind, msg)                       \
  do {                                                  \
    if (!(cond)) {                                      \
      std::ostringstream hf_check_os_;                  \
      hf_check_os_ << msg;                              \
      throw ::hf::kind(hf_check_os_.str());             \
    }                                                   \
  } while (0)

#define HF_THROW(kind, msg) HF_CHECK(false, kind, msg)
