"""Test 6: device-cleanliness. On CUDA (skipped without it) every tensor stays on the device;
without a GPU, the float64 proxy: model and data in float64 while the default dtype stays
float32, so any tensor built from defaults (the analogue of a stray CPU tensor) fails."""

import pytest
import torch

import pyro_vae as pv
from pyro_vae.inference import log_density_terms

COMBOS = [("normal", "bernoulli", "diagonal"), ("vamp", "bernoulli", "flow"),
          ("mixture", "continuous_bernoulli", "full_rank"), ("laplace", "normal_learned",
                                                             "diagonal"),
          ("student_t", "student_t", "diagonal"), ("learned_normal", "poisson", "diagonal"),
          ("normal", "negative_binomial", "full_rank"), ("normal", "laplace", "flow"),
          ("normal", "normal_per_feature", "diagonal")]


def _data(likelihood, n, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 16, generator=g, dtype=dtype)
    if likelihood == "bernoulli":
        x = (x > 0.5).to(dtype)
    elif likelihood in ("poisson", "negative_binomial"):
        x = (5 * x).round()
    return x.to(device)


def _fit_and_evaluate(prior, likelihood, guide, dtype, device, estimator="iwae:k=2"):
    model = pv.VAE(16, 3, prior=prior, likelihood=likelihood, guide=guide,
                   hidden=(8,)).to(dtype=dtype, device=device)
    x = _data(likelihood, 40, dtype, device)
    pv.fit(model, x, estimator=estimator, epochs=1, batch_size=16, quiet=True, device=device)
    result = pv.evaluate(model, x[:10], num_samples=20)
    terms = log_density_terms(model, (x[:5],), num_particles=3)
    return model, result, terms


@pytest.mark.parametrize("prior,likelihood,guide", COMBOS)
def test_float64_proxy(prior, likelihood, guide):
    assert torch.get_default_dtype() == torch.float32
    model, result, terms = _fit_and_evaluate(prior, likelihood, guide, torch.float64, "cpu")
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert terms.log_weights.dtype == torch.float64
    assert torch.isfinite(torch.tensor(result.log_likelihood))
    assert model.sample(4).dtype == torch.float64


@pytest.mark.parametrize("estimator", ["elbo", "meanfield", "renyi:alpha=0.5,k=3"])
def test_float64_proxy_estimators(estimator):
    _fit_and_evaluate("normal", "bernoulli", "diagonal", torch.float64, "cpu", estimator)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("prior,likelihood,guide", COMBOS)
def test_cuda_keeps_every_tensor_on_the_device(prior, likelihood, guide):
    model, result, terms = _fit_and_evaluate(prior, likelihood, guide, torch.float32, "cuda")
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert terms.log_weights.device.type == "cuda"
    assert model.sample(4).device.type == "cuda"
    assert result.per_datapoint["log_likelihood"].device.type == "cuda"


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available.*device='cpu'"):
        pv.fit(pv.VAE(4, 2), torch.zeros(8, 4), device="cuda", quiet=True)
