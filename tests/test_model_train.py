"""50 AdamW steps of homeforge.Model against the same training of transformers' LlamaForCausalLM
in PyTorch (same initial weights, same batches, same AdamW hyper-parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from homeforge import Model, ModelConfig

torch = pytest.importorskip("torch", reason="torch trains the reference")
transformers = pytest.importorskip("transformers", reason="transformers' LlamaForCausalLM is the reference")


pytestmark = pytest.mark.usefixtures("torch_single_thread")

LR, BETAS, EPS, WD = 3e-3, (0.9, 0.95), 1e-8, 0.1


class NumpyAdamW:
    """torch.optim.AdamW's update in float64 (the model's float32 buffer is updated in place)."""

    def __init__(self, params: np.ndarray, grads: np.ndarray):
        self.p, self.g = params, grads
        self.master = params.astype(np.float64)
        self.m = np.zeros_like(self.master)
        self.v = np.zeros_like(self.master)
        self.t = 0

    def step(self) -> None:
        self.t += 1
        g = self.g.astype(np.float64)
        b1, b2 = BETAS
        self.master *= 1 - LR * WD
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        mhat = self.m / (1 - b1 ** self.t)
        vhat = self.v / (1 - b2 ** self.t)
        self.master -= LR * mhat / (np.sqrt(vhat) + EPS)
        self.p[:] = self.master


def optimizer(model: Model):
    try:
        from homeforge.optim import AdamW  # the native optimizer, once it is on this branch
    except ImportError:
        return NumpyAdamW(model.flat_params(), model.flat_grads())
    return AdamW([model.flat_params()], [model.flat_grads()], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_50_adamw_steps_match_pytorch(tie):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=32,
                      tie_embeddings=tie)
    model = Model(cfg, seed=0)
    hc = {k: v for k, v in model.hf_config().items()
          if k not in ("homeforge", "architectures", "torch_dtype", "model_type")}
    hcfg = transformers.LlamaConfig(**hc)
    hcfg._attn_implementation = "sdpa"
    ref = transformers.LlamaForCausalLM(hcfg).float()
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.named_parameters().items()}, strict=False)
    topt = torch.optim.AdamW(ref.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    opt = optimizer(model)
    # Learnable data: noisy copies of a few fixed patterns.
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 64, (4, 17))
    ours, theirs = [], []
    for step in range(50):
        batch = patterns[rng.integers(0, 4, 4)].copy()
        noise = rng.random(batch.shape) < 0.1
        batch[noise] = rng.integers(0, 64, noise.sum())
        x, y = batch[:, :-1], batch[:, 1:].copy()
        y[:, :2] = -100
        model.zero_grad()
        ours.append(model.forward_backward(x, y))
        opt.step()
        topt.zero_grad()
        logits = ref(input_ids=torch.from_numpy(x)).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), torch.from_numpy(y).reshape(-1),
                                                 ignore_index=-100)
        loss.backward()
        topt.step()
        theirs.append(loss.item())
    ours_a, theirs_a = np.array(ours), np.array(theirs)
    assert theirs_a[-1] < 0.6 * theirs_a[0], "the reference did not learn: the test data is too hard"
    np.testing.assert_allclose(ours_a, theirs_a, rtol=2e-3, atol=0)
    np.testing.assert_allclose(model.named_parameters()["model.layers.1.mlp.up_proj.weight"],
                               ref.model.layers[1].mlp.up_proj.weight.detach().numpy(), atol=2e-4, rtol=0)
