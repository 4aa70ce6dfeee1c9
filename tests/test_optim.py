"""vaelab.training.optim: the trainer's Adam."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from vaelab.models import build_model
from vaelab.training.optim import FusedAdam, make_optimizer


def _model(hidden: int = 8):
    torch.manual_seed(0)
    return build_model("vae", input_shape=(1, 4, 4), latent_dim=3, hidden=hidden)


def _step_both(opt_a, model_a, opt_b, model_b, steps: int, seed: int = 0) -> None:
    for step in range(steps):
        g = torch.Generator().manual_seed(seed + step)
        for p, q in zip(model_a.parameters(), model_b.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt_a.step()
        opt_b.step()


def test_steps_are_bit_identical_to_torch_fused_adam_and_close_to_the_default():
    model = _model()
    fused_twin, plain_twin = copy.deepcopy(model), copy.deepcopy(model)
    ours = make_optimizer(model, 1e-2)
    assert isinstance(ours, FusedAdam)
    torch_fused = torch.optim.Adam(fused_twin.parameters(), lr=1e-2, fused=True)
    _step_both(ours, model, torch_fused, fused_twin, 4)
    ours.param_groups[0]["lr"] = torch_fused.param_groups[0]["lr"] = 3e-3  # read every step
    _step_both(ours, model, torch_fused, fused_twin, 3, seed=9)
    for a, b in zip(model.parameters(), fused_twin.parameters()):
        assert torch.equal(a, b)
    plain = torch.optim.Adam(plain_twin.parameters(), lr=1e-2)
    model2 = _model()
    _step_both(make_optimizer(model2, 1e-2), model2, plain, plain_twin, 5)
    for a, b in zip(model2.parameters(), plain_twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_checkpoints_move_between_it_and_torch_adam():
    model = _model()
    twin = copy.deepcopy(model)
    ours = make_optimizer(model, 1e-2)
    theirs = torch.optim.Adam(twin.parameters(), lr=1e-2, fused=True)
    _step_both(ours, model, theirs, twin, 3)
    saved_ours, saved_theirs = ours.state_dict(), theirs.state_dict()
    assert saved_ours["param_groups"] == saved_theirs["param_groups"]
    assert saved_ours["state"].keys() == saved_theirs["state"].keys()
    for i, values in saved_theirs["state"].items():
        assert all(torch.equal(values[k], saved_ours["state"][i][k]) for k in values)
    # torch's state into ours, ours into torch's default Adam: both go on identically.
    resumed = make_optimizer(model, 1.0)
    resumed.load_state_dict(saved_theirs)
    assert resumed.param_groups[0]["lr"] == 1e-2
    plain = torch.optim.Adam(twin.parameters(), lr=1.0)
    plain.load_state_dict(saved_ours)
    _step_both(resumed, model, plain, twin, 2, seed=5)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_state_of_other_parameters_is_refused():
    small, big = _model(hidden=8), _model(hidden=9)
    opt_small = make_optimizer(small, 1e-2)
    for p in small.parameters():
        p.grad = torch.ones_like(p)
    opt_small.step()
    with pytest.raises(ValueError, match="shape"):
        make_optimizer(big, 1e-2).load_state_dict(opt_small.state_dict())
    with pytest.raises(ValueError, match="another set"):
        make_optimizer(torch.nn.Linear(2, 2), 1e-2).load_state_dict(opt_small.state_dict())


def test_parameters_without_gradient_are_left_alone_and_zero_grad_clears():
    model = _model()
    params = list(model.parameters())
    opt = make_optimizer(model, 1e-2)
    for p in params[1:]:
        p.grad = torch.ones_like(p)
    before = params[0].detach().clone()
    opt.step()
    assert torch.equal(params[0], before) and 0 not in opt.state_dict()["state"]
    assert not torch.equal(params[1], torch.zeros_like(params[1]))
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in params)


def test_other_dtypes_get_torch_adam():
    model = torch.nn.Linear(3, 3).to(torch.float64)
    assert isinstance(make_optimizer(model, 1e-3), torch.optim.Adam)


def test_building_and_stepping_it_does_not_import_torch_compiler():
    code = (
        "import sys, torch; from vaelab.models import build_model;"
        "from vaelab.training.optim import make_optimizer;"
        "m = build_model('vae', input_shape=(4,), latent_dim=2, hidden=3);"
        "o = make_optimizer(m, 1e-3); [setattr(p, 'grad', torch.ones_like(p)) for p in m.parameters()];"
        "o.step(); o.load_state_dict(o.state_dict()); o.zero_grad();"
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
