"""setting_values: a flag's text read into a value (one ValueError line for bad text,
which argparse shows as is), and the forms hidden sizes and warm-ups take."""

import pytest

from vaelab.errors import SettingError
from vaelab.setting_values import (
    epochs_or_share,
    hidden_list,
    hidden_sizes,
    int_list,
    number_or_learned,
    share_of_run,
    stored_hidden,
)


def test_text_parsers():
    assert int_list("0, 5,10,") == [0, 5, 10]
    assert number_or_learned("learned") == "learned"
    assert number_or_learned("1e-1") == 0.1
    with pytest.raises(ValueError, match="comma-separated integers"):
        int_list("1,x")
    with pytest.raises(ValueError, match="a number or 'learned'"):
        number_or_learned("tuned")


def test_hidden_sizes_read_stored_and_listed():
    assert hidden_sizes("400") == 400 and hidden_sizes("200,200") == [200, 200]
    with pytest.raises(ValueError, match="a hidden size"):
        hidden_sizes(",")
    assert stored_hidden([400]) == 400 and stored_hidden([200, 100]) == [200, 100]
    assert hidden_list(400) == [400] and hidden_list((200, 100)) == [200, 100]
    for bad in (0, [], [200, -1], [2.5]):
        with pytest.raises(SettingError, match="hidden must be a positive integer"):
            hidden_list(bad)


def test_a_warm_up_is_epochs_or_a_share_of_the_run():
    assert epochs_or_share("2.5") == 2.5 and epochs_or_share("10%") == "10%"
    for bad in ("ten", "x%", ""):
        with pytest.raises(ValueError, match="a number of epochs or a share"):
            epochs_or_share(bad)
    assert share_of_run("25%", None) == 0.25 and share_of_run(3, 12) == 0.25
    assert share_of_run(3, None) == 0.0  # epochs not known: no share
