/*
 * cpu_features.cpp: CPUID/XGETBV probing. AVX-512 needs both the CPUID bits and the OS
 * saving the opmask/ZMM state (XCR0 bits 5-7), so __builtin_cpu_supports alone is not enough.
 */
#include "runtime/cpu_features.h"

#include <atomic>
#include <cpuid.h>
#include <cstdint>
#include <cstdlib>

#include "runtime/errors.h"

namespace hf {
namespace {

uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

Isa probe() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::scalar;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!(osxsave && avx && fma && f16c)) return Isa::scalar;
  const uint64_t xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return Isa::scalar;  // XMM+YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Isa::scalar;
  const bool avx2 = b & (1u << 5), bmi2 = b & (1u << 8);
  if (!(avx2 && bmi2)) return Isa::scalar;
  const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  const bool zmm_state = (xcr0 & 0xE0) == 0xE0;
  if (!(f && dq && bw && vl && zmm_state)) return Isa::avx2;
  unsigned a1, b1, c1, d1;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5))) return Isa::avx512_bf16;
  return Isa::avx512;
}

std::atomic<int>& limit() {
  static std::atomic<int> value{[] {
    const char* env = std::getenv("HOMEFORGE_ISA");
    return env ? int(isa_from_name(env)) : int(Isa::avx512_bf16);
  }()};
  return value;
}

}  // namespace

Isa detected_isa() {
  static const Isa isa = probe();
  return isa;
}

Isa active_isa() {
  const int d = int(detected_isa()), l = limit().load(std::memory_order_relaxed);
  return Isa(d < l ? d : l);
}

void set_isa_limit(Isa l) { limit().store(int(l)); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512_bf16: return "avx512_bf16";
  }
  return "scalar";
}

Isa isa_from_name(const std::string& name) {
  for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512_bf16})
    if (name == isa_name(i)) return i;
  HF_THROW(ValueError, "unknown ISA '" << name << "'; expected one of scalar, avx2, avx512, avx512_bf16");
}

}  // namespace hf
