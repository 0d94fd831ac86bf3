/*
 * bf16.h: scalar bfloat16 <-> float32 conversion, shared by every kernel family.
 *
 * bf16 is the top half of an IEEE float32. Conversion to bf16 rounds to nearest, ties to even,
 * and keeps NaN a (quiet) NaN; conversion back is exact. Vectorised versions live beside each
 * kernel's AVX-512 file (AVX512_BF16 has vcvtne2ps2bf16, which rounds the same way).
 */
#pragma once
#include <cstdint>
#include <cstring>

namespace hf {

using bf16_t = uint16_t;  // storage type; numpy sees ml_dtypes.bfloat16 or uint16

inline float bf16_to_f32(bf16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline bf16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return bf16_t((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);                                         // round half to even
  return bf16_t(bits >> 16);
}

// Stochastic rounding: add uniform 16-bit noise below the kept bits, then truncate.
inline bf16_t f32_to_bf16_stochastic(float f, uint32_t random16) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) >= 0x7f800000u) return f32_to_bf16(f);  // inf/NaN unchanged
  bits += (random16 & 0xffffu);
  return bf16_t(bits >> 16);
}

}  // namespace hf
