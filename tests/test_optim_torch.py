"""homeforge.torch.AdamW / Lion / SGD as drop-ins for torch.optim on CPU tensors."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (the reference optimizers) is not installed")
import homeforge.torch as ht  # noqa: E402


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(12, 33), torch.nn.LayerNorm(33), torch.nn.GELU(), torch.nn.Linear(33, 5))
    m.unused = torch.nn.Parameter(torch.randn(7))  # never gets a grad: .grad stays None
    return m


def _groups(m: torch.nn.Module) -> list[dict]:
    decay = [p for n, p in m.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in m.named_parameters() if p.ndim < 2]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def _train(m, opt, sched, steps, x, y):
    for _ in range(steps):
        opt.zero_grad()  # set_to_none: a new grad tensor every step
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def _close(a: torch.nn.Module, b: torch.nn.Module, rel: float = 1e-5) -> None:
    """Training loops feed each step's last-ulp differences back through the gradients (and torch's
    GEMMs may change summation order from run to run), so compare at 1e-5 of each tensor's scale;
    the few-ulp comparisons on fixed gradients are in test_optim.py."""
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        p, q = p.detach().numpy(), q.detach().numpy()
        assert np.abs(p - q).max() <= rel * max(float(np.abs(q).max()), 1e-3), n


@pytest.mark.parametrize("ours_cls,ref_cls,kw", [
    (ht.AdamW, torch.optim.AdamW, dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
    (ht.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (ht.SGD, torch.optim.SGD, dict(lr=0.05)),
])
def test_drop_in_with_groups_scheduler_and_none_grads(ours_cls, ref_cls, kw):
    x, y = torch.randn(64, 12), torch.randn(64, 5)
    a, b = _model(), _model()
    oa, ob = ours_cls(_groups(a), **kw), ref_cls(_groups(b), **kw)
    sa = torch.optim.lr_scheduler.CosineAnnealingLR(oa, T_max=20)
    sb = torch.optim.lr_scheduler.CosineAnnealingLR(ob, T_max=20)
    _train(a, oa, sa, 25, x, y)
    _train(b, ob, sb, 25, x, y)
    _close(a, b)
    assert a.unused.grad is None and a.unused not in oa.state and b.unused not in ob.state
    assert [g["lr"] for g in oa.param_groups] == pytest.approx([g["lr"] for g in ob.param_groups])
    # the per-parameter state has torch's keys and values
    pa, pb = next(a.parameters()), next(b.parameters())
    assert set(oa.state[pa]) >= set(ob.state[pb])
    for k, v in ob.state[pb].items():
        assert torch.allclose(oa.state[pa][k].float(), v.float(), rtol=1e-5, atol=1e-7), k


def test_state_dict_interoperates_with_torch_and_continues_exactly():
    x, y = torch.randn(32, 12), torch.randn(32, 5)
    a = _model()
    oa = ht.AdamW(a.parameters(), lr=1e-2)
    _train(a, oa, None, 5, x, y)
    sd = copy.deepcopy(oa.state_dict())
    b = copy.deepcopy(a)
    # ours -> ours: exact continuation
    ob = ht.AdamW(b.parameters(), lr=1e-2)
    ob.load_state_dict(sd)
    _train(a, oa, None, 5, x, y)
    _train(b, ob, None, 5, x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    # ours -> torch and torch -> ours: the same trajectory to within a few ulps
    c, d = copy.deepcopy(b), copy.deepcopy(b)
    oc = torch.optim.AdamW(c.parameters(), lr=1e-2)
    oc.load_state_dict(ob.state_dict())
    od = ht.AdamW(d.parameters(), lr=1e-2)
    od.load_state_dict(oc.state_dict())
    _train(c, oc, None, 5, x, y)
    _train(d, od, None, 5, x, y)
    _close(d, c)


def test_lion_and_bf16_params_run_zero_copy():
    p = torch.nn.Parameter(torch.randn(100))
    data_ptr = p.data_ptr()
    opt = ht.Lion([p], lr=0.1)
    p.grad = torch.ones(100)
    before = p.detach().clone()
    opt.step()
    assert p.data_ptr() == data_ptr
    assert torch.allclose(p.detach(), before - 0.1)
    w = torch.nn.Parameter(torch.randn(50).to(torch.bfloat16))
    opt = ht.AdamW([w], lr=1e-2, weight_decay=0.0)
    w.grad = torch.ones(50, dtype=torch.bfloat16)
    w0 = w.detach().float().clone()
    opt.step()
    master = opt.state[w]["master_param"]
    assert torch.allclose(master, w0 - 1e-2, atol=1e-6)
    assert torch.equal(w.detach(), master.to(torch.bfloat16))


def test_clipping_and_step_result():
    x, y = torch.randn(32, 12), torch.randn(32, 5)
    a, b = _model(), _model()
    oa, ob = ht.AdamW(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2)
    for _ in range(5):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        oa.step(max_grad_norm=0.1)
        total = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.1)
        ob.step()
        assert oa.last_result.grad_norm == pytest.approx(float(total), rel=1e-6)
    _close(a, b)


def test_bad_input():
    with pytest.raises(ValueError, match="amsgrad"):
        ht.AdamW([torch.nn.Parameter(torch.zeros(3))], amsgrad=True)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        ht.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=-1.0)
    p = torch.nn.Parameter(torch.zeros(4, 3).t())
    opt = ht.SGD([p], lr=0.1)
    p.grad = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="not contiguous"):
        opt.step()
    q = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = ht.SGD([q], lr=0.1)
    q.grad = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        opt.step()


def test_import_homeforge_does_not_import_torch():
    code = "import sys, homeforge, homeforge.optim; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_replaced_param_data_is_followed():
    p = torch.nn.Parameter(torch.ones(5))
    opt = ht.SGD([p], lr=0.5, momentum=0.9)
    p.grad = torch.ones(5)
    opt.step()
    p.data = torch.full((5,), 10.0)  # a new storage under the same Parameter
    p.grad = torch.ones(5)
    opt.step()  # buf = 0.9 * 1 + 1 = 1.9
    assert torch.allclose(p.detach(), torch.full((5,), 10.0 - 0.5 * 1.9))


def _two_steps(cls, kw, between):
    """One step, then `between(w)` (which moves memory under the optimizer), then a second step."""
    w = torch.nn.Parameter(torch.ones(4))
    opt = cls([w], **kw)
    w.grad = torch.ones(4)
    opt.step()
    between(w)
    opt.step()
    return w.detach().clone(), opt


def _set_grad_data(w):
    w.grad.data = torch.full((4,), 10.0)  # same grad object, new storage


@pytest.mark.parametrize("between", [
    lambda w: w.share_memory_(),                    # same tensor object, storage moved (old one freed)
    lambda w: setattr(w, "data", w.data.clone()),   # p.data replaced, grad object kept
    _set_grad_data,
    lambda w: w.grad.share_memory_(),
], ids=["share_memory", "data_clone", "grad_data", "grad_share_memory"])
@pytest.mark.parametrize("cls,ref,kw", [
    (ht.SGD, torch.optim.SGD, dict(lr=0.1)),
    (ht.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (ht.AdamW, torch.optim.AdamW, dict(lr=0.1)),
])
def test_memory_moved_under_a_kept_grad_is_followed(between, cls, ref, kw):
    ours, _ = _two_steps(cls, kw, between)
    theirs, _ = _two_steps(ref, kw, between)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_replaced_state_tensor_is_used():
    def run(cls):
        w = torch.nn.Parameter(torch.ones(3))
        opt = cls([w], lr=0.1, momentum=0.9)
        w.grad = torch.ones(3)
        opt.step()
        opt.state[w]["momentum_buffer"] = torch.full((3,), 5.0)  # torch steps with the new tensor
        opt.step()
        return w.detach().clone(), opt.state[w]["momentum_buffer"].clone()

    for a, b in zip(run(ht.SGD), run(torch.optim.SGD)):
        torch.testing.assert_close(a, b)


def test_state_dict_saves_as_plain_dicts(tmp_path):
    w = torch.nn.Parameter(torch.ones(3))
    opt = ht.AdamW([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    sd = torch.load(tmp_path / "opt.pt", weights_only=True)  # only plain containers unpickle here
    assert type(sd["state"][0]) is dict and set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert type(copy.deepcopy(opt.state_dict())["state"][0]) is dict


@pytest.mark.parametrize("edit", [
    lambda w, m: w.fill_(5.0),
    lambda w, m: setattr(w, "data", torch.full((3,), 5.0, dtype=torch.bfloat16)),
    lambda w, m: m.load_state_dict({"w": torch.full((3,), 5.0, dtype=torch.bfloat16)}),
], ids=["fill_", "data", "module_load_state_dict"])
@pytest.mark.parametrize("sr", [False, True])
def test_bf16_param_edited_after_a_step_is_kept(edit, sr):
    """torch.optim.AdamW steps the edited bf16 param; the fp32 master must not undo the edit."""
    def run(make):
        m = torch.nn.Module()
        m.w = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
        opt = make([m.w])
        m.w.grad = torch.ones(3, dtype=torch.bfloat16)
        opt.step()
        with torch.no_grad():
            edit(m.w, m)
        m.w.grad = torch.ones(3, dtype=torch.bfloat16)
        opt.step()
        return m.w.detach().float()

    ours = run(lambda p: ht.AdamW(p, lr=0.01, weight_decay=0.0, stochastic_rounding=sr))
    theirs = run(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.0))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0.04)  # one bf16 ulp at 5 is 0.03125
    assert ours.max() > 4.9


def test_sgd_momentum_switched_on_later_matches_torch():
    def run(cls):
        w = torch.nn.Parameter(torch.ones(3))
        opt = cls([w], lr=0.1, momentum=0.0, dampening=0.5)
        w.grad = torch.ones(3)
        opt.step()
        has_state = bool(opt.state.get(w))
        opt.param_groups[0]["momentum"] = 0.9
        for _ in range(2):
            opt.step()
        return w.detach().clone(), opt.state[w]["momentum_buffer"].clone(), has_state, opt.state_dict()

    (wa, ba, sa, sda), (wb, bb, sb, sdb) = run(ht.SGD), run(torch.optim.SGD)
    torch.testing.assert_close(wa, wb)
    torch.testing.assert_close(ba, bb)
    assert sa == sb is False
    torch.testing.assert_close(sda["state"][0]["momentum_buffer"], sdb["state"][0]["momentum_buffer"])


def test_tensor_hyperparameters_as_torch_accepts_them():
    def run(cls, **kw):
        w = torch.nn.Parameter(torch.ones(3))
        opt = cls([w], **kw)
        for _ in range(3):
            w.grad = torch.full((3,), 0.5)
            opt.step()
        return w.detach().clone()

    kw = dict(lr=torch.tensor(0.1), betas=(torch.tensor(0.8), torch.tensor(0.9)), weight_decay=0.0)
    torch.testing.assert_close(run(ht.AdamW, **kw), run(torch.optim.AdamW, **kw))
    kw = dict(lr=torch.tensor([0.1]), momentum=torch.tensor(0.9))
    torch.testing.assert_close(run(ht.SGD, **kw), run(torch.optim.SGD, **kw))
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ht.AdamW([torch.nn.Parameter(torch.ones(3))], lr=torch.tensor([0.1, 0.2]))
