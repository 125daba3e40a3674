"""Discrete latents against exact answers: small enough models to enumerate everything."""

import itertools
import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from conftest import IdentityEncoder, inverse_softplus
from torch import nn

import pyro_vae as pv
from pyro_vae.inference import (
    enumerated_terms,
    evaluate,
    gradient_snr,
    log_likelihood,
    make_estimator,
)
from pyro_vae.models import CategoricalVAE, GaussianMixtureVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def tiny_categorical(seed=0, dtype=torch.float32):
    """Two 3-way latents, 5 binary features: 9 joint configurations."""
    pyro.set_rng_seed(seed)
    model = CategoricalVAE(5, num_latents=2, num_classes=3, hidden=[8]).to(dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((6, 5), 0.4, dtype=dtype), generator=g)
    return model, x


@torch.no_grad()
def brute_force(model, x):
    """Per datapoint: the exact ELBO sum_y q(y|x)[log p(x,y) - log q(y|x)] and log p(x)."""
    log_q = torch.log_softmax(model.guide_logits(x), -1)               # (N, L, K)
    elbo, joints = torch.zeros(len(x), dtype=x.dtype), []
    for config in itertools.product(range(model.num_classes), repeat=model.num_latents):
        hot = F.one_hot(torch.tensor(config), model.num_classes).to(x.dtype).flatten()
        log_lik = torch.distributions.Bernoulli(logits=model.decoder(hot)).log_prob(x).sum(-1)
        log_prior = -model.num_latents * math.log(model.num_classes)
        log_guide = sum(log_q[:, latent, c] for latent, c in enumerate(config))
        joints.append(log_lik + log_prior)
        elbo = elbo + log_guide.exp() * (log_lik + log_prior - log_guide)
    return elbo, torch.logsumexp(torch.stack(joints), 0)


def test_enum_loss_and_evaluation_equal_the_exact_elbo_and_marginal():
    model, x = tiny_categorical(dtype=torch.float64)
    exact_elbo, exact_log_px = brute_force(model, x)
    loss = make_estimator("enum", max_plate_nesting=1).differentiable_loss(
        model.model, model.guide, x).detach()
    assert loss.item() == pytest.approx(-exact_elbo.sum().item(), rel=1e-10)
    result = evaluate(model, x, num_samples=3, elbo_particles=1)
    assert result.discrete_sites == {"y0": "summed exactly", "y1": "summed exactly"}
    assert result.elbo == pytest.approx(float(exact_elbo.mean()), rel=1e-10)
    assert result.log_likelihood == pytest.approx(float(exact_log_px.mean()), rel=1e-10)
    torch.testing.assert_close(result.per_datapoint["log_likelihood"], exact_log_px)
    assert result.kl == pytest.approx(result.recon - result.elbo)


def test_mean_score_gradient_matches_the_enum_gradient():
    """Unbiasedness: the mean of many score-function gradients (every baseline) equals the
    exact enumerated gradient within Monte Carlo error (z-scores of the elements have mean
    square near 1); the relaxed estimator's gradient, of another objective, does not (so
    the check can fail)."""
    model, x = tiny_categorical()
    specs = ["enum", "score:k=100", "score:baseline=avg,k=100", "score:baseline=nn,k=100",
             "relaxed:k=100"]
    result = gradient_snr(model, x, specs, num_draws=40, seed=1)
    for group in ("encoder", "decoder"):
        exact = result.get("enum", group)
        assert exact.variance_mean == pytest.approx(0.0, abs=1e-12)   # enumeration: exact
        for spec in specs[1:]:
            stats = result.get(spec, group)
            varies = stats.variance > 0
            z = (stats.mean - exact.mean)[varies] / stats.standard_error()[varies]
            if spec.startswith("relaxed"):
                assert float(z.pow(2).mean()) > 10.0, (spec, group)
            else:
                assert float(z.pow(2).mean()) < 2.0, (spec, group)
                assert float(z.abs().max()) < 6.0, (spec, group)


def linear_gaussian_mixture(dtype=torch.float64, seed=0):
    """A GMVAE with x = W z + b + sigma eps and z | y ~ N(mu_y, s^2 I) (one scale s for all
    components): p(x) = sum_y pi_y N(x; W mu_y + b, s^2 W W^T + sigma^2 I) exactly, and
    q(z | x, y) can equal p(z | x, y) (a linear function of [x, onehot y])."""
    g = torch.Generator().manual_seed(seed)
    x_dim, z_dim, c, sigma, s = 4, 2, 3, 0.5, 0.8
    W = torch.randn(x_dim, z_dim, generator=g, dtype=dtype)
    b = torch.randn(x_dim, generator=g, dtype=dtype)
    decoder = nn.Linear(z_dim, x_dim).to(dtype)
    with torch.no_grad():
        decoder.weight.copy_(W)
        decoder.bias.copy_(b)
    pyro.set_rng_seed(seed)
    model = GaussianMixtureVAE(x_dim, c, z_dim, likelihood="normal",
                               likelihood_options={"sigma": sigma}, guide="full_rank",
                               encoder=IdentityEncoder(x_dim + c), decoder=decoder,
                               hidden=[8]).to(dtype)
    with torch.no_grad():
        model.mixture_logits.copy_(torch.tensor([0.3, -0.2, 0.5], dtype=dtype))
        model.component_locs.copy_(2.0 * torch.randn(c, z_dim, generator=g, dtype=dtype))
        raw_scale = inverse_softplus(torch.tensor(s - 1e-4, dtype=dtype))
        model.component_raw_scales.fill_(float(raw_scale))
    precision = W.T @ W / sigma ** 2 + torch.eye(z_dim, dtype=dtype) / s ** 2
    cov = torch.linalg.inv(precision)
    guide = model.guide_family
    with torch.no_grad():
        guide.loc_head.weight.copy_(torch.cat([cov @ W.T / sigma ** 2,
                                               cov @ model.component_locs.T / s ** 2], 1))
        guide.loc_head.bias.copy_(-cov @ W.T @ b / sigma ** 2)
        chol = torch.linalg.cholesky(cov)
        guide.diag_head.weight.zero_()
        guide.diag_head.bias.copy_(inverse_softplus(torch.diagonal(chol) - 1e-5))
        guide.offdiag_head.bias.copy_(chol[guide._rows, guide._cols])
    x = torch.randn(7, x_dim, generator=g, dtype=dtype) * 2 + b

    def exact(x):
        marginal_cov = s ** 2 * W @ W.T + sigma ** 2 * torch.eye(x_dim, dtype=dtype)
        means = model.component_locs.detach() @ W.T + b
        log_px_y = torch.distributions.MultivariateNormal(means, marginal_cov).log_prob(
            x[:, None])                                               # (N, C)
        log_pi = torch.log_softmax(model.mixture_logits.detach(), -1)
        return log_pi + log_px_y

    return model, x, exact


def test_gmvae_log_likelihood_and_elbo_are_exact_with_the_exact_posterior_guide():
    model, x, exact_joint = linear_gaussian_mixture()
    log_joint = exact_joint(x)                                        # log p(x, y)
    exact_log_px = torch.logsumexp(log_joint, -1)
    estimate = log_likelihood(model, x, num_samples=5, seed=0)
    torch.testing.assert_close(estimate, exact_log_px, rtol=0, atol=1e-8)
    # with y summed exactly and q(z|x,y) = p(z|x,y): ELBO = sum_y q(y|x) [log p(x,y) - log q(y|x)]
    log_q = torch.log_softmax(model.classifier(x), -1).detach()
    exact_elbo = (log_q.exp() * (log_joint - log_q)).sum(-1)
    result = evaluate(model, x, num_samples=5, elbo_particles=3)
    assert result.elbo == pytest.approx(float(exact_elbo.mean()), abs=1e-8)
    assert result.elbo < result.log_likelihood   # q(y|x) is not p(y|x)
    posterior = pv.inference.discrete_posterior(model, x, method="model", num_samples=4)
    torch.testing.assert_close(posterior, torch.softmax(log_joint, -1), rtol=0, atol=1e-8)


def test_importance_sampled_log_likelihood_matches_exact_enumeration():
    """Forced to sample the discrete sites (max_enumeration=1), importance sampling with the
    guide's q(y|x) converges to the exactly enumerated log p(x); with an imperfect continuous
    guide, enumerating y and importance-sampling z does too."""
    model, x = tiny_categorical(seed=3, dtype=torch.float64)
    _, exact = brute_force(model, x)
    sampled = log_likelihood(model, x, num_samples=20000, seed=0, max_enumeration=1)
    torch.testing.assert_close(sampled, exact, rtol=0, atol=0.02)
    assert not torch.equal(sampled, exact)
    plan = pv.inference.enumeration_plan(model, (x,), max_enumeration=1)
    assert plan.configurations == 9 and not plan.enumerate

    gmvae, xg, exact_joint = linear_gaussian_mixture(seed=1)
    with torch.no_grad():   # spoil q(z | x, y): inflate its scale
        gmvae.guide_family.diag_head.bias.add_(0.3)
    truth = torch.logsumexp(exact_joint(xg), -1)
    k = 4000
    log_w = enumerated_terms(gmvae, (xg,), k).log_weights                # (K, N)
    assert log_w.shape == (k, len(xg))
    assert bool((log_w.mean(0) < truth).all())   # E log w <= log p(x) (Jensen)
    w = (log_w - log_w.max(0).values).exp()
    tolerance = 5 * w.std(0) / w.mean(0) / math.sqrt(k)      # 5 standard errors of log mean w
    estimate = log_likelihood(gmvae, xg, num_samples=k, seed=0)
    assert bool(((estimate - truth).abs() < tolerance).all()), (estimate - truth, tolerance)
    assert float(tolerance.max()) < 0.05
