/*
 * attention_avx512.cpp: AVX-512 microkernels for the attention tile driver (attention_impl.inc).
 *
 *   qk:        S (M x 64) = A (M x K) . Bt (K x 64)      scores Q.K^T and dP = dO.V^T
 *   gemm_acc:  C (rows x Dp) += A (rows x K) . B (K x Dp, row stride ldb)  P.V, dV += P^T.dO, dK += dS^T.Q, dQ += dS.K
 *   row_exp2:  p = 2^(s*c - m) by a degree-7 polynomial after range reduction, vscalefps for 2^n
 *   qk_softmax: the forward's qk and online softmax in one kernel: S stays in registers, each row's
 *              max, P = 2^(S*c - max) and lane-wise sums come out of the 6 x 64 block, and the
 *              rescale of the running output is left to gemm_acc's row scales (C = C*alpha + P.V)
 *
 * Both products are register blocked: qk keeps a 6 x 64 block of S in 24 zmm accumulators and
 * per k loads 4 vectors of Bt and broadcasts 6 elements of A (24 FMAs per 4 loads + 6
 * broadcasts); gemm_acc takes C in chunks of 64 columns, keeps 6 rows x 4 vectors of C and per k
 * loads 4 vectors of B and broadcasts 6 elements of A (chunks of 128 columns would need 33
 * registers and fold B's loads into every FMA), A's strides letting the same kernel read P or
 * P^T. The next key block (and, in the backward, the next query block) is prefetched into L2
 * while the current one is computed: at long T a head's K and V do not fit L2. Packed
 * rows are padded to 16 floats, so there are no masked loads. A 64-key block is 16 KiB of f32 at
 * D = 64 (32 KiB at D = 128), so the tiles of one work item stay in L1/L2; why not oneDNN per tile: at these sizes
 * (M x 64 x D with M = 128-256) a primitive call costs microseconds of dispatch for ~0.5 MFLOP.
 */
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

#include "attention/attention_kernels.h"

namespace hf::attn::avx512 {

#include "attention/attention_avx512_kernels.inc"
#include "attention/attention_impl.inc"

}  // namespace hf::attn::avx512
