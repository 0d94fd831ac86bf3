/*
 * attention_scalar.cpp: the attention tile driver (attention_impl.inc) over the plain C++ tile
 * kernels (attention_generic.inc), compiled for the baseline ISA (SSE2): the fallback on any x86-64.
 * Shapes and the tiling are described in attention_kernels.h and attention_impl.inc.
 */
#include <cstdint>
#include <cstdlib>

#include "attention/attention_kernels.h"

namespace hf::attn::scalar {
#include "attention/attention_generic.inc"
#include "attention/attention_impl.inc"
}  // namespace hf::attn::scalar
