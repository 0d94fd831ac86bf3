/*
 * optim_scalar.cpp: the portable (baseline x86-64 / any CPU) optimizer kernels: the same
 * template as the AVX files with one float per "vector". FMA contraction is off so the result is
 * bitwise what the vector files produce.
 */
#pragma GCC optimize("fp-contract=off")
#include "optim/optim_kernels.h"

namespace hf::optim {
StepPieceFn step_piece_scalar() { return &kern::step_piece<kern::ScalarV>; }
SumsqPieceFn sumsq_piece_scalar() { return &kern::sumsq_piece<kern::ScalarV>; }
}  // namespace hf::optim
