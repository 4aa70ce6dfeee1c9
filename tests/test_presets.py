"""Named recipes: `vaelab presets`, `vaelab train --preset NAME`, and what config.json
records of them."""

from __future__ import annotations

import json

import pytest

from conftest import call_cli
from vaelab.config import TrainConfig
from vaelab.errors import SettingError
from vaelab.presets import PRESETS, describe_preset, preset_lines, preset_settings

REQUIRED = {"burda-vae", "burda-iwae-k50", "burda-iwae-2l-k50", "vamp", "fast-nll"}


def test_the_issue_s_presets_exist_and_each_makes_a_valid_config():
    assert REQUIRED <= set(PRESETS)
    for name, preset in PRESETS.items():
        config = TrainConfig.from_preset(name)
        assert config.preset == name
        for key, value in preset.settings.items():
            got = getattr(config, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, (name, key)


def test_the_likelihood_presets_train_on_dynamically_binarised_data():
    for name in REQUIRED:
        assert PRESETS[name].settings["binarize"] == "dynamic", name


def test_burda_presets_follow_the_paper():
    vae = TrainConfig.from_preset("burda-vae")
    assert (vae.hidden, vae.activation, vae.latent_dim) == ([200, 200], "tanh", 50)
    assert (vae.batch_size, vae.adam_eps, vae.lr_schedule, vae.epochs) == (20, 1e-4, "burda", 3280)
    iwae = TrainConfig.from_preset("burda-iwae-k50")
    assert (iwae.objective, iwae.iw_k) == ("iwae", 50)
    two = TrainConfig.from_preset("burda-iwae-2l-k50")
    assert (two.model, two.objective, two.iw_k) == ("vae-2l", "iwae", 50)
    vamp = TrainConfig.from_preset("vamp")
    assert (vamp.prior, vamp.pseudo_inputs) == ("vamp", 500)


def test_given_settings_win_and_a_given_length_replaces_the_preset_s():
    config = TrainConfig.from_preset("burda-vae", lr=5e-4, epochs=3)
    assert (config.lr, config.epochs, config.hidden) == (5e-4, 3, [200, 200])
    budget = TrainConfig.from_preset("burda-vae", time_budget=2.0)
    assert (budget.time_budget, budget.epochs) == (2.0, None)
    fast = TrainConfig.from_preset("fast-nll", epochs=4)
    assert (fast.epochs, fast.time_budget) == (4, None)
    assert preset_settings("fast-nll", {})["time_budget"] == 60.0


def test_fast_nll_has_its_measured_vampprior_and_runs_with_n01_on_request():
    fast = TrainConfig.from_preset("fast-nll")
    assert (fast.prior, fast.pseudo_inputs, fast.hidden) == ("vamp", 300, [400, 400])
    plain = TrainConfig.from_preset("fast-nll", prior="standard")
    assert (plain.prior, plain.pseudo_inputs, plain.hidden) == ("standard", None, [400, 400])


def test_a_given_prior_drops_the_preset_s_size_of_another_prior():
    standard = TrainConfig.from_preset("vamp", prior="standard")
    assert (standard.prior, standard.pseudo_inputs) == ("standard", None)
    mog = TrainConfig.from_preset("vamp", prior="mog", prior_components=10)
    assert (mog.prior, mog.prior_components, mog.pseudo_inputs) == ("mog", 10, None)
    smaller = TrainConfig.from_preset("vamp", prior="vamp", pseudo_inputs=50)
    assert smaller.pseudo_inputs == 50
    assert TrainConfig.from_preset("vamp", prior="vamp").pseudo_inputs == 500
    with pytest.raises(SettingError, match="prior.mog needs .*prior.components"):
        TrainConfig.from_preset("vamp", prior="mog").validate()


def test_the_record_names_the_preset_and_what_was_overridden():
    record = describe_preset(TrainConfig.from_preset("burda-vae", lr=5e-4, epochs=3))
    assert record["name"] == "burda-vae"
    assert record["overridden"] == {"lr": 5e-4, "epochs": 3}
    assert record["settings"]["lr"] == 1e-3
    assert describe_preset(TrainConfig()) is None


def test_an_unknown_preset_is_a_setting_error():
    with pytest.raises(SettingError, match="unknown preset 'nope'; choose one of burda-vae"):
        TrainConfig.from_preset("nope")
    with pytest.raises(SettingError, match="unknown preset"):
        TrainConfig(preset="nope")


def test_vaelab_presets_lists_one_line_each(capsys):
    code, out, _ = call_cli(capsys, "presets")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(PRESETS) == len(preset_lines())
    for line, name in zip(lines, PRESETS):
        assert line.startswith(name) and "Source:" in line and "Here:" in line


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_trains_a_tiny_run_and_records_itself(capsys, tmp_path, tiny_npz, name):
    out = tmp_path / "run"
    extra = ["--val-size", "32"] if "val_size" in PRESETS[name].settings else []
    code, _, err = call_cli(
        capsys, "train", "--preset", name, "--dataset", tiny_npz, "--epochs", "1",
        "--limit", "64", "--out", out, "--quiet", *extra,
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["preset"] == name
    assert meta["preset"]["name"] == name
    assert meta["preset"]["overridden"]["epochs"] == 1
    assert meta["preset"]["overridden"].get("time_budget") is None  # the length given wins
    for key, value in PRESETS[name].settings.items():
        if key not in ("epochs", "time_budget", "val_size"):
            assert meta["config"][key] == value, key


def test_bad_preset_input_exits_2(capsys, tmp_path, tiny_npz):
    code, _, err = call_cli(capsys, "train", "--preset", "nope", "--dataset", tiny_npz)
    assert code == 2 and err.count("\n") == 1 and "unknown --preset 'nope'" in err
    code, _, err = call_cli(
        capsys, "train", "--preset", "fast-nll", "--time-budget", "0", "--dataset", tiny_npz
    )
    assert code == 2 and "--time-budget must be a positive number" in err
