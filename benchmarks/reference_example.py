"""The reference of benchmarks/train_speed.py: the PyTorch examples' VAE and its data path,
reproduced here for comparison (faithful to it, not vaelab's code): a per-item Dataset
that turns each uint8 image into a PIL image and then a float tensor, a shuffling
DataLoader, separate fc21/fc22 heads, BCE on sigmoid outputs, and ``loss.item()`` every
step. ``run_naive`` is the same model and loss over the in-memory tensor."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from vaelab.losses import bernoulli_nll, gaussian_kl


class PILDataset(torch.utils.data.Dataset):
    """One uint8 28x28 image at a time, through PIL, to a float tensor in [0, 1]."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.array(img, copy=True)).view(1, 28, 28).float().div(255)
        return x, 0


class ReferenceVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        return self.fc21(h), self.fc22(h)

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.fc4(F.relu(self.fc3(z)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.decode_logits(z)), mu, logvar


def reference_loss(x: Tensor, recon: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


@torch.no_grad()
def reference_test_loss(model: ReferenceVAE, x: Tensor) -> float:
    """The lecture's test loss (z = mu) of the reference model, as vaelab computes it."""
    mu, logvar = model.encode(x)
    return float((bernoulli_nll(model.decode_logits(mu), x) + gaussian_kl(mu, logvar)).mean())


Trainer = tuple[Callable[[], None], Callable[[], float]]  # (train one epoch, test loss)


def reference_trainer(batches: Callable[[], Iterable[Tensor]], x_test: Tensor, seed: int):
    """The examples' training loop over ``batches()`` each epoch: the reference model and
    loss, ``loss.item()`` every step."""
    torch.manual_seed(seed)
    model = ReferenceVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch() -> None:
        total = 0.0
        for data in batches():
            optimizer.zero_grad()
            loss = reference_loss(data, *model(data))
            loss.backward()
            total += loss.item()
            optimizer.step()

    return epoch, lambda: reference_test_loss(model, x_test)


def run_reference(x_u8: np.ndarray, x_test: Tensor, batch: int, seed: int) -> Trainer:
    """Batches from a shuffling DataLoader over the per-item PIL dataset."""
    loader = torch.utils.data.DataLoader(PILDataset(x_u8), batch_size=batch, shuffle=True)
    return reference_trainer(lambda: (data for data, _ in loader), x_test, seed)


def run_naive(x: Tensor, x_test: Tensor, batch: int, seed: int) -> Trainer:
    """Batches of the in-memory float tensor in a fresh randperm order each epoch."""

    def batches() -> Iterable[Tensor]:
        perm = torch.randperm(len(x))
        return (x[perm[i : i + batch]] for i in range(0, len(x), batch))

    return reference_trainer(batches, x_test, seed)
