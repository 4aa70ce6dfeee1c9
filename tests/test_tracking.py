"""tracking: TensorBoard scalars and images per epoch, or nothing at all when off."""

import sys

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.training.tracking import (
    NullTracker,
    TensorBoardTracker,
    open_tracker,
    require_tensorboard,
)


def test_off_means_a_tracker_that_does_nothing(tmp_path):
    tracker = open_tracker(False, tmp_path / "tb")
    assert type(tracker) is NullTracker
    tracker.log_epoch(0, {}, None, None)
    tracker.close()
    assert not (tmp_path / "tb").exists()


def test_scalars_and_images_are_logged(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = build_model("vae", input_shape=(1, 8, 8), latent_dim=2, hidden=8).eval()
    tracker = open_tracker(True, tmp_path / "tb")  # RunPaths.tensorboard in a run
    assert isinstance(tracker, TensorBoardTracker)
    for epoch in (0, 1):
        row = {"epoch": epoch, "train_loss": None if epoch == 0 else 50.0, "test_loss": 40.0}
        tracker.log_epoch(epoch, row, model, torch.rand(4, 1, 8, 8))
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/test"} <= set(tags["scalars"])
    assert [s.step for s in events.Scalars("loss/test")] == [0, 1]
    assert [s.step for s in events.Scalars("loss/train")] == [1]
    assert {"reconstructions", "prior_samples"} <= set(tags["images"])


def test_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(VaelabError, match=r"pip install 'vaelab\[tensorboard\]'"):
        require_tensorboard()
