"""vaelab.optim: the trainer's Adam."""

from __future__ import annotations

import copy

import torch

from vaelab.models import build_model
from vaelab.optim import make_optimizer


def test_fused_adam_steps_as_the_default_adam_and_shares_its_state():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 4, 4), latent_dim=3, hidden=8)
    reference = copy.deepcopy(model)
    fused = make_optimizer(model, 1e-2)
    plain = torch.optim.Adam(reference.parameters(), lr=1e-2)
    assert fused.defaults["fused"]
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        for p, q in zip(model.parameters(), reference.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    plain.load_state_dict(fused.state_dict())  # a checkpoint moves between them
    assert plain.state_dict()["state"].keys() == fused.state_dict()["state"].keys()
