"""Helpers shared by tests/test_distributed*.py and the mpirun worker tests/_dist_worker.py."""

from __future__ import annotations

import pickle

import numpy as np

import homeforge

VOCAB = 64


def build_model(spec: dict, perturb_rank: bool = False):
    """The test model: a small homeforge.Model, seed from the spec.

    With perturb_rank, ranks other than 0 start from a different seed: the strategy's broadcast of
    rank 0's parameters must make them equal.
    """
    import os

    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0")) if perturb_rank else 0
    # the "1m" preset's architecture, made narrower and shallower so a test step takes milliseconds
    over = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_hidden": 128, "max_seq_len": 64}
    cfg = homeforge.ModelConfig.preset("1m", VOCAB, **{**over, **spec.get("model_overrides", {})})
    model = homeforge.Model(cfg, seed=spec.get("seed", 0) + 1000 * rank)
    if spec.get("nan_rank") is not None and rank == spec["nan_rank"]:
        model = _NaNOnStep(model, spec.get("nan_step", 1))
    return model


class _NaNOnStep:
    """Delegates to a model; poisons its gradient (and loss) on one step, as an overflow would."""

    def __init__(self, inner, step: int) -> None:
        self._inner, self._step, self._calls = inner, step, 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def zero_grad(self, **kw):
        self._calls += 1
        return self._inner.zero_grad(**kw)

    def forward_backward(self, x, y):
        loss = self._inner.forward_backward(x, y)
        if self._calls - 1 == self._step:
            self._inner.flat_grads()[3] = np.inf
            return float("nan")
        return loss


def global_batch(spec: dict, step: int) -> np.ndarray:
    """(G, T+1) tokens for this step, the same in every process."""
    g = np.random.default_rng(10_000 + step)
    return g.integers(0, VOCAB, size=(spec["global_seqs"], spec["seq"] + 1), dtype=np.int32)


def batches_for(spec: dict, step: int, rank: int, world: int) -> list:
    """This rank's micro-batches: rank r takes its contiguous slice of the global batch."""
    data = global_batch(spec, step)
    G = data.shape[0]
    if G % world:
        raise ValueError(f"global batch {G} not divisible by world {world}")
    mine = data[rank * G // world:(rank + 1) * G // world]
    M = spec.get("micro", 1)
    if len(mine) % M:
        raise ValueError("per-rank batch not divisible by micro-batches")
    parts = np.split(mine, M)
    return [(np.ascontiguousarray(p[:, :-1]), np.ascontiguousarray(p[:, 1:])) for p in parts]


def save_state(path: str, model, sd: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump({"params": model.flat_params().copy(), "strategy": sd}, f)


def load_state(path: str, model, strat) -> None:
    with open(path, "rb") as f:
        blob = pickle.load(f)
    model.flat_params()[:] = blob["params"]
    strat.load_state_dict(blob["strategy"])
