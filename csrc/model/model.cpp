/*
 * model.cpp: the layer/model driver of the Llama-style decoder (see model.h for the layout).
 *
 * Per layer, forward (N = B*T tokens, A = f32 or bf16 activations):
 *   h1 = RMSNorm(x_prev + add)            fused residual add + norm, writes the layer input x_in
 *   qkv = h1 [Wq;Wk;Wv]^T                  one GEMM (N, H*D + 2*Hkv*D), f32 out
 *   q, k, v = RoPE/split(qkv)              one pass, A out (k/v may go straight to a KV cache)
 *   att, lse = attention(q, k, v)          fused causal GQA kernels (csrc/attention)
 *   y = att Wo^T                           GEMM
 *   h2 = RMSNorm(xmid = x_in + y)          fused residual add + norm
 *   gu = h2 [Wgate;Wup]^T                  one GEMM (N, 2F), A out
 *   act = silu(gate) * up;  y = act Wdown^T
 * and the next layer (or the final norm) starts with x = xmid + y, fused into its norm.
 *
 * Activation memory is planned once per (B, T, train) in one aligned workspace: the per-layer
 * slots (h1, q, k, v, att, lse, xmid, h2, gu, act and the norm statistics), the residual stream per
 * layer, and backward scratch that is reused by every layer (dgu/dqkv and dact/datt share space
 * since they are never live together). With recompute, only the residual stream is kept per layer
 * and one slot is re-filled by re-running that layer's forward just before its backward.
 * SwiGLU's output is kept (it is the down projection's GEMM input): recomputing it costs a
 * sigmoid pass per layer, which measured more than its N*F memory is worth.
 */
#include "model/model.h"
#include "model/profile.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <chrono>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "attention/attention.h"
#include "runtime/errors.h"
#include "runtime/parallel.h"

namespace hf::model {

void AlignedBuf::reset(int64_t nbytes, bool zero) {
  std::free(ptr);
  ptr = nullptr;
  bytes = 0;
  if (nbytes <= 0) return;
  const int64_t rounded = (nbytes + 63) / 64 * 64;
  ptr = std::aligned_alloc(64, size_t(rounded));
  if (!ptr) throw std::bad_alloc();
  bytes = rounded;
  if (zero) std::memset(ptr, 0, size_t(rounded));
}

AlignedBuf::~AlignedBuf() { std::free(ptr); }

Model::Model(const Config& c) : cfg_(c) {
  HF_CHECK(c.vocab_size >= 1 && c.d_model >= 1 && c.n_layers >= 1 && c.n_heads >= 1 && c.n_kv_heads >= 1 &&
               c.ffn_hidden >= 1 && c.max_seq_len >= 1,
           ValueError, "model config sizes must be >= 1");
  HF_CHECK(c.d_model % c.n_heads == 0, ValueError,
           "d_model=" << c.d_model << " is not divisible by n_heads=" << c.n_heads);
  HF_CHECK(c.n_heads % c.n_kv_heads == 0, ValueError,
           "n_heads=" << c.n_heads << " is not divisible by n_kv_heads=" << c.n_kv_heads);
  HF_CHECK(c.head_dim() % 2 == 0, ValueError, "head_dim=" << c.head_dim() << " must be even for RoPE");
  const int64_t d = c.d_model, D = c.head_dim(), Hd = c.n_heads * D, Kd = c.n_kv_heads * D, F = c.ffn_hidden;
  int64_t o = 0;
  lo_.attn_norm = o; o += d;
  lo_.wq = o; o += Hd * d;
  lo_.wk = o; o += Kd * d;
  lo_.wv = o; o += Kd * d;
  lo_.wo = o; o += d * Hd;
  lo_.mlp_norm = o; o += d;
  lo_.wgate = o; o += F * d;
  lo_.wup = o; o += F * d;
  lo_.wdown = o; o += d * F;
  lo_.size = o;
  n_params_ = embed_size() + c.n_layers * lo_.size + d + (c.tie_embeddings ? 0 : embed_size());
  params_.reset(n_params_ * 4, true);
  grads_.reset(n_params_ * 4, true);
  if (c.dtype == DType::bf16) wbf_.reset(n_params_ * 2, true);
  // RoPE tables in f32 exactly as transformers computes them: inv_freq = 1 / theta^(2i/D) in f32,
  // angle = f32(pos) * inv_freq in f32, then cos/sin (correctly rounded here via double).
  const int64_t half = D / 2;
  rope_cos_.resize(size_t(c.max_seq_len * half));
  rope_sin_.resize(size_t(c.max_seq_len * half));
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    const float e = float(2 * i) / float(D);
    inv[i] = 1.0f / std::pow(c.rope_theta, e);
  }
  for (int64_t p = 0; p < c.max_seq_len; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float ang = float(p) * inv[i];
      rope_cos_[p * half + i] = float(std::cos(double(ang)));
      rope_sin_[p * half + i] = float(std::sin(double(ang)));
    }
}

Model::Busy::Busy(Model& m) : m_(m) {
  if (m.busy_thread_.load() == std::this_thread::get_id())
    throw std::runtime_error("the model is already running a call on this thread (e.g. a gradient hook called "
                             "forward, loss, decode or zero_grad from inside forward_backward); it cannot start "
                             "another until that one returns");
  lock_ = std::unique_lock<std::mutex>(m.busy_mutex_);
  m.busy_thread_.store(std::this_thread::get_id());
}

Model::Busy::~Busy() { m_.busy_thread_.store(std::thread::id()); }

void Model::zero_grad(bool overwrite_next) {
  Busy busy(*this);
  float* g = grads();
  parallel_for(0, n_params_, 1 << 16, [&](int64_t lo, int64_t hi) { std::memset(g + lo, 0, size_t(hi - lo) * 4); });
  grads_zero_ = overwrite_next;
}

int64_t Model::state_bytes() const {
  const int64_t rope = int64_t(rope_cos_.size() + rope_sin_.size()) * int64_t(sizeof(float));
  return params_.bytes + grads_.bytes + wbf_.bytes + work_.bytes + kv_.bytes + rope;
}

void Model::check_tokens(const int32_t* tokens, int64_t n, int64_t B, int64_t T) const {
  HF_CHECK(B >= 1 && T >= 1, ValueError, "tokens must have shape (B, T) with B, T >= 1, got (" << B << ", " << T << ")");
  HF_CHECK(T <= cfg_.max_seq_len, ValueError,
           "sequence length " << T << " exceeds max_seq_len=" << cfg_.max_seq_len);
  for (int64_t i = 0; i < n; ++i)
    HF_CHECK(tokens[i] >= 0 && tokens[i] < cfg_.vocab_size, ValueError,
             "token id " << tokens[i] << " at flat position " << i << " is outside [0, vocab_size=" << cfg_.vocab_size
                         << ")");
}

void Model::refresh_weights() {
  if (cfg_.dtype == DType::bf16) cast_f32_to_bf16(params(), static_cast<bf16_t*>(wbf_.ptr), n_params_);
}

const void* Model::W(int64_t offset) const {
  if (cfg_.dtype == DType::bf16) return static_cast<const bf16_t*>(wbf_.ptr) + offset;
  return static_cast<const float*>(params_.ptr) + offset;
}

int64_t Model::layout(Plan& p, char* base, int64_t B, int64_t T, bool train) const {
  const int64_t N = B * T, d = cfg_.d_model, D = cfg_.head_dim(), H = cfg_.n_heads, Hd = H * D,
                Kd = cfg_.n_kv_heads * D, F = cfg_.ffn_hidden, L = cfg_.n_layers, V = cfg_.vocab_size;
  const int64_t es = dsize(cfg_.dtype);
  int64_t off = 0;
  auto take = [&](int64_t bytes) -> char* {
    char* r = base ? base + off : nullptr;
    off += (bytes + 63) / 64 * 64;
    return r;
  };
  p.B = B;
  p.T = T;
  p.train = train;
  const int64_t nslots = train && !cfg_.recompute ? L : 1;
  p.slots.assign(size_t(nslots), Slot{});
  for (auto& s : p.slots) {
    s.h1 = take(N * d * es);
    s.rstd1 = reinterpret_cast<float*>(take(N * 4));
    s.q = take(N * Hd * es);
    s.k = take(N * Kd * es);
    s.v = take(N * Kd * es);
    s.att = take(N * Hd * es);
    s.lse = reinterpret_cast<float*>(take(B * H * T * 4));
    s.xmid = reinterpret_cast<float*>(take(N * d * 4));
    s.h2 = take(N * d * es);
    s.rstd2 = reinterpret_cast<float*>(take(N * 4));
    s.gu = take(N * 2 * F * es);
    s.act = take(N * F * es);
  }
  p.xres = reinterpret_cast<float*>(take((train ? L + 1 : 1) * N * d * 4));
  p.hf = take(N * d * es);
  p.rstdf = reinterpret_cast<float*>(take(N * 4));
  p.qkvf = reinterpret_cast<float*>(take(N * (Hd + 2 * Kd) * 4));
  p.y = reinterpret_cast<float*>(take(N * d * 4));
  // Cross-entropy chunk: ~32 MiB of f32 logits at a time (at least 64 rows). In f32 each chunk
  // re-reads and re-writes the (V, d) f32 gradient of the output matrix in its dW GEMM, so chunks
  // should not be too small either; in bf16 (with a gradient) the dW GEMM runs once per group of
  // chunks instead (ce_group_rows: up to 64 MiB of bf16 dlogits kept).
  p.ce_chunk = std::min<int64_t>(N, std::max<int64_t>(64, (int64_t(32) << 20) / (4 * V)));
  p.ce_work = take(ce_workspace_bytes(p.ce_chunk, N, V, cfg_.dtype, train));
  if (train) {
    p.dx = reinterpret_cast<float*>(take(N * d * 4));
    p.dh = reinterpret_cast<float*>(take(N * d * 4));
    p.dxc = cfg_.dtype == DType::bf16 ? take(N * d * es) : static_cast<void*>(p.dx);
    p.dgu_qkv = take(N * std::max(2 * F, Hd + 2 * Kd) * es);
    p.dact_att = take(N * std::max(F, Hd) * es);
    p.dq = take(N * Hd * es);
    p.dk = take(N * Kd * es);
    p.dv = take(N * Kd * es);
  }
  return off;
}

Model::Plan& Model::plan(int64_t B, int64_t T, bool train) {
  if (have_plan_ && plan_.B == B && plan_.T == T && plan_.train == train) return plan_;
  const int64_t need = layout(plan_, nullptr, B, T, train);
  if (need > work_.bytes) work_.reset(need, false);
  layout(plan_, static_cast<char*>(work_.ptr), B, T, train);
  have_plan_ = true;
  return plan_;
}

void Model::layer_forward(int64_t l, const Plan& p, const Slot& s, const float* x_prev, const float* add, float* x_in,
                          int64_t pos0, void* k_dst, void* v_dst, int64_t kv_stride, const void* k_all,
                          const void* v_all, int64_t S) {
  const int64_t B = p.B, T = p.T, N = B * T, d = cfg_.d_model, D = cfg_.head_dim(), H = cfg_.n_heads,
                Hkv = cfg_.n_kv_heads, Hd = H * D, Kd = Hkv * D, F = cfg_.ffn_hidden;
  const DType A = cfg_.dtype;
  const int64_t lb = layer_begin(l);
  const float* P = params();
  { HF_PHASE("add_rmsnorm_forward");
  add_rmsnorm_forward(x_prev, add, x_in, P + lb + lo_.attn_norm, N, d, cfg_.norm_eps, s.h1, A, s.rstd1);
  }
  { HF_PHASE("linear_forward");
  linear_forward(s.h1, W(lb + lo_.wq), N, d, Hd + 2 * Kd, A, p.qkvf, DType::f32);
  }
  { HF_PHASE("rope_qkv_forward");
  rope_qkv_forward(p.qkvf, B, T, H, Hkv, D, pos0, {rope_cos_.data(), rope_sin_.data()}, s.q, k_dst, v_dst, kv_stride,
                   A);
  }
  AttentionShape as;
  as.B = B; as.T = T; as.S = S; as.H = H; as.Hkv = Hkv; as.D = D; as.causal = true; as.dtype = A;
  { HF_PHASE("attention_forward");
  attention_forward(as, s.q, k_all, v_all, s.att, s.lse);
  }
  { HF_PHASE("linear_forward");
  linear_forward(s.att, W(lb + lo_.wo), N, Hd, d, A, p.y, DType::f32);
  }
  { HF_PHASE("add_rmsnorm_forward");
  add_rmsnorm_forward(x_in, p.y, s.xmid, P + lb + lo_.mlp_norm, N, d, cfg_.norm_eps, s.h2, A, s.rstd2);
  }
  { HF_PHASE("linear_forward");
  linear_forward(s.h2, W(lb + lo_.wgate), N, d, 2 * F, A, s.gu, A);
  }
  { HF_PHASE("swiglu_forward");
  swiglu_forward(s.gu, N, F, s.act, A);
  }
  { HF_PHASE("linear_forward");
  linear_forward(s.act, W(lb + lo_.wdown), N, F, d, A, p.y, DType::f32);
  }
}

void Model::layer_backward(int64_t l, const Plan& p, const Slot& s, const float* x_in, float wbeta) {
  const int64_t B = p.B, T = p.T, N = B * T, d = cfg_.d_model, D = cfg_.head_dim(), H = cfg_.n_heads,
                Hkv = cfg_.n_kv_heads, Hd = H * D, Kd = Hkv * D, F = cfg_.ffn_hidden;
  const DType A = cfg_.dtype;
  const int64_t lb = layer_begin(l);
  const float* P = params();
  float* G = grads();
  void* copy = A == DType::bf16 ? p.dxc : nullptr;
  // MLP: p.dxc holds d loss / d (xmid + y_down) in the GEMM dtype.
  { HF_PHASE("linear_backward_weight");
  linear_backward_weight(p.dxc, s.act, N, F, d, A, G + lb + lo_.wdown, wbeta);
  }
  { HF_PHASE("linear_backward_input");
  linear_backward_input(p.dxc, W(lb + lo_.wdown), N, F, d, A, p.dact_att, A);
  }
  { HF_PHASE("swiglu_backward");
  swiglu_backward(p.dact_att, s.gu, N, F, p.dgu_qkv, A);
  }
  { HF_PHASE("linear_backward_weight");
  linear_backward_weight(p.dgu_qkv, s.h2, N, d, 2 * F, A, G + lb + lo_.wgate, wbeta);
  }
  { HF_PHASE("linear_backward_input");
  linear_backward_input(p.dgu_qkv, W(lb + lo_.wgate), N, d, 2 * F, A, p.dh, DType::f32);
  }
  { HF_PHASE("rmsnorm_backward");
  rmsnorm_backward(p.dh, s.xmid, s.rstd2, P + lb + lo_.mlp_norm, N, d, p.dx, G + lb + lo_.mlp_norm, copy, A);
  }
  // Attention.
  { HF_PHASE("linear_backward_weight");
  linear_backward_weight(p.dxc, s.att, N, Hd, d, A, G + lb + lo_.wo, wbeta);
  }
  { HF_PHASE("linear_backward_input");
  linear_backward_input(p.dxc, W(lb + lo_.wo), N, Hd, d, A, p.dact_att, A);
  }
  AttentionShape as;
  as.B = B; as.T = T; as.S = T; as.H = H; as.Hkv = Hkv; as.D = D; as.causal = true; as.dtype = A;
  { HF_PHASE("attention_backward");
  attention_backward(as, p.dact_att, s.q, s.k, s.v, s.att, s.lse, p.dq, p.dk, p.dv);
  }
  { HF_PHASE("rope_qkv_backward");
  rope_qkv_backward(p.dq, p.dk, p.dv, B, T, H, Hkv, D, {rope_cos_.data(), rope_sin_.data()}, p.dgu_qkv, A);
  }
  { HF_PHASE("linear_backward_weight");
  linear_backward_weight(p.dgu_qkv, s.h1, N, d, Hd + 2 * Kd, A, G + lb + lo_.wq, wbeta);
  }
  { HF_PHASE("linear_backward_input");
  linear_backward_input(p.dgu_qkv, W(lb + lo_.wq), N, d, Hd + 2 * Kd, A, p.dh, DType::f32);
  }
  { HF_PHASE("rmsnorm_backward");
  rmsnorm_backward(p.dh, x_in, s.rstd1, P + lb + lo_.attn_norm, N, d, p.dx, G + lb + lo_.attn_norm, copy, A);
  }
}

Model::Plan& Model::run_forward(const int32_t* tokens, int64_t B, int64_t T, bool train) {
  Plan& p = plan(B, T, train);
  const int64_t N = B * T, d = cfg_.d_model, L = cfg_.n_layers, Kd = cfg_.n_kv_heads * cfg_.head_dim();
  { HF_PHASE("embedding_forward");
  embedding_forward(tokens, N, params(), d, p.xres);
  }
  const float* prev = p.xres;
  const float* add = nullptr;
  for (int64_t l = 0; l < L; ++l) {
    const Slot& s = p.slots[size_t(train && !cfg_.recompute ? l : 0)];
    float* x_in = train ? p.xres + l * N * d : p.xres;
    layer_forward(l, p, s, prev, add, x_in, 0, s.k, s.v, T * Kd, s.k, s.v, T);
    prev = s.xmid;
    add = p.y;
  }
  float* xL = train ? p.xres + L * N * d : p.xres;
  { HF_PHASE("add_rmsnorm_forward");
  add_rmsnorm_forward(prev, add, xL, params() + final_norm_offset(), N, d, cfg_.norm_eps, p.hf, cfg_.dtype, p.rstdf);
  }
  return p;
}

static int64_t count_targets(const int32_t* targets, int64_t n, int64_t V) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    HF_CHECK(targets[i] == -100 || (targets[i] >= 0 && targets[i] < V), ValueError,
             "target " << targets[i] << " at flat position " << i << " is outside [0, vocab_size=" << V
                       << ") and is not the ignore index -100");
    count += targets[i] != -100;
  }
  return count;
}

double Model::forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                               const GradHook& hook) {
  Busy busy(*this);
  const int64_t N = B * T, d = cfg_.d_model, V = cfg_.vocab_size, L = cfg_.n_layers;
  // First forward_backward since zero_grad(overwrite_next=true): each GEMM-written gradient region
  // is written once in this call before anything else touches it, so its GEMM may overwrite the
  // zeros (beta = 0). Cleared before anything can throw or write, so every later call accumulates.
  const bool fresh = grads_zero_;
  grads_zero_ = false;
  check_tokens(tokens, N, B, T);
  const int64_t count = count_targets(targets, N, V);
  { HF_PHASE("refresh_weights");
  refresh_weights();
  }
  Plan& p = run_forward(tokens, B, T, true);
  const DType A = cfg_.dtype;
  const int64_t out = cfg_.tie_embeddings ? 0 : lm_head_offset();
  const float scale = count > 0 ? 1.0f / float(count) : 0.0f;
  double sum;
  {
    HF_PHASE("cross_entropy_fused");
    sum = cross_entropy_fused(p.hf, W(out), targets, N, d, V, A, p.ce_chunk, scale, p.dh, grads() + out, p.ce_work, fresh);
  }
  std::memset(p.dx, 0, size_t(N * d) * 4);  // d loss / d (final residual) starts at 0
  const int64_t fn = final_norm_offset();
  { HF_PHASE("rmsnorm_backward");
  rmsnorm_backward(p.dh, p.xres + L * N * d, p.rstdf, params() + fn, N, d, p.dx, grads() + fn,
                   A == DType::bf16 ? p.dxc : nullptr, A);
  }
  if (hook) hook(fn, n_params_);
  const int64_t Kd = cfg_.n_kv_heads * cfg_.head_dim();
  for (int64_t l = L - 1; l >= 0; --l) {
    const Slot& s = p.slots[size_t(cfg_.recompute ? 0 : l)];
    float* x_in = p.xres + l * N * d;
    if (cfg_.recompute) layer_forward(l, p, s, x_in, nullptr, x_in, 0, s.k, s.v, T * Kd, s.k, s.v, T);
    layer_backward(l, p, s, x_in, fresh ? 0.0f : 1.0f);
    if (hook) hook(layer_begin(l), layer_begin(l + 1));
  }
  { HF_PHASE("embedding_backward");
  embedding_backward(tokens, N, p.dx, d, V, grads());
  }
  if (hook) hook(0, embed_size());
  return count > 0 ? sum / double(count) : std::numeric_limits<double>::quiet_NaN();
}

void Model::forward(const int32_t* tokens, int64_t B, int64_t T, float* logits) {
  Busy busy(*this);
  check_tokens(tokens, B * T, B, T);
  { HF_PHASE("refresh_weights");
  refresh_weights();
  }
  Plan& p = run_forward(tokens, B, T, false);
  { HF_PHASE("linear_forward");
  linear_forward(p.hf, W(cfg_.tie_embeddings ? 0 : lm_head_offset()), B * T, cfg_.d_model, cfg_.vocab_size,
                 cfg_.dtype, logits, DType::f32);
  }
}

double Model::loss(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, int64_t* count) {
  Busy busy(*this);
  const int64_t N = B * T;
  check_tokens(tokens, N, B, T);
  *count = count_targets(targets, N, cfg_.vocab_size);
  { HF_PHASE("refresh_weights");
  refresh_weights();
  }
  Plan& p = run_forward(tokens, B, T, false);
  return cross_entropy_fused(p.hf, W(cfg_.tie_embeddings ? 0 : lm_head_offset()), targets, N, cfg_.d_model,
                             cfg_.vocab_size, cfg_.dtype, p.ce_chunk, 1.0f, nullptr, nullptr, p.ce_work);
}

void Model::decode(const int32_t* tokens, int64_t n, int64_t pos0, float* logits) {
  Busy busy(*this);
  HF_CHECK(pos0 >= 0 && pos0 <= kv_len_, ValueError,
           "decode: pos0=" << pos0 << " must be within the cached length " << kv_len_);
  HF_CHECK(pos0 + n <= cfg_.max_seq_len, ValueError,
           "sequence length " << pos0 + n << " exceeds max_seq_len=" << cfg_.max_seq_len);
  check_tokens(tokens, n, 1, n);
  const int64_t d = cfg_.d_model, L = cfg_.n_layers, Kd = cfg_.n_kv_heads * cfg_.head_dim(), S = cfg_.max_seq_len;
  const int64_t es = dsize(cfg_.dtype);
  if (kv_.bytes < 2 * L * S * Kd * es) kv_.reset(2 * L * S * Kd * es, true);
  if (pos0 == 0) refresh_weights();  // a new sequence: weights may have changed since the last one
  Plan& p = plan(1, n, false);
  { HF_PHASE("embedding_forward");
  embedding_forward(tokens, n, params(), d, p.xres);
  }
  const float* prev = p.xres;
  const float* add = nullptr;
  char* kv = static_cast<char*>(kv_.ptr);
  for (int64_t l = 0; l < L; ++l) {
    char* kc = kv + (2 * l) * S * Kd * es;
    char* vc = kv + (2 * l + 1) * S * Kd * es;
    const Slot& s = p.slots[0];
    layer_forward(l, p, s, prev, add, p.xres, pos0, kc + pos0 * Kd * es, vc + pos0 * Kd * es, 0, kc, vc, pos0 + n);
    prev = s.xmid;
    add = p.y;
  }
  const int64_t last = (n - 1) * d;
  { HF_PHASE("add_rmsnorm_forward");
  add_rmsnorm_forward(prev + last, add + last, p.xres + last, params() + final_norm_offset(), 1, d, cfg_.norm_eps,
                      p.hf, cfg_.dtype, p.rstdf);
  }
  { HF_PHASE("linear_forward");
  linear_forward(p.hf, W(cfg_.tie_embeddings ? 0 : lm_head_offset()), 1, d, cfg_.vocab_size, cfg_.dtype, logits,
                 DType::f32);
  }
  kv_len_ = pos0 + n;
}

}  // namespace hf::model
