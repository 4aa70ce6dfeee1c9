"""vaelab.training.schedules and the optimiser settings of issue 16: --lr-schedule,
--lr-warmup, --adam-eps, and warm-ups given as a share of the run."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import assert_one_line_error, call_cli
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.objectives import kl_weight
from vaelab.run import RunPaths
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.loop import train
from vaelab.training.optim import FusedAdam, make_optimizer
from vaelab.training.schedules import (
    BURDA_EPOCHS,
    burda_factor,
    burda_stage,
    cosine_factor,
    lr_factor,
    step_lr_factors,
)

QUIET = {"progress": False, "log": lambda _m: None}


def test_burda_schedule_is_the_papers_stairs_at_3280_epochs():
    stages = [burda_stage((e - 1) / BURDA_EPOCHS) for e in range(1, BURDA_EPOCHS + 1)]
    lengths = [stages.count(i) for i in range(8)]
    assert lengths == [3**i for i in range(8)] and BURDA_EPOCHS == 3280
    assert stages == sorted(stages)  # one stair after another, no going back
    # per step too: every step of an epoch shares its epoch's rate
    factors = step_lr_factors(TrainConfig(lr_schedule="burda", epochs=3280), 1093, 7)
    assert factors == [pytest.approx(10 ** (-6 / 7))] * 7
    assert step_lr_factors(TrainConfig(lr_schedule="burda", epochs=3280), 1094, 7)[0] == (
        pytest.approx(0.1)
    )
    values = sorted({burda_factor((e - 1) / BURDA_EPOCHS) for e in range(1, 3281)}, reverse=True)
    assert values == pytest.approx([10 ** (-i / 7) for i in range(8)])


def test_burda_schedule_is_compressed_proportionally_onto_a_short_run():
    config = TrainConfig(lr_schedule="burda", epochs=10)
    steps = 328  # per epoch: 3280 steps in all, one per paper epoch
    factors = [f for e in range(1, 11) for f in step_lr_factors(config, e, steps)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(0.1)
    lengths = [sum(1 for f in factors if f == pytest.approx(10 ** (-i / 7))) for i in range(8)]
    assert lengths == [3**i for i in range(8)]


def test_cosine_ends_at_zero_and_decreases():
    assert cosine_factor(0.0) == 1.0 and cosine_factor(1.0) == 0.0
    assert cosine_factor(0.25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    config = TrainConfig(lr_schedule="cosine", epochs=4)
    factors = [f for e in range(1, 5) for f in step_lr_factors(config, e, 10)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(cosine_factor(39 / 40))
    assert all(a > b for a, b in zip(factors, factors[1:]))


def test_warmup_ramps_linearly_then_the_schedule_runs_over_the_rest():
    for warmup in (1.0, "25%"):  # one epoch of four, or 25% of the run: the same
        config = TrainConfig(lr_schedule="cosine", lr_warmup=warmup, epochs=4)
        first = step_lr_factors(config, 1, 8)
        assert first == pytest.approx([s / 8 for s in range(8)])
        assert step_lr_factors(config, 2, 8)[0] == 1.0  # the decay starts after it
        assert step_lr_factors(config, 4, 8)[4] == pytest.approx(
            cosine_factor(2.5 / 3)
        )  # u = (t - w) / (1 - w)
    ramp = [lr_factor("constant", t / 10, 0.5) for t in range(10)]
    assert ramp == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1])


def test_constant_without_warmup_leaves_the_learning_rate_alone():
    assert step_lr_factors(TrainConfig(), 1, 10) is None
    assert step_lr_factors(TrainConfig(lr_warmup="0%"), 1, 10) is None


def test_a_cosine_run_ends_with_the_scheduled_rate_in_the_optimiser(tiny, tmp_path):
    config = TrainConfig(
        dataset="tiny", latent_dim=2, hidden=16, batch_size=64, epochs=2,
        lr=1e-2, lr_schedule="cosine", lr_warmup=0.5,
    )  # fmt: skip
    root = train(config, out=tmp_path / "r", data=tiny, **QUIET)
    group = load_checkpoint(RunPaths(root).last)["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-2 * lr_factor("cosine", (1 + 3 / 4) / 2, 0.25))


def test_kl_warmup_as_a_share_of_the_run():
    config = TrainConfig(beta=2.0, kl_warmup="50%", epochs=4)
    assert [kl_weight(config, e) for e in (1, 2, 3, 4)] == [0.0, 1.0, 2.0, 2.0]
    assert kl_weight(config, 1, progress=0.1) == pytest.approx(0.4)  # --time-budget's share
    assert kl_weight(TrainConfig(beta=2.0, kl_warmup="0%"), 1) == 2.0


def test_adam_eps_reaches_the_optimiser_and_stays_bit_identical_to_torch():
    torch.manual_seed(0)
    from vaelab.models import build_model

    model = build_model("vae", input_shape=(1, 4, 4), latent_dim=3, hidden=8)
    twin = copy.deepcopy(model)
    ours = make_optimizer(model, 1e-2, eps=1e-4)
    theirs = torch.optim.Adam(twin.parameters(), lr=1e-2, eps=1e-4, fused=True)
    assert isinstance(ours, FusedAdam) and ours.param_groups[0]["eps"] == 1e-4
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for p, q in zip(model.parameters(), twin.parameters()):
            p.grad = torch.randn(p.shape, generator=g) * 1e-4  # where eps matters
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--adam-eps", "0"], "--adam-eps must be a positive"),
        (["--adam-eps=-1e-8"], "--adam-eps must be a positive"),
        (["--lr-schedule", "step"], "invalid choice"),
        (["--lr-warmup", "abc"], "expected a number of epochs or a share"),
        (["--lr-warmup", "150%"], "--lr-warmup must be epochs >= 0 or a share"),
        (["--kl-warmup=-1"], "--kl-warmup must be a number of epochs >= 0"),
    ],
)
def test_bad_recipe_flags_are_one_line_exit_2(capsys, tmp_path, flags, match):
    code, _, err = call_cli(capsys, "train", "--limit", "256", "--out", tmp_path / "r", *flags)
    assert_one_line_error(code, err, 2, match)
    assert not (tmp_path / "r").exists()


def test_unknown_schedule_in_the_library_is_a_setting_error():
    with pytest.raises(VaelabError, match="unknown lr_schedule 'step'"):
        TrainConfig(lr_schedule="step")
