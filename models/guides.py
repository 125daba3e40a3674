"""Guide families q(z | x): amortised encoders from data to a latent distribution.

A guide owns a feature extractor ``encoder: x -> h`` (any module with ``out_features``) and
heads that turn h into the parameters of q. :meth:`Guide.distribution` returns a
distribution with ``event_shape == (z_dim,)``; :meth:`Guide.forward` samples the site ``"z"``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import ConditionalAffineAutoregressive, Permute
from pyro.nn import ConditionalAutoRegressiveNN, PyroModule
from torch import nn

from pyro_vae.models._validation import check_positive_int


class Guide(PyroModule):
    """Base class for q(z|x): subclasses implement ``distribution(x)``."""

    def __init__(self, encoder: nn.Module, z_dim: int):
        super().__init__()
        self.encoder = encoder
        self.z_dim = check_positive_int(z_dim, "z_dim")

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, name: str = "z") -> torch.Tensor:
        return pyro.sample(name, self.distribution(x))

    def mean(self, x: torch.Tensor, num_samples: int = 64) -> torch.Tensor:
        """E_q[z | x]: exact where the family has a closed-form mean, else a Monte Carlo average."""
        q = self.distribution(x)
        try:
            return q.mean
        except NotImplementedError:
            return q.rsample((num_samples,)).mean(0)


class DiagonalNormalGuide(Guide):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))): the standard VAE encoder."""

    def __init__(self, encoder: nn.Module, z_dim: int):
        super().__init__(encoder, z_dim)
        self.loc_head = nn.Linear(encoder.out_features, z_dim)
        self.logvar_head = nn.Linear(encoder.out_features, z_dim)

    def loc_and_scale(self, x):
        h = self.encoder(x)
        return self.loc_head(h), torch.exp(0.5 * self.logvar_head(h))

    def distribution(self, x):
        loc, scale = self.loc_and_scale(x)
        return dist.Normal(loc, scale).to_event(1)


class DeltaGuide(Guide):
    """q(z|x) = delta(z - mu(x)): a point mass at the encoder's output (a deterministic code).

    With KL weight beta = 0 the objective E_q log p(x|z) - beta KL is exactly a plain
    autoencoder's, log p(x | mu(x)); with beta > 0 it adds beta log p(mu(x)) (a MAP-regularised
    code). A point mass has no density: KL(q || p) = +inf and log p(x) cannot be
    importance-sampled with it, and :mod:`pyro_vae.inference.evaluation` reports exactly that.
    """

    def __init__(self, encoder: nn.Module, z_dim: int):
        super().__init__(encoder, z_dim)
        self.loc_head = nn.Linear(encoder.out_features, z_dim)

    def distribution(self, x):
        return dist.Delta(self.loc_head(self.encoder(x)), event_dim=1)


class FullRankNormalGuide(Guide):
    """q(z|x) = N(mu(x), L(x) L(x)^T) with a lower-triangular L whose diagonal is positive
    (softplus), capturing posterior correlations between latent dimensions."""

    def __init__(self, encoder: nn.Module, z_dim: int):
        super().__init__(encoder, z_dim)
        self.loc_head = nn.Linear(encoder.out_features, z_dim)
        self.diag_head = nn.Linear(encoder.out_features, z_dim)
        rows, cols = torch.tril_indices(z_dim, z_dim, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        self.offdiag_head = nn.Linear(encoder.out_features, rows.numel())
        nn.init.zeros_(self.offdiag_head.weight)
        nn.init.zeros_(self.offdiag_head.bias)

    def distribution(self, x):
        h = self.encoder(x)
        loc = self.loc_head(h)
        diag = F.softplus(self.diag_head(h)) + 1e-5
        scale_tril = torch.diag_embed(diag)
        scale_tril[..., self._rows, self._cols] = self.offdiag_head(h)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)


class FlowGuide(DiagonalNormalGuide):
    """q(z|x): a diagonal Normal base N(mu(x), sigma(x)) pushed through ``num_flows``
    conditional affine-autoregressive transforms (IAF, Kingma et al. 2016) conditioned on
    h(x), with the variable order reversed between transforms.
    log q(z|x) = log N(eps; mu, sigma) - sum_t log|det dT_t/deps|."""

    def __init__(self, encoder: nn.Module, z_dim: int, num_flows: int = 2,
                 flow_hidden: tuple[int, ...] | None = None):
        super().__init__(encoder, z_dim)
        self.num_flows = check_positive_int(num_flows, "num_flows")
        hidden = list(flow_hidden or (max(2 * z_dim, 16),))
        self.flows = nn.ModuleList(
            ConditionalAffineAutoregressive(
                ConditionalAutoRegressiveNN(z_dim, encoder.out_features, hidden))
            for _ in range(num_flows))
        self.register_buffer("_reverse", torch.arange(z_dim - 1, -1, -1), persistent=False)

    def distribution(self, x):
        h = self.encoder(x)
        loc, scale = self.loc_head(h), torch.exp(0.5 * self.logvar_head(h))
        transforms = []
        for i, flow in enumerate(self.flows):
            if i > 0:
                transforms.append(Permute(self._reverse))
            transforms.append(flow.condition(h))
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), transforms)
