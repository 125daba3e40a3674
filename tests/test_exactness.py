"""Test 2: importance-sampled log p(x) against the exact answer of a linear-Gaussian model,
and the ordering ELBO <= IWAE_5 <= IWAE_50 <= log p(x), with minibatch scaling in use."""

import pyro
import pytest
import torch

from pyro_vae.inference import MinibatchRenyiELBO, evaluate, log_likelihood, make_estimator
from pyro_vae.inference.evaluation import log_density_terms


def test_exact_posterior_guide_gives_exact_weights(ppca):
    """With q = p(z|x), every log-weight equals log p(x): checks the bookkeeping exactly."""
    model, x = ppca.exact_posterior_vae(), ppca.sample(40)
    log_w = log_density_terms(model, (x,), num_particles=7).log_weights
    exact = ppca.exact_log_prob(x)
    assert log_w.shape == (7, 40)
    torch.testing.assert_close(log_w, exact.expand(7, -1), atol=2e-3, rtol=1e-4)


def test_importance_sampled_log_likelihood_matches_exact(ppca):
    model, x = ppca.mean_field_vae(inflate=1.5), ppca.sample(200)
    estimate = log_likelihood(model, x, num_samples=5000, particle_budget=50_000, seed=0)
    exact = ppca.exact_log_prob(x)
    assert (estimate - exact).abs().mean().item() < 0.02   # nats per datapoint
    assert (estimate - exact).abs().max().item() < 0.1
    result = evaluate(model, x, num_samples=5000)
    assert result.log_likelihood == pytest.approx(exact.mean().item(), abs=0.02)
    assert result.elbo < result.log_likelihood


def _per_datapoint_bound(spec, model, x, num_data, repeats):
    """Mean per-datapoint training bound for batch x drawn as a subsample of num_data."""
    elbo = make_estimator(spec, max_plate_nesting=1)
    values = torch.tensor([-elbo.loss(model.model, model.guide, x, num_data=num_data)
                           for _ in range(repeats)])
    return values / num_data   # the loss estimates the sum over num_data points


def test_bounds_are_ordered_under_minibatch_scaling(ppca):
    model, x = ppca.mean_field_vae(inflate=1.5), ppca.sample(64)
    num_data = 6400   # x is a minibatch of a 100x larger data set: scale 100
    exact = ppca.exact_log_prob(x).mean().item()
    bounds = {spec: _per_datapoint_bound(spec, model, x, num_data, 300)
              for spec in ("elbo", "iwae:k=5", "iwae:k=50")}
    means = {k: v.mean().item() for k, v in bounds.items()}
    err = {k: 4 * v.std().item() / len(v) ** 0.5 for k, v in bounds.items()}
    assert means["elbo"] < means["iwae:k=5"] + err["elbo"] + err["iwae:k=5"]
    assert means["iwae:k=5"] < means["iwae:k=50"] + err["iwae:k=5"] + err["iwae:k=50"]
    assert means["iwae:k=50"] < exact + err["iwae:k=50"]
    # and the gaps are real, not ties: this guide is not the posterior
    assert means["elbo"] < means["iwae:k=50"] - 0.05
    assert exact - means["iwae:k=50"] < exact - means["elbo"]


def test_minibatch_scaled_iwae_is_the_scaled_per_datapoint_bound(ppca):
    """scale x (bound without subsampling), under the same random draws; Pyro's own
    RenyiELBO puts the scale inside the log-mean-exp and overshoots log p(x)."""
    model, x = ppca.mean_field_vae(inflate=1.5), ppca.sample(32)
    ours = make_estimator("iwae:k=20", max_plate_nesting=1)
    pyro.set_rng_seed(3)
    scaled = ours.loss(model.model, model.guide, x, num_data=3200)
    pyro.set_rng_seed(3)
    unscaled = ours.loss(model.model, model.guide, x)
    assert scaled == pytest.approx(100 * unscaled, rel=1e-5)
    assert isinstance(ours, MinibatchRenyiELBO)

    exact_total = 100 * ppca.exact_log_prob(x).sum().item()
    pyro_renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=20, vectorize_particles=True,
                                      max_plate_nesting=1)
    pyro.set_rng_seed(3)
    naive = -pyro_renyi.loss(model.model, model.guide, x, num_data=3200)
    assert naive > exact_total   # not a lower bound any more: the bug this class fixes
    assert -scaled < exact_total
