"""Gradient signal-to-noise: known answers on toy estimators, Rainforth et al.'s effect on PPCA."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from pyro_vae.inference.diagnostics import gradient_snr, parameter_groups


class TwoParameters(nn.Module):
    """Stands in for a model: gradient_snr only needs model/guide callables and parameters."""

    def __init__(self, size):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(size))
        self.b = nn.Parameter(torch.zeros(size))

    def model(self, x):
        pass

    def guide(self, x):
        pass


class GaussianGradients:
    """A toy estimator: every call sets grad = B * (mu + sigma * eps), eps ~ N(0, 1)
    elementwise, so the per-datapoint gradient has mean mu and standard deviation sigma."""

    def __init__(self, params, mus, sigmas):
        self.params, self.mus, self.sigmas = params, mus, sigmas

    def loss_and_grads(self, model, guide, x):
        for p, mu, sigma in zip(self.params, self.mus, self.sigmas, strict=True):
            p.grad = len(x) * (mu + sigma * torch.randn_like(p))
        return 0.0


def test_snr_of_a_toy_estimator_with_known_mean_and_variance():
    torch.manual_seed(0)
    size, draws, batch = 40, 1000, torch.zeros(4, 3)
    model = TwoParameters(size)
    mu_a, sigma_a = torch.linspace(-2, 2, size), torch.linspace(0.5, 2.0, size)
    mu_b, sigma_b = torch.full((size,), 3.0), torch.full((size,), 0.1)
    toy = GaussianGradients([model.a, model.b], [mu_a, mu_b], [sigma_a, sigma_b])
    result = gradient_snr(model, batch, [toy], num_draws=draws,
                          groups={"encoder": [model.a], "decoder": [model.b]})
    encoder, decoder = (result.get("GaussianGradients", g) for g in ("encoder", "decoder"))

    true_snr = (mu_a.abs() / sigma_a)
    # per element: sd of |mean|/std ~ sqrt(1/n + snr^2/(2n)); averaged over `size` elements
    per_element = torch.sqrt(1 / draws + true_snr ** 2 / (2 * draws))
    tolerance = 4 * per_element.pow(2).mean().sqrt().item() / math.sqrt(size)
    assert encoder.snr_mean == pytest.approx(true_snr.mean().item(), abs=tolerance)
    assert encoder.snr_median == pytest.approx(true_snr.median().item(), abs=0.3)
    # variance is of the per-datapoint gradient: sigma^2, with relative error sqrt(2/n)
    assert encoder.variance_mean == pytest.approx(
        sigma_a.pow(2).mean().item(), rel=4 * math.sqrt(2 / draws) / math.sqrt(size))
    assert decoder.snr_mean == pytest.approx(30.0, rel=4 * math.sqrt(0.5 / draws))
    assert decoder.snr_vector == pytest.approx(30.0, rel=4 * math.sqrt(0.5 / draws))
    assert encoder.num_elements == size and encoder.num_constant == 0
    assert encoder.num_draws == draws
    assert model.a.grad is None and model.b.grad is None   # restored as they were


def test_constant_gradient_elements_are_counted_and_left_out():
    model = TwoParameters(10)
    mu = torch.ones(10)
    sigma = torch.cat([torch.zeros(4), torch.ones(6)])
    toy = GaussianGradients([model.a, model.b], [mu, mu], [sigma, sigma])
    result = gradient_snr(model, torch.zeros(2, 1), [toy], num_draws=50,
                          groups={"a": [model.a]})
    stats = result.get("GaussianGradients", "a")
    assert stats.num_constant == 4
    assert torch.isnan(stats.snr[:4]).all() and torch.isfinite(stats.snr[4:]).all()
    assert math.isfinite(stats.snr_mean)


class ShiftModel(PyroModule):
    """z_n ~ N(0, 1), x_n ~ N(z_n, 1); guide z_n ~ N(m, 1) with one shared parameter m.
    Reparameterised, d/dm of -(log p(x,z) - log q(z)) per datapoint is 2m - x_n + 2 eps_n,
    so the batch-mean gradient with K particles has mean 2m - mean(x), sd 2 / sqrt(B K)."""

    def __init__(self, m):
        super().__init__()
        self.m = nn.Parameter(torch.tensor(float(m)))

    @pyro_method
    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.m.expand(len(x)), 1.0))


def test_snr_of_a_real_pyro_estimator_matches_its_closed_form():
    x = torch.linspace(-1, 1, 8)
    model = ShiftModel(m=0.3)
    result = gradient_snr(model, x, ["elbo", "elbo:k=4"], num_draws=1500,
                          groups={"m": [model.m]})
    mean = 2 * 0.3 - x.mean().item()
    for spec, k in (("elbo", 1), ("elbo:k=4", 4)):
        stats = result.get(spec, "m")
        sd = 2 / math.sqrt(len(x) * k)
        assert stats.variance_mean == pytest.approx(sd ** 2, rel=4 * math.sqrt(2 / 1500))
        expected = abs(mean) / sd
        tolerance = 4 * math.sqrt(1 / 1500 + expected ** 2 / 3000)
        assert stats.snr_mean == pytest.approx(expected, abs=tolerance)


def test_iwae_encoder_snr_falls_and_decoder_snr_rises_with_k(ppca):
    """Rainforth et al. (2018): encoder SNR ~ 1/sqrt(K), decoder SNR ~ sqrt(K)."""
    model, x = ppca.mean_field_vae(inflate=0.5), ppca.sample(32)
    result = gradient_snr(model, x, ["iwae:k=1", "iwae:k=5", "iwae:k=50"], num_draws=100)
    encoder = [result.get(e, "encoder").snr_mean for e in ("iwae:k=1", "iwae:k=5", "iwae:k=50")]
    decoder = [result.get(e, "decoder").snr_mean for e in ("iwae:k=1", "iwae:k=5", "iwae:k=50")]
    assert encoder[0] > encoder[1] > encoder[2] and encoder[2] < 0.6 * encoder[0], encoder
    assert decoder[0] < decoder[1] < decoder[2] and decoder[2] > 1.5 * decoder[0], decoder
    groups = parameter_groups(model)
    assert set(groups) == {"encoder", "decoder"}
    assert sum(p.numel() for p in groups["encoder"]) == sum(
        p.numel() for p in model.guide_family.parameters())
    assert sum(p.numel() for ps in groups.values() for p in ps) == sum(
        p.numel() for p in model.parameters())


def test_gradient_snr_leaves_parameters_unchanged(ppca):
    model, x = ppca.mean_field_vae(), ppca.sample(16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_snr(model, x, ["elbo", "iwae:k=5"], num_draws=5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_gradient_snr_rejects_bad_input(ppca):
    model, x = ppca.mean_field_vae(), ppca.sample(16)
    with pytest.raises(ValueError, match="num_draws must be an integer >= 2"):
        gradient_snr(model, x, ["elbo"], num_draws=1)
    with pytest.raises(ValueError, match="non-empty list"):
        gradient_snr(model, x, "elbo")
    with pytest.raises(ValueError, match="unknown estimator"):
        gradient_snr(model, x, ["iwea:k=5"])
    with pytest.raises(TypeError, match="fixed minibatch"):
        gradient_snr(model, "not data", ["elbo"])
    with pytest.raises(ValueError, match="both group"):
        gradient_snr(model, x, ["elbo"], groups={"a": model.guide_family, "b": model})
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(model, {"frozen": frozen})
