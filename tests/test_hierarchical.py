"""The hierarchical VAE against exact answers: a two-layer linear-Gaussian hierarchy has a
Gaussian marginal p(x), and with the exact guide every importance weight is p(x)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import pyro_vae as pv
from pyro_vae.inference import log_density_terms
from pyro_vae.runs import ConfigError, build_model, load_data
from pyro_vae.runs.config import resolve_config

X_DIM, LAYERS = 4, (3, 2)
S0, S1 = 0.5, 0.7                     # the noise of x | z1 and of z1 | z2


class LinearHierarchy:
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, S1^2 I), x | z1 ~ N(B z1 + b, S0^2 I), with A's
    and B's columns orthogonal, so that p(z1 | x) and p(z2 | z1) are diagonal Gaussians
    whose means are linear: a bottom-up guide of linear heads is exact."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        d = torch.float64
        self.A = torch.zeros(LAYERS[0], LAYERS[1], dtype=d)
        self.A[0, 0], self.A[1, 1] = 1.3, -0.8
        q, _ = torch.linalg.qr(torch.randn(X_DIM, LAYERS[0], generator=g, dtype=d))
        self.B = q * torch.tensor([1.5, 0.9, 2.0], dtype=d)
        self.a = torch.randn(LAYERS[0], generator=g, dtype=d)
        self.b = torch.randn(X_DIM, generator=g, dtype=d)

    def exact_log_prob(self, x):
        prior_cov = self.A @ self.A.T + S1 ** 2 * torch.eye(LAYERS[0], dtype=x.dtype)
        cov = self.B @ prior_cov @ self.B.T + S0 ** 2 * torch.eye(X_DIM, dtype=x.dtype)
        return torch.distributions.MultivariateNormal(self.B @ self.a + self.b, cov).log_prob(x)

    def sample(self, n: int, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        z2 = torch.randn(n, LAYERS[1], generator=g, dtype=torch.float64)
        z1 = z2 @ self.A.T + self.a + S1 * torch.randn(n, LAYERS[0], generator=g,
                                                         dtype=torch.float64)
        return z1 @ self.B.T + self.b + S0 * torch.randn(n, X_DIM, generator=g,
                                                         dtype=torch.float64)

    def model(self, guide: str = "bottom_up", exact: bool = True) -> pv.HierarchicalVAE:
        """The hierarchy as a HierarchicalVAE; with ``exact``, its guide is the posterior."""
        model = pv.HierarchicalVAE(X_DIM, LAYERS, hidden=(), guide=guide, likelihood="normal",
                                   likelihood_options={"sigma": S0}).double()
        with torch.no_grad():
            conditional = model.conditionals[0]
            conditional.loc_head.weight.copy_(self.A)
            conditional.loc_head.bias.copy_(self.a)
            conditional.logvar_head.weight.zero_()
            conditional.logvar_head.bias.fill_(math.log(S1 ** 2))
            decoder = model.decoder[-1]
            decoder.weight.copy_(self.B)
            decoder.bias.copy_(self.b)
            if exact:
                self._exact_guide(model)
        return model

    def _exact_guide(self, model):
        prior_precision = 1.0 / torch.diag(self.A @ self.A.T + S1 ** 2)
        precision1 = torch.diag(self.B.T @ self.B) / S0 ** 2 + prior_precision
        var1 = 1.0 / precision1                                  # p(z1 | x): diagonal
        first, second = model.encoders
        first.loc_head.weight.copy_(var1[:, None] * self.B.T / S0 ** 2)
        first.loc_head.bias.copy_(var1 * (-(self.B.T @ self.b) / S0 ** 2
                                          + prior_precision * self.a))
        first.logvar_head.weight.zero_()
        first.logvar_head.bias.copy_(var1.log())
        var2 = 1.0 / (torch.diag(self.A.T @ self.A) / S1 ** 2 + 1.0)   # p(z2 | z1)
        second.loc_head.weight.copy_(var2[:, None] * self.A.T / S1 ** 2)
        second.loc_head.bias.copy_(-var2 * (self.A.T @ self.a) / S1 ** 2)
        second.logvar_head.weight.zero_()
        second.logvar_head.bias.copy_(var2.log())


def test_exact_guide_gives_the_gaussian_marginal_to_float_error():
    hierarchy = LinearHierarchy()
    x = hierarchy.sample(30)
    model = hierarchy.model()
    exact = hierarchy.exact_log_prob(x)
    weights = log_density_terms(model, (x,), num_particles=7).log_weights
    torch.testing.assert_close(weights, exact.expand(7, -1), rtol=0, atol=1e-10)
    estimate = pv.log_likelihood(model, x, num_samples=20, seed=0)
    torch.testing.assert_close(estimate, exact, rtol=0, atol=1e-10)
    result = pv.evaluate(model, x, num_samples=20, elbo_particles=3)
    assert result.elbo == pytest.approx(exact.mean().item(), abs=1e-9)   # the bound is tight
    assert set(result.layers) == {"z1", "z2"}
    assert result.kl == pytest.approx(sum(layer["kl"] for layer in result.layers.values()),
                                      rel=0.2)


def _bounds(model, x, draws: int = 4000):
    """ELBO, IWAE_5, IWAE_50 per datapoint, from one set of (draws, N) log-weights."""
    pyro_seed = torch.random.get_rng_state()
    torch.manual_seed(0)
    w = log_density_terms(model, (x,), num_particles=draws).log_weights
    torch.random.set_rng_state(pyro_seed)

    def iwae(k):
        groups = w[: draws // k * k].reshape(draws // k, k, -1)
        return (torch.logsumexp(groups, 1) - math.log(k)).mean(0)
    return w.mean(0), iwae(5), iwae(50)


@pytest.mark.parametrize("guide", ["bottom_up", "top_down"])
def test_trained_guides_order_the_bounds_below_the_exact_log_likelihood(guide):
    hierarchy = LinearHierarchy()
    x = hierarchy.sample(200)
    torch.manual_seed(0)
    model = hierarchy.model(guide, exact=False)
    # the generative networks stay at the truth; only the guide learns
    for parameter in list(model.conditionals.parameters()) + list(model.decoder.parameters()):
        parameter.requires_grad_(False)
    pv.fit(model, x, estimator="iwae:k=5", epochs=150, batch_size=50, lr=2e-2, quiet=True)
    elbo, iwae5, iwae50 = (b.mean().item() for b in _bounds(model, x))
    exact = hierarchy.exact_log_prob(x).mean().item()
    slack = 0.02   # Monte Carlo error of the means over 4000 draws and 200 points
    assert elbo <= iwae5 + slack and iwae5 <= iwae50 + slack and iwae50 <= exact + slack
    assert exact - elbo < 0.5   # the guide learned something close to the posterior


@pytest.mark.parametrize("guide", ["bottom_up", "top_down"])
@pytest.mark.parametrize("estimator", ["elbo", "meanfield", "iwae:k=3", "renyi:alpha=0.5,k=3"])
def test_every_estimator_trains_it_compiled_with_the_eager_numbers(guide, estimator):
    x = (torch.rand(60, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.manual_seed(0)
    model = pv.HierarchicalVAE(12, (4, 2), hidden=(8,), guide=guide)
    eager_model = copy.deepcopy(model)
    settings = dict(epochs=2, batch_size=16, quiet=True, seed=1)
    auto = pv.fit(model, x, estimator=estimator, **settings)
    eager_spec = f"{estimator}{',' if ':' in estimator else ':'}jit=0"
    eager = pv.fit(eager_model, x, estimator=eager_spec, **settings)
    assert auto.settings["compiled"] and not eager.settings["compiled"]
    assert auto.column("loss") == eager.column("loss")
    for key, value in eager_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_layers_and_codes():
    model = pv.HierarchicalVAE(12, (4, 2), hidden=(8,), guide="top_down")
    x = torch.rand(5, 12).round()
    assert [m.shape for m in model.layer_means(x)] == [(5, 4), (5, 2)]
    assert model.encode(x).shape == (5, 4) and model.sample(3).shape == (3, 12)
    assert model.reconstruct(x).shape == (5, 12)
    with pytest.raises(ValueError, match="at least two stochastic layers"):
        pv.HierarchicalVAE(12, (4,))
    with pytest.raises(ValueError, match="hierarchical guide"):
        pv.HierarchicalVAE(12, (4, 2), guide="sideways")


def test_the_command_line_builds_it_and_refuses_a_one_layer_guide(tmp_path):
    config = resolve_config({"model": "hvae", "layers": [6, 3], "hidden": [16],
                             "hvae_guide": "top_down"})
    dataset = load_data(config)
    model = build_model(config, dataset)
    assert isinstance(model, pv.HierarchicalVAE) and model.layers == [6, 3]
    assert model.guide_path == "top_down" and model.encoders[0].loc_head.in_features == 16
    pv.save_model(model, tmp_path / "model.pt")
    loaded = pv.load_model(tmp_path / "model.pt")
    assert isinstance(loaded, pv.HierarchicalVAE) and loaded.layers == [6, 3]
    with pytest.raises(ConfigError, match="--hvae-guide"):
        build_model(resolve_config({"model": "hvae", "guide": "full_rank"}), dataset)
