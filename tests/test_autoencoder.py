"""The Delta guide: VAE(guide='delta', beta=0) is exactly a plain autoencoder, reported honestly."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method

import pyro_vae as pv
from pyro_vae.inference import PointMassGuideError, elbo_terms, make_estimator


@pytest.mark.parametrize("estimator", ["elbo", "meanfield", "elbo:k=3"])
def test_objective_is_the_reconstruction_log_likelihood(binary_digits, estimator):
    torch.manual_seed(0)
    model, x = pv.models.autoencoder(64, 3, hidden=(16,)), binary_digits.train[:50]
    codes = model.guide_family.loc_head(model.guide_family.encoder(x))
    exact = model.likelihood.distribution(model.decoder(codes)).log_prob(x).sum().item()
    elbo = make_estimator(estimator, max_plate_nesting=1)
    assert elbo.loss(model.model, model.guide, x) == pytest.approx(-exact, rel=1e-5)
    assert torch.allclose(model.encode(x), codes)


def test_evaluation_reports_what_a_point_mass_implies(binary_digits):
    model = pv.models.autoencoder(64, 2, hidden=(16,))
    pv.fit(model, binary_digits.train, epochs=2, quiet=True)
    terms = elbo_terms(model, binary_digits.test)
    assert torch.isinf(terms["kl"]).all() and (terms["kl"] > 0).all()
    assert torch.isinf(terms["elbo"]).all() and (terms["elbo"] < 0).all()
    assert torch.isfinite(terms["recon"]).all()
    with pytest.raises(PointMassGuideError, match="no density"):
        pv.log_likelihood(model, binary_digits.test, num_samples=4)
    with pytest.warns(UserWarning, match="reported as NaN"):
        metrics = pv.evaluate(model, binary_digits.test, num_samples=4)
    assert math.isnan(metrics.log_likelihood) and metrics.kl == math.inf
    assert metrics.recon == pytest.approx(terms["recon"].mean().item(), rel=1e-5)
    assert metrics.kl_per_dimension is None and len(metrics.unit_variances) == 2


def test_a_users_own_delta_guide_is_detected():
    class PointCode(PyroModule):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(3, 1)

        @pyro_method
        def model(self, x):
            with pyro.plate("data", len(x)):
                z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 1), 1.0).to_event(1))
                loc = z.expand(z.shape[:-1] + (3,))
                pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

        @pyro_method
        def guide(self, x):
            with pyro.plate("data", len(x)):
                pyro.sample("z", dist.Delta(self.encoder(x), event_dim=1))

    terms = elbo_terms(PointCode(), torch.randn(6, 3))
    assert torch.isinf(terms["kl"]).all()


def test_preset_and_saving(tmp_path):
    model = pv.models.autoencoder(10, 2, likelihood="normal", hidden=(8,))
    assert model.beta == 0.0 and isinstance(model.guide_family, pv.models.DeltaGuide)
    with pytest.raises(ValueError, match="fixes beta"):
        pv.models.autoencoder(10, 2, beta=1.0)
    path = pv.save_model(model, tmp_path / "ae.pt")
    loaded = pv.load_model(path)
    x = torch.randn(5, 10)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert loaded.config["guide"] == "delta"
