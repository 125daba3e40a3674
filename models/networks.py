"""Neural networks used by encoders and decoders.

Every network maps a tensor of shape ``(..., in_features)`` to ``(..., out_features)``, so
the same module works for a batch ``(B, D)`` and for vectorised particles ``(K, B, D)``.
Images are kept flat (``C*H*W`` features); the convolutional pair reshapes internally.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus,
               "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


def activation_module(name: str) -> nn.Module:
    """Return a fresh activation module by name (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None


class MLP(nn.Sequential):
    """Fully connected network ``in_features -> hidden... -> out_features``.

    Hidden layers use ``activation``; the output layer is linear.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 activation: str = "relu"):
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), activation_module(activation)]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features


class MLPEncoder(nn.Module):
    """Feature extractor ``x -> h`` for guides: an MLP whose last layer is also activated."""

    def __init__(self, x_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        hidden = list(hidden)
        if not hidden:
            raise ValueError("an encoder needs at least one hidden layer; got hidden=()")
        self.net = nn.Sequential(MLP(x_dim, hidden[:-1], hidden[-1], activation),
                                 activation_module(activation))
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(MLP):
    """Decoder ``z -> theta``: one natural parameter per data feature (logits, loc, log-rate)."""

    def __init__(self, z_dim: int, x_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu"):
        super().__init__(z_dim, list(reversed(list(hidden))), x_dim, activation)


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
        raise ValueError(
            f"the convolutional networks expect image_shape=(channels, height, width) with height "
            f"and width divisible by 4 (e.g. (1, 28, 28)); got {tuple(image_shape)}. "
            "Use network='mlp' for other shapes."
        )
    return int(image_shape[0]), int(image_shape[1]), int(image_shape[2])


def _flatten_leading(x: torch.Tensor, trailing: int) -> tuple[torch.Tensor, torch.Size]:
    lead = x.shape[:-trailing] if trailing else x.shape
    return x.reshape((-1,) + tuple(x.shape[len(lead):])), lead


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions and a linear layer: ``(..., C*H*W) -> (..., hidden)``."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), hidden: int = 256,
                 channels: Sequence[int] = (32, 64), activation: str = "relu"):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        c, h, w = self.image_shape
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1), activation_module(activation),
            nn.Conv2d(c1, c2, 4, 2, 1), activation_module(activation),
        )
        self.linear = nn.Sequential(nn.Linear(c2 * (h // 4) * (w // 4), hidden),
                                    activation_module(activation))
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat, lead = _flatten_leading(x, 1)
        h = self.conv(flat.reshape((-1,) + self.image_shape))
        return self.linear(h.flatten(1)).reshape(lead + (self.out_features,))


class ConvDecoder(nn.Module):
    """Linear layer and two stride-2 transposed convolutions: ``(..., z_dim) -> (..., C*H*W)``."""

    def __init__(self, z_dim: int, image_shape: Sequence[int] = (1, 28, 28), hidden: int = 256,
                 channels: Sequence[int] = (32, 64), activation: str = "relu"):
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        c, h, w = self.image_shape
        c1, c2 = channels
        self._grid = (c2, h // 4, w // 4)
        self.linear = nn.Sequential(
            nn.Linear(z_dim, hidden), activation_module(activation),
            nn.Linear(hidden, c2 * (h // 4) * (w // 4)), activation_module(activation),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), activation_module(activation),
            nn.ConvTranspose2d(c1, c, 4, 2, 1),
        )
        self.out_features = c * h * w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat, lead = _flatten_leading(z, 1)
        h = self.linear(flat).reshape((-1,) + self._grid)
        return self.deconv(h).reshape(lead + (self.out_features,))
