"""A plain-PyTorch VAE with hand-written reparameterised losses: the reference the
benchmarks measure pyro-vae against.

Same architecture as ``pyro_vae.VAE(x_dim, z_dim, hidden=..., activation=...)`` with the
standard-normal prior, the Bernoulli likelihood and the diagonal Gaussian guide
(:meth:`PlainVAE.from_vae` copies its weights), and the same losses per datapoint:

* ``elbo``:      log p(x|z) + log p(z) - log q(z|x),  z = mu + sigma * eps (one draw);
* ``meanfield``: log p(x|z) - KL(q(z|x) || N(0, I)), the KL in closed form;
* ``iwae``:      log (1/K) sum_k w_k,  w_k = p(x, z_k) / q(z_k|x) (Burda et al. 2015).

Noise is drawn like Pyro draws it (``torch.randn`` of the batch shape, particles first), so
from one random state both give the same numbers (tests/test_benchmarks.py checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_LOG_2PI = math.log(2 * math.pi)
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _mlp(widths: Sequence[int], activation: str, activate_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if activate_last or i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


def _normal_log_prob(z, loc, scale, log_scale) -> torch.Tensor:
    return (-0.5 * ((z - loc) / scale).pow(2) - log_scale - 0.5 * _LOG_2PI).sum(-1)


class PlainVAE(nn.Module):
    """x (B, x_dim) -> encoder -> (mu, log sigma^2) -> z -> decoder -> Bernoulli logits."""

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh"):
        super().__init__()
        hidden = list(hidden)
        self.encoder = _mlp([x_dim, *hidden], activation, activate_last=True)
        self.loc_head = nn.Linear(hidden[-1], z_dim)
        self.logvar_head = nn.Linear(hidden[-1], z_dim)
        self.decoder = _mlp([z_dim, *reversed(hidden), x_dim], activation, activate_last=False)

    @classmethod
    def from_vae(cls, vae, hidden: Sequence[int], activation: str) -> PlainVAE:
        """A plain copy of a pyro-vae ``VAE`` (normal prior, Bernoulli, diagonal guide)."""
        plain = cls(vae.x_dim, vae.z_dim, hidden, activation)
        guide = vae.guide_family
        pairs = [(plain.encoder, guide.encoder), (plain.loc_head, guide.loc_head),
                 (plain.logvar_head, guide.logvar_head), (plain.decoder, vae.decoder)]
        with torch.no_grad():
            for mine, theirs in pairs:
                mine_p, theirs_p = list(mine.parameters()), list(theirs.parameters())
                if [p.shape for p in mine_p] != [p.shape for p in theirs_p]:
                    raise ValueError("the VAE's networks do not match the plain architecture "
                                     f"hidden={list(hidden)}, activation={activation!r}")
                for a, b in zip(mine_p, theirs_p, strict=True):
                    a.copy_(b)
        return plain.to(next(vae.parameters()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        log_scale = 0.5 * self.logvar_head(h)
        return self.loc_head(h), log_scale.exp(), log_scale

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels: -BCE with logits."""
        logits = self.decoder(z)
        return -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)

    def log_weights(self, x: torch.Tensor, num_particles: int) -> torch.Tensor:
        """log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n), shape (K, B)."""
        loc, scale, log_scale = self.encode(x)
        eps = torch.randn((num_particles,) + loc.shape, dtype=loc.dtype, device=loc.device)
        z = loc + eps * scale
        return (self.log_likelihood(x, z) + _standard_normal_log_prob(z)
                - _normal_log_prob(z, loc, scale, log_scale))

    def loss(self, x: torch.Tensor, estimator: str = "elbo", k: int = 1) -> torch.Tensor:
        """The negative objective per datapoint (a scalar to minimise)."""
        if estimator == "elbo":
            return -self.log_weights(x, k).mean()
        if estimator == "iwae":
            log_w = self.log_weights(x, k)
            return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()
        if estimator == "meanfield":
            loc, scale, log_scale = self.encode(x)
            eps = torch.randn((k,) + loc.shape, dtype=loc.dtype, device=loc.device)
            z = loc + eps * scale
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * log_scale).sum(-1)
            return -(self.log_likelihood(x, z).mean(0) - kl).mean()
        raise ValueError(f"unknown estimator {estimator!r}; expected elbo, meanfield or iwae")


def plain_estimator(spec: str) -> tuple[str, int]:
    """'elbo' -> ('elbo', 1), 'iwae:k=5' -> ('iwae', 5): the plain loss matching a spec."""
    from pyro_vae.inference import parse_estimator

    parsed = parse_estimator(spec)
    if parsed.name not in ("elbo", "meanfield", "iwae"):
        raise ValueError(f"no plain reference for estimator {spec!r}; use elbo, meanfield or "
                         "iwae:k=K")
    return parsed.name, int(parsed.options.get("k", 1))
