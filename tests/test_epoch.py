"""epoch: one pass over the training set: its permutation depends on (seed, epoch) only,
and each step's KL weight follows --kl-warmup. The pass itself is exercised by every
training test (test_train.py) and under the thread governor (test_threads.py)."""

import torch

from vaelab.config import TrainConfig
from vaelab.training.epoch import epoch_permutation, step_kl_weights


def test_epoch_permutation_depends_on_seed_and_epoch_only():
    assert torch.equal(epoch_permutation(100, 1, 3), epoch_permutation(100, 1, 3))
    assert not torch.equal(epoch_permutation(100, 1, 3), epoch_permutation(100, 1, 4))
    assert not torch.equal(epoch_permutation(100, 1, 3), epoch_permutation(100, 2, 3))
    assert sorted(epoch_permutation(50, 7, 1).tolist()) == list(range(50))


def test_step_kl_weights_are_beta_or_rise_step_by_step_under_warm_up():
    cpu = torch.device("cpu")
    assert step_kl_weights(TrainConfig(beta=2.0), 1, 4, cpu) == [2.0] * 4
    rising = step_kl_weights(TrainConfig(beta=2.0, kl_warmup=2), 2, 4, cpu)
    assert isinstance(rising, torch.Tensor)  # one tensor on the device, no copy per step
    torch.testing.assert_close(rising, torch.tensor([1.0, 1.25, 1.5, 1.75]))
    done = step_kl_weights(TrainConfig(beta=2.0, kl_warmup=2), 3, 4, cpu)
    torch.testing.assert_close(done, torch.full((4,), 2.0))
