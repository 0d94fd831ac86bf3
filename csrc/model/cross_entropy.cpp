/*
 * cross_entropy.cpp: the LM head and softmax cross-entropy, fused and chunked over token rows.
 *
 *   for each chunk of rows r:  logits (rows, V) f32 = h[r] (rows, d) @ W^T          (GEMM)
 *                              loss_n = logsumexp(logits_n) - logits_n[target_n]
 *                              dlogits = (softmax - onehot(target)) * scale        (in place)
 *                              dh[r] (rows, d) = dlogits @ W                        (GEMM)
 *                              dW (V, d) += dlogits^T @ h[r]    (GEMMs over 2048-row vocab blocks)
 *
 * Only one chunk of logits exists at a time (chunk x V f32), never the full N x V f32, and the
 * softmax gradient overwrites the logits in the same pass that computes the loss: one read + one
 * write of the chunk beyond the GEMMs. Rows with target -100 give no loss and a zero gradient.
 * In mixed precision the bf16 dlogits of a group of chunks (up to 64 MiB, see ce_group_rows) are
 * kept and dW is updated once per group: with chunk = 262 rows at V = 32000 the 98 MB f32 dW was
 * read and written four times per step with a K = 262 GEMM (~660 GFLOP/s); one K = 1024 GEMM
 * measured ~810 GFLOP/s on this machine. Per-row losses are summed in row order in double, so the
 * loss does not depend on threading.
 */
#include <cmath>
#include <vector>

#include "model/kernels.h"
#include "model/profile.h"
#include "runtime/gemm.h"
#include "runtime/parallel.h"

namespace hf::model {

// dW (V, d) f32 += g^T (V, K) @ h (K, d), with g the dlogits stored (K, V) row-major (trans_a,
// lda = V) and h (K, d). Split into vocabulary blocks of kHeadBlock rows of dW, one GEMM each:
// at nano (V = 50257, d = 768, K = 664 bf16, 2 threads) the single (50257 x 768) GEMM measured
// 450-610 GFLOP/s and 2048-row blocks 700-850 (as fast as the logits GEMM; 1024-4096 rows within
// noise of each other). Each block's f32 C (6 MiB at d = 768) is read, updated and written once
// while it is hot, instead of oneDNN streaming the whole 154 MB gradient through its own
// partitioning of a huge M. K is not split here: each element still sums the same rows.
static constexpr int64_t kHeadBlock = 2048;

static void head_weight_grad(const void* g, const void* h, int64_t K, int64_t d, int64_t V, DType ht, float* dW,
                             float beta) {
  const int64_t es = dsize(ht);
  for (int64_t v0 = 0; v0 < V; v0 += kHeadBlock)  // dW rows [v0, v0 + M) from dlogits columns, in place
    linear_backward_weight(static_cast<const char*>(g) + v0 * es, h, K, d, std::min(kHeadBlock, V - v0), ht,
                           dW + v0 * d, beta, V);
}

int64_t ce_group_rows(int64_t chunk, int64_t N, int64_t V, DType ht) {
  if (ht != DType::bf16) return chunk;  // f32: dlogits live in the chunk's logits, one group per chunk
  const int64_t k = std::max<int64_t>(1, (int64_t(64) << 20) / (2 * V) / chunk);
  return std::min(chunk * k, N);
}

int64_t ce_workspace_bytes(int64_t chunk, int64_t N, int64_t V, DType ht, bool with_grad) {
  const int64_t rows16 = ht != DType::bf16 ? 0 : with_grad ? ce_group_rows(chunk, N, V, ht) : std::min(chunk, N);
  return chunk * V * 4 + rows16 * V * 2 + 64;
}

double cross_entropy_fused(const void* h, const void* W, const int32_t* targets, int64_t N, int64_t d, int64_t V,
                           DType ht, int64_t chunk, float scale, float* dh, float* dW, void* work, bool dW_zero) {
  const int64_t es = dsize(ht);
  float* logits = static_cast<float*>(work);
  bf16_t* dl16 = ht == DType::bf16 ? reinterpret_cast<bf16_t*>(logits + chunk * V) : nullptr;
  // bf16 with a gradient: dlogits of a whole group of chunks are kept (in dl16) and the group's
  // dW update is one GEMM with K = group rows: the (V, d) f32 gradient is read and written once
  // per group instead of once per chunk, and the GEMM runs at a larger, more efficient K.
  const int64_t group = dh && dl16 ? ce_group_rows(chunk, N, V, ht) : chunk;
  std::vector<double> row_loss(size_t(std::min(chunk, N)));
  // dW_zero: the caller guarantees dW is all zeros and nothing else wrote it this step, so the
  // first dW GEMM may overwrite (beta = 0: it does not read the 154 MB f32 gradient at nano);
  // every later one adds.
  float dW_beta = dW_zero ? 0.0f : 1.0f;
  double total = 0.0;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    const int64_t g0 = r0 / group * group;  // first row of this chunk's group
    const bool group_ends = r0 + rows == std::min(g0 + group, N);
    const char* hr = static_cast<const char*>(h) + r0 * d * es;
    bf16_t* d16 = dl16 && dh ? dl16 + (r0 - g0) * V : dl16;  // this chunk's bf16 dlogits rows
    bool any = false;
    for (int64_t i = 0; i < rows; ++i) any |= targets[r0 + i] != -100;
    if (!any) {
      if (dh) std::fill(dh + r0 * d, dh + (r0 + rows) * d, 0.0f);
      if (dh && dl16 && group > chunk) std::fill(d16, d16 + rows * V, bf16_t(0));  // the group GEMM reads them
    } else {
      {
        HF_PHASE("ce_logits_gemm");
        linear_forward(hr, W, rows, d, V, ht, logits, DType::f32);
      }
      {
        HF_PHASE("ce_softmax");
        parallel_for(0, rows, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) {
            float* l = logits + i * V;
            const int32_t t = targets[r0 + i];
            if (t == -100) {
              row_loss[i] = 0.0;
              if (dh) {
                if (dl16) std::fill(d16 + i * V, d16 + (i + 1) * V, bf16_t(0));
                else std::fill(l, l + V, 0.0f);
              }
              continue;
            }
            const float m = row_max(l, V);
            const float lt = l[t];
            exp_shift_inplace(l, V, m);
            const float sum = row_sum(l, V);
            row_loss[i] = double(m) + std::log(double(sum)) - double(lt);
            if (dh) {
              const float inv = scale / sum;
              if (dl16) {
                bf16_t* o = d16 + i * V;
                scale_row_to_bf16(l, inv, o, V);
                o[t] = to_bf16(l[t] * inv - scale);
              } else {
                for (int64_t j = 0; j < V; ++j) l[j] *= inv;
                l[t] -= scale;
              }
            }
          }
        });
      }
      for (int64_t i = 0; i < rows; ++i) total += row_loss[i];
      if (dh) {
        HF_PHASE("ce_grad_gemms");
        const void* g = dl16 ? static_cast<const void*>(d16) : static_cast<const void*>(logits);
        linear_backward_input(g, W, rows, d, V, ht, dh + r0 * d, DType::f32);
        if (group == chunk) {
          head_weight_grad(g, hr, rows, d, V, ht, dW, dW_beta);
          dW_beta = 1.0f;
        }
      }
    }
    if (dh && group > chunk && group_ends) {
      HF_PHASE("ce_grad_gemms");
      head_weight_grad(dl16, static_cast<const char*>(h) + g0 * d * es, r0 + rows - g0, d, V, ht, dW, dW_beta);
      dW_beta = 1.0f;
    }
  }
  return total;
}

}  // namespace hf::model
