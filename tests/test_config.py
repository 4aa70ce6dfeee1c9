"""TrainConfig: its fields are the ``vaelab train`` flags, and its errors name settings."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest

from vaelab.cli import Parser, flag
from vaelab.cli.train import add_train_arguments
from vaelab.config import TrainConfig
from vaelab.errors import SettingError


def train_parser() -> Parser:
    p = Parser(prog="vaelab train")
    add_train_arguments(p)
    return p


def test_a_bad_setting_is_named_as_the_library_spells_it():
    with pytest.raises(SettingError) as info:
        TrainConfig(lr=math.nan)
    assert str(info.value) == "lr must be a positive finite number, got nan"
    assert info.value.setting == "lr"
    assert info.value.spelled(flag) == "--lr must be a positive finite number, got nan"
    with pytest.raises(SettingError) as info:
        TrainConfig(likelihood="gaussian", recon="mse")
    assert info.value.settings == ("recon", "likelihood")
    assert info.value.spelled(flag).startswith("--recon mse is the lecture's shorthand")


def test_a_value_with_braces_is_shown_as_it_is():
    with pytest.raises(SettingError, match=r"unknown model '\{x\}'"):
        TrainConfig(model="{x}")


def test_every_field_is_a_flag_whose_default_is_suppressed():
    actions = {a.dest: a for a in train_parser()._actions}
    for field in dataclasses.fields(TrainConfig):
        action = actions[field.name]
        assert action.option_strings == [flag(field.name)]
        assert action.default is argparse.SUPPRESS
        assert action.help and "{" not in action.help, field.name
    assert set(actions) - {f.name for f in dataclasses.fields(TrainConfig)} == {
        "help",
        "nproc",
        "out",
        "resume",
        "from_epoch",
        "quiet",
        "report",
        "threads",
        "recalibrate",
    }


def test_flags_parse_into_the_config():
    argv = (
        "--dataset fashion-mnist --limit 10 --binarize dynamic --latent-dim 3 --beta 0.5 "
        "--likelihood gaussian --gaussian-sigma learned --kl-warmup 1.5 --lr 0.01 --epochs 4 "
        "--device cpu --precision bf16 --compile --grad-clip 2 --embed-epochs 4,0 --keep-every 2"
    ).split()
    given = vars(train_parser().parse_args(argv))
    assert given.pop("quiet") is False  # the one flag of the run that is always there
    assert given["gaussian_sigma"] == "learned" and given["embed_epochs"] == [4, 0]
    assert given["compile"] is True and "seed" not in given and "tensorboard" not in given
    c = TrainConfig(**given)
    assert (c.limit, c.latent_dim, c.hidden, c.beta, c.kl_warmup, c.lr) == (
        10,
        3,
        9,
        0.5,
        1.5,
        0.01,
    )
    assert (c.binarize, c.device, c.precision, c.grad_clip) == ("dynamic", "cpu", "bf16", 2.0)
    assert c.embed_epochs == [0, 4]
    assert vars(train_parser().parse_args(["--gaussian-sigma", "0.5"]))["gaussian_sigma"] == 0.5
