/*
 * attention_avx512bf16.cpp: the attention tile driver for bf16 inputs on CPUs with AVX512_BF16.
 * For now it reuses the AVX-512 f32 microkernels (bf16 -> f32 conversion while packing is exact);
 * see attention_avx512.cpp.
 */
#include <cstdint>

#include "attention/attention_kernels.h"

namespace hf::attn::avx512bf16 {
void fwd_items(const Ctx& c, int64_t lo, int64_t hi) { avx512::fwd_items(c, lo, hi); }
void bwd_kv_items(const Ctx& c, int64_t lo, int64_t hi) { avx512::bwd_kv_items(c, lo, hi); }
void bwd_q_items(const Ctx& c, int64_t lo, int64_t hi) { avx512::bwd_q_items(c, lo, hi); }
void bwd_single_items(const Ctx& c, int64_t lo, int64_t hi) { avx512::bwd_single_items(c, lo, hi); }
void dvec_items(const Ctx& c, float* Dvec, int64_t lo, int64_t hi) { avx512::dvec_items(c, Dvec, lo, hi); }
}  // namespace hf::attn::avx512bf16
