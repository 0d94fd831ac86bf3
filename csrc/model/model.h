/*
 * model.h: the Llama-style decoder (RMSNorm pre-norm, RoPE, grouped-query attention, SwiGLU,
 * tied or untied output embedding) as one C++ object that owns ONE flat f32 parameter buffer,
 * ONE flat f32 gradient buffer and a planned activation workspace.
 *
 * Flat layout (f32 elements; each block contiguous so the distributed layer can reduce a finished
 * layer's gradients while earlier layers are still in backward):
 *   [ embed (V, d) | layer 0 | ... | layer L-1 | final norm (d) | lm_head (V, d) if untied ]
 *   layer = [ attn_norm (d) | Wq (H*D, d) | Wk (Hkv*D, d) | Wv (Hkv*D, d) | Wo (d, H*D)
 *           | mlp_norm (d) | W_gate (F, d) | W_up (F, d) | W_down (d, F) ]
 * Wq|Wk|Wv and W_gate|W_up are adjacent, so each pair/triple is ONE GEMM over all B*T tokens.
 * Weights are [out, in] as in transformers' state_dict.
 *
 * dtype bf16: the f32 master weights are cast once per call into a bf16 shadow buffer; GEMM
 * inputs and attention run in bf16 with f32 accumulation; the residual stream, norm statistics,
 * softmax and loss stay f32.
 */
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/kernels.h"
#include "model/profile.h"

namespace hf::model {

struct Config {
  int64_t vocab_size = 0, d_model = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, ffn_hidden = 0, max_seq_len = 0;
  float rope_theta = 10000.0f, norm_eps = 1e-5f;
  bool tie_embeddings = true;
  DType dtype = DType::f32;
  bool recompute = false;
  int64_t head_dim() const { return d_model / n_heads; }
};

// Offsets (in f32 elements) of one layer's tensors, relative to the layer's start.
struct LayerOffsets {
  int64_t attn_norm, wq, wk, wv, wo, mlp_norm, wgate, wup, wdown, size;
};

struct AlignedBuf {
  void* ptr = nullptr;
  int64_t bytes = 0;
  void reset(int64_t nbytes, bool zero);
  ~AlignedBuf();
};

class Model {
 public:
  explicit Model(const Config& cfg);
  const Config& config() const { return cfg_; }
  int64_t num_params() const { return n_params_; }
  float* params() { return static_cast<float*>(params_.ptr); }
  float* grads() { return static_cast<float*>(grads_.ptr); }
  const LayerOffsets& layer_offsets() const { return lo_; }
  int64_t layer_begin(int64_t l) const { return embed_size() + l * lo_.size; }
  int64_t embed_size() const { return cfg_.vocab_size * cfg_.d_model; }
  int64_t final_norm_offset() const { return layer_begin(cfg_.n_layers); }
  int64_t lm_head_offset() const { return cfg_.tie_embeddings ? 0 : final_norm_offset() + cfg_.d_model; }

  using GradHook = std::function<void(int64_t, int64_t)>;
  // tokens, targets: (B, T) int32. Returns the mean CE over targets != -100 (NaN if none);
  // gradients accumulate into grads(). hook(begin, end) is called as ranges become final.
  double forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, const GradHook& hook);
  // logits (B, T, V) f32.
  void forward(const int32_t* tokens, int64_t B, int64_t T, float* logits);
  // Sum of CE over valid targets and their count (no gradients).
  double loss(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, int64_t* count);
  // KV-cache step: appends tokens (n) at positions pos0.. and writes the last position's logits (V).
  void decode(const int32_t* tokens, int64_t n, int64_t pos0, float* logits);
  // Zeroes the gradient buffer. With overwrite_next, the next forward_backward may also write (not
  // add) the GEMM weight gradients: the caller promises not to put values into the buffer before it.
  void zero_grad(bool overwrite_next = false);
  // Bytes held: params, grads, bf16 shadow, activation workspace, KV cache, RoPE tables.
  int64_t state_bytes() const;
  int64_t workspace_bytes() const { return work_.bytes; }

 private:
  struct Slot {  // the activations one layer keeps for its backward
    void *h1, *q, *k, *v, *att, *h2, *gu, *act;
    float *rstd1, *lse, *xmid, *rstd2;
  };
  struct Plan {
    int64_t B = 0, T = 0;
    bool train = false;
    std::vector<Slot> slots;
    float* xres = nullptr;  // (L+1, N, d) residual stream (train) or (1, N, d)
    void* hf = nullptr;     // final norm output (N, d) A
    float* rstdf = nullptr;
    float *qkvf = nullptr, *y = nullptr;  // GEMM outputs (f32)
    float *dx = nullptr, *dh = nullptr;
    void *dxc = nullptr, *dgu_qkv = nullptr, *dact_att = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
    void* ce_work = nullptr;
    int64_t ce_chunk = 0;
  };

  void check_tokens(const int32_t* tokens, int64_t n, int64_t B, int64_t T) const;
  int64_t layout(Plan& p, char* base, int64_t B, int64_t T, bool train) const;
  Plan& plan(int64_t B, int64_t T, bool train);
  void refresh_weights();  // bf16 shadow copy of the master weights
  const void* W(int64_t offset) const;  // weight pointer in the compute dtype
  // One decoder layer forward. x_prev (+ add, if non-null) is the residual input; it is written to
  // x_in (the stored layer input). k/v go to k_dst/v_dst (row stride Hkv*D, batch stride kv_stride)
  // and attention reads S keys from k_all/v_all.
  void layer_forward(int64_t l, const Plan& p, const Slot& s, const float* x_prev, const float* add, float* x_in,
                     int64_t pos0, void* k_dst, void* v_dst, int64_t kv_stride, const void* k_all, const void* v_all,
                     int64_t S);
  // wbeta: 0 when this layer's weight-gradient regions hold zeros (see grads_zero_), else 1.
  void layer_backward(int64_t l, const Plan& p, const Slot& s, const float* x_in, float wbeta);
  // Runs all layers and the final norm over tokens; returns the plan used.
  Plan& run_forward(const int32_t* tokens, int64_t B, int64_t T, bool train);

  // Calls take turns (forward_backward, forward, loss, decode, zero_grad): they share the workspace,
  // the plan, the gradients and the KV cache, so two threads running forward at once used to
  // overwrite each other's activations. A call from the thread that is already inside one (say a
  // grad-ready hook calling forward or zero_grad) is refused instead of deadlocking.
  class Busy {
   public:
    explicit Busy(Model& m);
    ~Busy();
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

   private:
    Model& m_;
    std::unique_lock<std::mutex> lock_;
  };
  std::mutex busy_mutex_;
  std::atomic<std::thread::id> busy_thread_{};

  Config cfg_;
  LayerOffsets lo_{};
  int64_t n_params_ = 0;
  AlignedBuf params_, grads_, wbf_, work_, kv_;
  std::vector<float> rope_cos_, rope_sin_;
  Plan plan_;
  bool have_plan_ = false;
  int64_t kv_len_ = 0;  // valid positions in the KV cache
  // Set by zero_grad(overwrite_next=true) until the next forward_backward starts: the whole gradient
  // buffer is then zero and nobody writes it in between, so that call's first writer of each
  // weight-gradient GEMM region (every layer's projections, the LM head / tied embedding) uses
  // beta = 0 and skips reading the f32 gradient. Cleared on entry to forward_backward, so
  // micro-batches after the first (gradient accumulation) and any call after a throw always add.
  // Off by default: a plain zero_grad() keeps whatever a caller then writes into the buffer.
  bool grads_zero_ = false;
};

}  // namespace hf::model
