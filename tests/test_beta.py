"""The KL weight beta: model-level (VAE(beta=...)) and fit-level (fit(beta=..., warm-up))."""

import pyro
import pytest

import pyro_vae as pv
from pyro_vae.inference import make_estimator, scale_latent_sites
from pyro_vae.inference.evaluation import log_density_terms
from pyro_vae.inference.fitting.options import beta_schedule


def _loss(model, x, beta=None):
    elbo = make_estimator("elbo", max_plate_nesting=1)
    pyro.set_rng_seed(5)
    if beta is None:
        return elbo.loss(model.model, model.guide, x)
    with scale_latent_sites(beta):
        return elbo.loss(model.model, model.guide, x)


def test_beta_weights_only_the_kl_term(ppca):
    model, x = ppca.mean_field_vae(inflate=1.5), ppca.sample(30)
    pyro.set_rng_seed(5)
    terms = log_density_terms(model, (x,), num_particles=1, max_plate_nesting=1)
    recon = terms.log_likelihood.sum().item()
    kl = (terms.log_guide - terms.log_prior).sum().item()
    for beta in (0.0, 0.5, 4.0):
        assert _loss(model, x, beta) == pytest.approx(-(recon - beta * kl), rel=1e-5)
        model.beta = beta   # the model-level weight gives the same objective
        assert _loss(model, x) == pytest.approx(-(recon - beta * kl), rel=1e-5)
        model.beta = 1.0


def test_meanfield_respects_beta(ppca):
    model, x = ppca.mean_field_vae(), ppca.sample(10)
    elbo = make_estimator("meanfield", max_plate_nesting=1)
    with scale_latent_sites(0.0):
        zero_kl = [elbo.loss(model.model, model.guide, x) for _ in range(2)]
    full = elbo.loss(model.model, model.guide, x)
    assert full > min(zero_kl)   # adding the KL (>= 0) raises the loss


def test_warmup_schedule_and_history(binary_digits):
    assert [beta_schedule(2.0, 4, s) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert beta_schedule(2.0, 0, 0) == 2.0
    result = pv.fit(pv.VAE(64, 2, hidden=(16,)), binary_digits.train[:256], epochs=4,
                    batch_size=64, beta=1.0, beta_warmup_epochs=2, quiet=True)
    assert result.column("beta") == [0.5, 1.0, 1.0, 1.0]
