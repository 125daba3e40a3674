"""Property-based tests (hypothesis) of the mathematical components, on random shapes and
parameters: analytic KL against Monte Carlo, finite likelihoods on valid data, and the
importance-sampled bound above the ELBO. Tolerances are multiples of Monte Carlo standard
errors; examples are derandomised so the run is reproducible."""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from conftest import PPCA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyro_vae.inference import elbo_terms, log_likelihood
from pyro_vae.models import LIKELIHOODS, priors
from pyro_vae.models.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def mean_and_stderr(samples: torch.Tensor) -> tuple[float, float]:
    return samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())


# ---- KL(q || p): closed form against Monte Carlo -------------------------------------------

def assert_analytic_kl_matches_monte_carlo(q, p, num_samples: int = 20_000) -> None:
    """KL(q || p) in closed form is >= 0 and within 5 standard errors of
    mean_s [log q(z_s) - log p(z_s)], z_s ~ q."""
    analytic = torch.distributions.kl_divergence(q, p).item()
    torch.manual_seed(0)
    z = q.sample((num_samples,))
    mc, stderr = mean_and_stderr(q.log_prob(z) - p.log_prob(z))
    assert analytic >= -1e-9
    assert abs(mc - analytic) < 5 * stderr + 1e-6, (mc, analytic, stderr)


@st.composite
def diagonal_normals(draw, z_dim):
    loc = draw(hnp.arrays(np.float64, z_dim, elements=st.floats(-3, 3)))
    log_scale = draw(hnp.arrays(np.float64, z_dim, elements=st.floats(-1.5, 1.0)))
    return torch.from_numpy(loc), torch.from_numpy(log_scale).exp()


def prior_distribution(kind: str, z_dim: int, loc, scale) -> dist.TorchDistribution:
    """The prior components' own distributions (float64 reference tensor)."""
    reference = torch.zeros(1, 1, dtype=torch.float64)
    if kind == "normal":
        return priors.StandardNormalPrior(z_dim).distribution(reference)
    if kind == "learned_normal":
        prior = priors.LearnedNormalPrior(z_dim).double()
        with torch.no_grad():
            prior.loc.copy_(loc)
            prior.raw_scale.copy_(scale + torch.log(-torch.expm1(-scale)))   # softplus^-1
        return prior.distribution(reference)
    return priors.LaplacePrior(z_dim, scale=float(scale[0])).distribution(reference)


@PROPERTY
@given(data=st.data(), z_dim=st.integers(1, 4),
       kind=st.sampled_from(["normal", "learned_normal", "laplace"]))
def test_analytic_kl_matches_monte_carlo_and_is_non_negative(data, z_dim, kind):
    q_loc, q_scale = data.draw(diagonal_normals(z_dim), label="q")
    p_loc, p_scale = data.draw(diagonal_normals(z_dim), label="p")
    q = dist.Normal(q_loc, q_scale).to_event(1)   # DiagonalNormalGuide's family
    p = prior_distribution(kind, z_dim, p_loc, p_scale)
    assert_analytic_kl_matches_monte_carlo(q, p)
    assert torch.distributions.kl_divergence(q, q).abs().item() < 1e-9


@PROPERTY
@given(z_dim=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_full_rank_kl_matches_monte_carlo(z_dim, seed):
    g = torch.Generator().manual_seed(seed)
    tril = torch.randn(z_dim, z_dim, generator=g, dtype=torch.float64).tril(-1)
    tril = tril + torch.diag(torch.rand(z_dim, generator=g, dtype=torch.float64) + 0.3)
    q = dist.MultivariateNormal(torch.randn(z_dim, generator=g, dtype=torch.float64),
                                scale_tril=tril)   # FullRankNormalGuide's family
    p = dist.MultivariateNormal(torch.zeros(z_dim, dtype=torch.float64),
                                torch.eye(z_dim, dtype=torch.float64))
    assert_analytic_kl_matches_monte_carlo(q, p)


# ---- every likelihood is finite on the data it accepts ------------------------------------

def valid_values(likelihood) -> st.SearchStrategy[float]:
    if isinstance(likelihood, BernoulliLikelihood):
        return st.sampled_from([0.0, 1.0])
    if isinstance(likelihood, ContinuousBernoulliLikelihood):
        return st.floats(0.0, 1.0, width=32)
    if "count" in likelihood.support:
        return st.integers(0, 10_000).map(float)
    return st.floats(-1e3, 1e3, width=32)


@settings(PROPERTY, max_examples=150)
@given(data=st.data(), name=st.sampled_from(sorted(LIKELIHOODS)), x_dim=st.integers(1, 6),
       batch_shape=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       raw_parameter=st.floats(-5.0, 5.0))
def test_every_likelihood_is_finite_on_valid_data(data, name, x_dim, batch_shape,
                                                  raw_parameter):
    likelihood = LIKELIHOODS[name](x_dim=x_dim)
    with torch.no_grad():
        for parameter in likelihood.parameters():   # learned scales, df, dispersion
            parameter.fill_(raw_parameter)
    shape = (*batch_shape, x_dim)
    theta = torch.from_numpy(data.draw(hnp.arrays(np.float32, shape, elements=st.floats(
        -20.0, 20.0, width=32)), label="theta"))
    x = torch.from_numpy(data.draw(hnp.arrays(np.float32, shape,
                                              elements=valid_values(likelihood)), label="x"))
    likelihood.check_data(x.reshape(-1, x_dim))   # the support it states accepts the data
    log_prob = likelihood.distribution(theta).log_prob(x)
    assert log_prob.shape == tuple(batch_shape)
    assert torch.isfinite(log_prob).all(), (theta, x, log_prob)


# ---- importance sampling: E[log mean_k w_k] >= ELBO, and <= log p(x) ------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(PROPERTY, max_examples=10)
@given(z_dim=st.integers(1, 3), extra_dims=st.integers(0, 3), sigma=st.floats(0.3, 1.5),
       inflate=st.floats(0.3, 3.0), seed=st.integers(0, 2 ** 16),
       num_samples=st.integers(2, 20))
def test_importance_sampled_estimate_is_at_least_the_elbo(z_dim, extra_dims, sigma, inflate,
                                                         seed, num_samples):
    ppca = PPCA(x_dim=z_dim + extra_dims + 1, z_dim=z_dim, sigma=sigma, seed=seed)
    model = ppca.mean_field_vae(inflate=inflate)
    x = ppca.sample(16, seed=seed + 1)
    replicas = 60   # independent estimates per datapoint: the rows of x.repeat
    data = x.repeat(replicas, 1)
    iwae = log_likelihood(model, data, num_samples=num_samples, seed=seed).reshape(replicas, -1)
    elbo = elbo_terms(model, data, num_particles=num_samples)["elbo"].reshape(replicas, -1)
    iwae_mean, iwae_se = mean_and_stderr(iwae.mean(1))
    elbo_mean, elbo_se = mean_and_stderr(elbo.mean(1))
    exact = ppca.exact_log_prob(x).mean().item()
    assert iwae_mean >= elbo_mean - 4 * math.hypot(iwae_se, elbo_se), (iwae_mean, elbo_mean)
    assert iwae_mean <= exact + 4 * iwae_se + 1e-4, (iwae_mean, exact)
