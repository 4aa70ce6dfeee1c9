"""A convolutional VAE: the lecture's "any network" remark (section 1) made concrete.

Same interface and loss as the MLP VAE (Kingma & Welling 2014,
https://arxiv.org/abs/1312.6114); only the networks differ, in the style of the DCGAN-like
encoders common since Radford et al. 2016 (https://arxiv.org/abs/1511.06434):

    encoder  (C, H, W) -conv 4x4/2-> (32, H/2, W/2) -conv 4x4/2-> (64, H/4, W/4)
             -> flatten -> Linear(., h) -> ReLU -> Linear(h, 2d)  = (mu, logvar)
    decoder  d -> Linear(d, h) -> ReLU -> Linear(h, 64 * H/4 * W/4) -> ReLU
             -tconv 4x4/2-> (32, H/2, W/2) -tconv 4x4/2-> (C, H, W) logits, flattened

"H/2" is floor(H/2): a 4x4 kernel with stride 2 and padding 1 maps a side n to n // 2,
and each transposed convolution gets output_padding = n % 2 so that the decoder gives back
exactly the input's size, for any H x W x C (28x28, 32x32x3, 7x9, ...).

Conditional (``n_classes`` = K > 0): the one-hot label joins the flattened convolution
features before the encoder's Linear(., h), and z before the decoder's Linear(d, h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.errors import SettingError, VaelabError
from vaelab.models.base import LOGVAR_MAX, LOGVAR_MIN, LatentModel


@dataclass
class ConvConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W)
    latent_dim: int = 20
    hidden: int = 400  # the fully connected layer between the convolutions and the latent
    channels: tuple[int, ...] = (32, 64)  # one stride-2 convolution per entry
    learn_sigma: bool = False  # a learned Gaussian decoder scale (--gaussian-sigma learned)
    n_classes: int = 0  # K > 0: conditional on a label (--condition label), one-hot in

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.channels = tuple(int(c) for c in self.channels)
        if not isinstance(self.hidden, int):  # --hidden 200,200 is for the MLP models
            raise SettingError(
                "{hidden} of a conv model is one size (its fully connected layer), got {value!r}",
                value=self.hidden,
            )
        if len(self.input_shape) != 3:
            raise VaelabError(
                f"convolutional models need image data (C, H, W); this data has shape "
                f"{self.input_shape}: use --model vae or ae for flat feature vectors"
            )
        smallest = 2 ** len(self.channels)
        if min(self.input_shape[1:]) < smallest:
            raise VaelabError(
                f"convolutional models need images of at least {smallest}x{smallest}, "
                f"got {self.input_shape[1]}x{self.input_shape[2]}"
            )

    def sides(self) -> list[tuple[int, int]]:
        """(H, W) before each convolution and after the last: [(28, 28), (14, 14), (7, 7)]."""
        h, w = self.input_shape[1:]
        out = [(h, w)]
        for _ in self.channels:
            h, w = h // 2, w // 2
            out.append((h, w))
        return out

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)


class ConvEncoder(nn.Module):
    """(B, C, H, W) or (B, C*H*W) -> (B, out_features); a conditional model's one-hot
    labels (B, K) join the flattened convolution features."""

    def __init__(self, config: ConvConfig, out_features: int) -> None:
        super().__init__()
        self.input_shape = config.input_shape
        layers: list[nn.Module] = []
        c_in = config.input_shape[0]
        for c_out in config.channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        h, w = config.sides()[-1]
        self.n_features = len(layers) + 1  # the layers up to and with Flatten
        self.net = nn.Sequential(
            *layers,
            nn.Flatten(),  # (B, c * h * w)
            nn.Linear(c_in * h * w + config.n_classes, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, out_features),
        )

    def forward(self, x: Tensor, one_hot: Tensor | None = None) -> Tensor:
        x = x.reshape(-1, *self.input_shape)
        if one_hot is None:
            return self.net(x)
        features = self.net[: self.n_features](x)  # (B, c * h * w)
        features = torch.cat([features, one_hot.to(features.dtype)], dim=1)  # (B, c*h*w + K)
        return self.net[self.n_features :](features)


class ConvDecoder(nn.Module):
    """(B, d) -> logits (B, C*H*W): the encoder mirrored with transposed convolutions
    (a conditional model's z arrives with its one-hot label appended: (B, d + K))."""

    def __init__(self, config: ConvConfig) -> None:
        super().__init__()
        sides = config.sides()
        h, w = sides[-1]
        self.start = (config.channels[-1], h, w)
        layers: list[nn.Module] = [
            nn.Linear(config.latent_dim + config.n_classes, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, math.prod(self.start)),
            nn.ReLU(),
            nn.Unflatten(1, self.start),  # (B, c, h, w)
        ]
        outs = [*reversed(config.channels[:-1]), config.input_shape[0]]
        c_in = config.channels[-1]
        for i, c_out in enumerate(outs):
            (h_out, w_out), (h_in, w_in) = sides[-2 - i], sides[-1 - i]
            pad = (h_out - 2 * h_in, w_out - 2 * w_in)  # 0 or 1: give back odd sides
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, output_padding=pad))
            if i < len(outs) - 1:  # no ReLU on the logits
                layers.append(nn.ReLU())
            c_in = c_out
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ConvVAE(LatentModel):
    def __init__(self, config: ConvConfig) -> None:
        super().__init__()
        self.config = config
        self.latent_dim = d = config.latent_dim
        self.n_classes = config.n_classes
        self.encoder = ConvEncoder(config, 2 * d)
        self.decoder = ConvDecoder(config)
        self.log_sigma = nn.Parameter(torch.zeros(())) if config.learn_sigma else None

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, C, H, W) or (B, D) (and labels (B,)) -> mu, logvar: (B, d) each."""
        stats = self.encoder(x, self.one_hot(labels, x)).view(-1, 2, self.latent_dim)
        mu, logvar = stats[:, 0, :], stats[:, 1, :]  # (B, d) each
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z: (B, d) (and labels (B,)) -> logits (B, D), D = C*H*W."""
        return self.decoder(self.with_label(z, labels))
