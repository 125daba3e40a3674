"""Shared fixtures: a linear-Gaussian VAE (probabilistic PCA) with an exact log p(x)."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch import nn

import pyro_vae as pv


class IdentityEncoder(nn.Module):
    """h = x: lets a guide's heads be exactly linear in x."""

    def __init__(self, x_dim: int):
        super().__init__()
        self.out_features = x_dim

    def forward(self, x):
        return x


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class PPCA:
    """x = W z + b + sigma eps, z ~ N(0, I): p(x) = N(b, W W^T + sigma^2 I) exactly.

    The exact posterior is N(M^-1 W^T (x - b), sigma^2 M^-1) with M = W^T W + sigma^2 I.
    """

    def __init__(self, x_dim=5, z_dim=2, sigma=0.5, seed=0, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        self.x_dim, self.z_dim, self.sigma = x_dim, z_dim, sigma
        self.W = torch.randn(x_dim, z_dim, generator=g, dtype=dtype)
        self.b = torch.randn(x_dim, generator=g, dtype=dtype)
        self.dtype = dtype
        m = self.W.T @ self.W + sigma ** 2 * torch.eye(z_dim, dtype=dtype)
        self.post_map = torch.linalg.solve(m, self.W.T)             # M^-1 W^T
        self.post_cov = sigma ** 2 * torch.linalg.inv(m)

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g, dtype=self.dtype)
        noise = torch.randn(n, self.x_dim, generator=g, dtype=self.dtype)
        return z @ self.W.T + self.b + self.sigma * noise

    def exact_log_prob(self, x):
        cov = self.W @ self.W.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=self.dtype)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def _vae(self, guide):
        decoder = nn.Linear(self.z_dim, self.x_dim).to(self.dtype)
        with torch.no_grad():
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
        return pv.VAE(self.x_dim, self.z_dim, likelihood="normal",
                      likelihood_options={"sigma": self.sigma}, guide=guide,
                      encoder=IdentityEncoder(self.x_dim), decoder=decoder).to(self.dtype)

    def set_exact_posterior(self, guide) -> None:
        """Set a full-rank guide on an identity encoder to the exact posterior q(z|x)."""
        chol = torch.linalg.cholesky(self.post_cov)
        with torch.no_grad():
            guide.loc_head.weight.copy_(self.post_map)
            guide.loc_head.bias.copy_(-self.post_map @ self.b)
            guide.diag_head.weight.zero_()
            guide.diag_head.bias.copy_(inverse_softplus(torch.diagonal(chol) - 1e-5))
            guide.offdiag_head.bias.copy_(chol[guide._rows, guide._cols])

    def exact_posterior_vae(self):
        """A full-rank guide set to the exact posterior: every importance weight = p(x)."""
        model = self._vae("full_rank")
        self.set_exact_posterior(model.guide_family)
        return model

    def mean_field_vae(self, inflate=1.0):
        """A diagonal guide with the exact posterior means and (inflated) marginal variances:
        an imperfect guide, so ELBO < IWAE_k < log p(x) strictly."""
        model = self._vae("diagonal")
        guide = model.guide_family
        with torch.no_grad():
            guide.loc_head.weight.copy_(self.post_map)
            guide.loc_head.bias.copy_(-self.post_map @ self.b)
            guide.logvar_head.weight.zero_()
            guide.logvar_head.bias.copy_(torch.log(inflate * torch.diagonal(self.post_cov)))
        return model


@pytest.fixture
def ppca():
    return PPCA()


@pytest.fixture(autouse=True)
def _seed_and_clean():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


@pytest.fixture(scope="session")
def binary_digits():
    return pv.load_dataset("digits", binarize=True)


def mc_tolerance(samples: torch.Tensor, sigmas: float = 4.0) -> float:
    """sigmas x the standard error of the mean of ``samples``."""
    return sigmas * samples.std().item() / math.sqrt(samples.numel())


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy machine they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
