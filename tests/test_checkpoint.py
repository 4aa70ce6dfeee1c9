import pickle

import pytest
import torch

from vaelab.errors import VaelabError
from vaelab.training.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, model={"w": torch.arange(3.0)}, epoch=4, config={"a": [1, 2]})
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 4 and torch.equal(ckpt["model"]["w"], torch.arange(3.0))


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, model={"w": torch.randn(1000)}, epoch=1)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(VaelabError, match="truncated or corrupt"):
        load_checkpoint(path)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "vaelab-checkpoint-1", "model": Payload(str(marker))}, path)
    with pytest.raises(VaelabError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(VaelabError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(VaelabError, match="not a vaelab checkpoint"):
        load_checkpoint(path)
