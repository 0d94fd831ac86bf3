/*
 * cpu_features.h: which vector ISA this CPU (and OS) supports, decided at run time.
 *
 * Wheels are compiled for baseline x86-64; wide kernels live in *_avx2.cpp / *_avx512.cpp /
 * *_avx512bf16.cpp files (see CMakeLists.txt) and are picked by active_isa(). Tests can lower
 * the ISA with set_isa_limit() (or HOMEFORGE_ISA=avx2 in the environment) to exercise the
 * fallbacks on a machine that has AVX-512.
 */
#pragma once
#include <string>

namespace hf {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };

Isa detected_isa();          // what CPUID + XGETBV allow
Isa active_isa();            // min(detected, limit): what kernels should use
void set_isa_limit(Isa limit);
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws hf::ValueError on unknown names

}  // namespace hf
