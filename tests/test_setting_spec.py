"""setting_spec: each setting's accepted names live in one tuple, which both the flag and
the library's check use; a name outside it is one SettingError naming the setting."""

import dataclasses

import pytest

from vaelab import setting_spec
from vaelab.cli import Parser
from vaelab.cli.train import add_train_arguments
from vaelab.config import TrainConfig
from vaelab.errors import SettingError


def test_check_choice_accepts_members_and_names_the_setting_otherwise():
    setting_spec.check_choice("objective", "iwae", ("elbo", "iwae"))
    with pytest.raises(SettingError) as caught:
        setting_spec.check_choice("objective", "vimco", ("elbo", "iwae"))
    assert caught.value.setting == "objective"
    assert str(caught.value) == "unknown objective 'vimco'; choose one of elbo, iwae"


CHOICE_FIELDS = [f for f in dataclasses.fields(TrainConfig) if "choices" in f.metadata]


def test_the_fields_with_choices_are_the_expected_ones():
    assert {f.name for f in CHOICE_FIELDS} >= {
        "binarize", "activation", "recon", "objective", "estimator", "prior",
        "condition", "lr_schedule", "device", "precision",
    }  # fmt: skip


@pytest.mark.parametrize("field", CHOICE_FIELDS, ids=lambda f: f.name)
def test_a_config_rejects_a_name_its_flag_would_not_offer(field):
    with pytest.raises(SettingError) as caught:
        TrainConfig(**{field.name: "no-such-name"})
    assert caught.value.setting == field.name
    assert "no-such-name" in str(caught.value)


def test_every_learned_prior_names_a_size_setting_of_the_config():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    prior_field = next(f for f in CHOICE_FIELDS if f.name == "prior")
    assert set(setting_spec.PRIOR_SIZE_SETTINGS) == set(prior_field.metadata["choices"]) - {
        "standard"
    }
    assert set(setting_spec.PRIOR_SIZE_SETTINGS.values()) <= names


def test_the_flags_offer_the_spec_tuples_themselves():
    parser = Parser(prog="vaelab train")
    add_train_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    assert actions["recon"].choices is setting_spec.RECON_CHOICES
    assert actions["binarize"].choices is setting_spec.BINARIZE_CHOICES
    assert actions["device"].choices is setting_spec.DEVICE_CHOICES
    assert actions["precision"].choices is setting_spec.PRECISION_CHOICES
    assert actions["objective"].choices is setting_spec.OBJECTIVE_CHOICES
    for field in CHOICE_FIELDS:
        assert actions[field.name].choices is field.metadata["choices"]
