"""A user-written Pyro model/guide pair works with everything in inference/."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

import pyro_vae as pv


class CountVAE(PyroModule):
    """A hand-written count-data VAE, no pyro_vae.models involved, no num_data keyword."""

    def __init__(self, x_dim=6, z_dim=2):
        super().__init__()
        self.z_dim = z_dim
        self.decoder = nn.Linear(z_dim, x_dim)
        self.encoder = nn.Linear(x_dim, 2 * z_dim)
        self.raw_dispersion = nn.Parameter(torch.zeros(x_dim))

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            total = nn.functional.softplus(self.raw_dispersion) + 1e-3
            pyro.sample("x", dist.NegativeBinomial(total, logits=self.decoder(z)).to_event(1),
                        obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(torch.log1p(x)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


@pytest.mark.parametrize("estimator", ["elbo", "meanfield", "iwae:k=4"])
def test_user_model_fits_and_evaluates(estimator):
    torch.manual_seed(0)
    x = torch.poisson(3 * torch.rand(200, 6))
    model = CountVAE()
    result = pv.fit(model, x, estimator=estimator, epochs=30, batch_size=50, lr=1e-2,
                    quiet=True)
    assert result.settings["minibatch_scaled"] is False
    assert result.column("loss")[-1] < result.column("loss")[0]
    metrics = pv.evaluate(model, x, num_samples=200)
    assert metrics.elbo <= metrics.log_likelihood + 0.05
    assert metrics.kl_per_dimension is not None and len(metrics.kl_per_dimension) == 2


def test_global_latent_is_reported_clearly():
    class Global(PyroModule):
        @pyro_method
        def model(self, x):
            mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

        @pyro_method
        def guide(self, x):
            pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(pv.inference.NotPerDatapointError, match="'mu' is not inside"):
        pv.log_likelihood(Global(), torch.zeros(4), num_samples=3)
