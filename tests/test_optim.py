"""vaelab.optim: the trainer's Adam."""

from __future__ import annotations

import copy

import pytest
import torch

from vaelab.models import build_model
from vaelab.optim import FusedAdam, make_optimizer


def _model():
    torch.manual_seed(0)
    return build_model("vae", input_shape=(1, 4, 4), latent_dim=3, hidden=8)


def _step_both(opt_a, model_a, opt_b, model_b, steps: int, seed: int = 0) -> None:
    for step in range(steps):
        g = torch.Generator().manual_seed(seed + step)
        for p, q in zip(model_a.parameters(), model_b.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt_a.step()
        opt_b.step()


def test_fused_adam_steps_as_the_default_adam_and_shares_its_state():
    model = _model()
    reference = copy.deepcopy(model)
    fused = make_optimizer(model, 1e-2)
    plain = torch.optim.Adam(reference.parameters(), lr=1e-2)
    assert isinstance(fused, FusedAdam) and fused.defaults["fused"]
    _step_both(fused, model, plain, reference, 5)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    plain.load_state_dict(fused.state_dict())  # a checkpoint moves between them
    assert plain.state_dict()["state"].keys() == fused.state_dict()["state"].keys()


def test_direct_kernel_call_is_bit_identical_to_torch_fused_adam(monkeypatch):
    model = _model()
    reference = copy.deepcopy(model)
    ours = make_optimizer(model, 1e-2)
    torch_fused = torch.optim.Adam(reference.parameters(), lr=1e-2, fused=True)
    _step_both(ours, model, torch_fused, reference, 1)  # creates the state (torch's path)
    calls = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a: calls.append(self) or original(self, *a)
    )
    _step_both(ours, model, torch_fused, reference, 6, seed=1)
    assert calls == [torch_fused] * 6  # ours never went through torch's generic step
    for group in (ours.param_groups[0], torch_fused.param_groups[0]):
        group["lr"] = 3e-3  # a changed learning rate is read at every step
    _step_both(ours, model, torch_fused, reference, 3, seed=7)
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)
    for sa, sb in zip(ours.state.values(), torch_fused.state.values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


@pytest.mark.parametrize("case", ["hook", "missing grad", "two groups"])
def test_what_the_shortcut_does_not_cover_goes_through_torch(case):
    model = _model()
    params = list(model.parameters())
    if case == "two groups":
        opt = FusedAdam([{"params": params[:2]}, {"params": params[2:], "lr": 1e-3}], lr=1e-2)
    else:
        opt = FusedAdam(params, lr=1e-2)
    seen = []
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()  # the first step creates the state through torch
    if case == "hook":
        opt.register_step_post_hook(lambda *_: seen.append(1))
    if case == "missing grad":
        params[0].grad = None
    before = params[0].detach().clone()
    opt.step()
    assert opt._direct() is None
    if case == "hook":
        assert seen == [1]
    if case == "missing grad":
        assert torch.equal(params[0], before)  # torch skips a parameter without a gradient
