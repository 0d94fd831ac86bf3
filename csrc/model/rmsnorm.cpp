/*
 * rmsnorm.cpp: RMSNorm (transformers' LlamaRMSNorm) with the residual add fused in.
 *
 *   forward   x_out = x + add;  rstd = 1/sqrt(mean(x_out^2) + eps);  h = w * (x_out * rstd)
 *   backward  g = dh * w;  dx += rstd * (g - xhat * mean(g * xhat));  dw += sum_n dh * xhat
 *
 * x and h are (N, d); statistics are f32. Fusing the residual add into the norm reads the two
 * residual inputs once and writes both the new residual stream (kept for backward) and the
 * normalized GEMM input (f32 or bf16) in the same pass. The weight gradient is a column sum over
 * N rows: each fixed chunk of rows writes its own partial row, and partials are summed in chunk
 * order, so the result does not depend on the thread count.
 */
#include <cmath>
#include <vector>

#include "model/kernels.h"
#include "runtime/parallel.h"

namespace hf::model {
namespace {

template <class H>
void fwd(const float* x, const float* add, float* x_out, const float* w, int64_t N, int64_t d, float eps, H* h,
         float* rstd) {
  parallel_for(0, N, std::max<int64_t>(1, 4096 / d), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      const float* xr = x + n * d;
      float* xo = x_out + n * d;
      if (add) {
        const float* ar = add + n * d;
        for (int64_t j = 0; j < d; ++j) xo[j] = xr[j] + ar[j];
      } else if (xo != xr) {
        std::memcpy(xo, xr, sizeof(float) * d);
      }
      const float ss = row_sumsq(xo, d);
      const float r = 1.0f / std::sqrt(ss / float(d) + eps);
      if (rstd) rstd[n] = r;
      H* hr = h + n * d;
      for (int64_t j = 0; j < d; ++j) st(hr, j, w[j] * (xo[j] * r));
    }
  });
}

template <class C>
void bwd(const float* dh, const float* x, const float* rstd, const float* w, int64_t N, int64_t d, float* dx,
         float* dw, C* copy) {
  constexpr int64_t kChunk = 32;  // rows per partial of dw (fixed: determinism)
  const int64_t nchunks = (N + kChunk - 1) / kChunk;
  std::vector<float> partial(size_t(nchunks * d));
  parallel_for(0, nchunks, 1, [&](int64_t clo, int64_t chi) {
    std::vector<float> gw(static_cast<size_t>(d));
    for (int64_t c = clo; c < chi; ++c) {
      float* pw = partial.data() + c * d;
      std::fill(pw, pw + d, 0.0f);
      for (int64_t n = c * kChunk; n < std::min(N, (c + 1) * kChunk); ++n) {
        const float* g = dh + n * d;
        const float* xr = x + n * d;
        const float r = rstd[n];
        for (int64_t j = 0; j < d; ++j) {
          gw[j] = g[j] * w[j];
          pw[j] += g[j] * (xr[j] * r);
        }
        const float m = row_dot(gw.data(), xr, d) * r / float(d);
        float* dr = dx + n * d;
        for (int64_t j = 0; j < d; ++j) {
          const float v = dr[j] + r * (gw[j] - xr[j] * r * m);
          dr[j] = v;
          if (copy) st(copy + n * d, j, v);
        }
      }
    }
  });
  parallel_for(0, d, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t c = 0; c < nchunks; ++c)
      for (int64_t j = lo; j < hi; ++j) dw[j] += partial[c * d + j];
  });
}

}  // namespace

void add_rmsnorm_forward(const float* x, const float* add, float* x_out, const float* w, int64_t N, int64_t d,
                         float eps, void* h, DType ht, float* rstd) {
  if (ht == DType::f32) fwd(x, add, x_out, w, N, d, eps, static_cast<float*>(h), rstd);
  else fwd(x, add, x_out, w, N, d, eps, static_cast<bf16_t*>(h), rstd);
}

void rmsnorm_backward(const float* dh, const float* x, const float* rstd, const float* w, int64_t N, int64_t d,
                      float* dx, float* dw, void* dx_copy, DType ct) {
  if (dx_copy == nullptr) bwd<float>(dh, x, rstd, w, N, d, dx, dw, nullptr);
  else if (ct == DType::f32) bwd(dh, x, rstd, w, N, d, dx, dw, static_cast<float*>(dx_copy));
  else bwd(dh, x, rstd, w, N, d, dx, dw, static_cast<bf16_t*>(dx_copy));
}

}  // namespace hf::model
