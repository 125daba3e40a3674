"""Priors p(z) over the latent code.

A prior is a small :class:`~pyro.nn.PyroModule`. Its :meth:`Prior.distribution` returns a
distribution with ``event_shape == (z_dim,)`` whose tensors are built from the data's
device and dtype (``x.new_zeros``), never from torch defaults; :meth:`Prior.forward` samples
the latent site ``"z"`` inside the caller's ``pyro.plate("data")``.

Write your own by subclassing :class:`Prior` and implementing ``distribution(x)``; a prior
that samples extra sites (e.g. a discrete component) overrides ``forward`` instead.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from pyro_vae.models._validation import check_positive_int


class Prior(PyroModule):
    """Base class for p(z): subclasses implement ``distribution(x)``."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = check_positive_int(z_dim, "z_dim")

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, name: str = "z") -> torch.Tensor:
        return pyro.sample(name, self.distribution(x))


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def distribution(self, x):
        return dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1)


class LearnedNormalPrior(Prior):
    """p(z) = N(mu, diag(sigma^2)) with learned mu and sigma = softplus(rho)."""

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.raw_scale = nn.Parameter(torch.full((z_dim,), math.log(math.e - 1.0)))

    def distribution(self, x):
        return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)


class LaplacePrior(Prior):
    """p(z) = prod_u Laplace(z_u; 0, b): heavier tails than the Normal, sparse codes."""

    def __init__(self, z_dim: int, scale: float = 1.0):
        super().__init__(z_dim)
        self.scale = float(scale)

    def distribution(self, x):
        return dist.Laplace(x.new_zeros(self.z_dim),
                            x.new_full((self.z_dim,), self.scale)).to_event(1)


class StudentTPrior(Prior):
    """p(z) = prod_u StudentT(z_u; nu, 0, 1) with fixed degrees of freedom nu."""

    def __init__(self, z_dim: int, df: float = 3.0):
        super().__init__(z_dim)
        if not df > 0:
            raise ValueError(f"StudentTPrior needs df > 0; got df={df}")
        self.df = float(df)

    def distribution(self, x):
        return dist.StudentT(x.new_full((self.z_dim,), self.df), x.new_zeros(self.z_dim),
                             x.new_ones(self.z_dim)).to_event(1)


class MixtureOfGaussiansPrior(Prior):
    """p(z) = sum_c pi_c N(z; mu_c, diag(sigma_c^2)), all learned (a continuous mixture:
    the component is marginalised inside ``MixtureSameFamily``, there is no discrete site)."""

    def __init__(self, z_dim: int, num_components: int = 10, init_spread: float = 2.0):
        super().__init__(z_dim)
        self.num_components = check_positive_int(num_components, "num_components")
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(init_spread * torch.randn(num_components, z_dim))
        self.raw_scales = nn.Parameter(torch.zeros(num_components, z_dim))

    def distribution(self, x):
        components = dist.Normal(self.locs, F.softplus(self.raw_scales) + 1e-4).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class _BroadcastMixture(dist.MixtureSameFamily):
    """MixtureSameFamily whose log_prob expands z against the components before evaluating
    them, so conditional flows (whose context cannot broadcast) work as components."""

    def log_prob(self, value):
        components = self.component_distribution
        value = value.unsqueeze(-1 - len(self.event_shape))
        shape = torch.broadcast_shapes(value.shape[:value.dim() - len(self.event_shape)],
                                       components.batch_shape)
        log_prob = components.log_prob(value.expand(shape + self.event_shape))
        return torch.logsumexp(log_prob + self.mixture_distribution.logits, dim=-1)


class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/C) sum_c q(z | u_c).

    The pseudo-inputs u_c are learned; the guide is shared with the VAE, attached by
    :meth:`attach_guide` (the VAE does this) without registering it twice as a submodule.
    Pseudo-inputs are ``sigmoid(raw)`` when ``unit_interval`` (data in [0, 1]), else ``raw``.
    """

    def __init__(self, z_dim: int, x_dim: int, num_components: int = 50,
                 unit_interval: bool = True):
        super().__init__(z_dim)
        self.num_components = check_positive_int(num_components, "num_components")
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.unit_interval = bool(unit_interval)
        self.raw_pseudo_inputs = nn.Parameter(0.5 * torch.randn(num_components, x_dim))
        self._guide_ref: tuple = ()

    def attach_guide(self, guide: nn.Module) -> None:
        self._guide_ref = (guide,)  # a tuple keeps nn.Module from registering it a second time

    def pseudo_inputs(self) -> torch.Tensor:
        raw = self.raw_pseudo_inputs
        return torch.sigmoid(raw) if self.unit_interval else raw

    def distribution(self, x):
        if not self._guide_ref:
            raise RuntimeError("VampPrior has no guide attached; build it through VAE(..., "
                               "prior='vamp') or call prior.attach_guide(guide) first")
        components = self._guide_ref[0].distribution(self.pseudo_inputs())
        mixing = dist.Categorical(logits=x.new_zeros(self.num_components))
        return _BroadcastMixture(mixing, components)
