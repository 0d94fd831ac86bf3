/*
 * attention_avx2.cpp: the attention tile driver (attention_impl.inc) over the plain C++ tile
 * kernels (attention_generic.inc), compiled with AVX2+FMA, which the compiler uses to vectorise them.
 * Shapes and the tiling are described in attention_kernels.h and attention_impl.inc.
 */
#include <cstdint>
#include <cstdlib>

#include "attention/attention_kernels.h"

namespace hf::attn::avx2 {
#include "attention/attention_generic.inc"
#include "attention/attention_impl.inc"
}  // namespace hf::attn::avx2
