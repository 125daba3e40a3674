"""The Bayesian decoder: weights as global latent sites, counted once per pass over the data,
and a predictive log p(x) that treats q(W) honestly."""

from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch
from conftest import PPCA, IdentityEncoder
from pyro.infer import Predictive, Trace_ELBO
from pyro.poutine.messenger import Messenger

import pyro_vae as pv
from pyro_vae.inference.log_densities import unwrap_distribution


class FixedNoise(Messenger):
    """Reparameterised draws with given standard-normal noise: value = loc + scale * eps
    (the sites stay latent, unlike ``poutine.condition``)."""

    def __init__(self, noise: dict[str, torch.Tensor]):
        super().__init__()
        self.noise = noise

    def _pyro_sample(self, msg):
        if msg["name"] in self.noise and not msg["is_observed"]:
            base = unwrap_distribution(msg["fn"])
            msg["value"] = base.loc + base.scale * self.noise[msg["name"]]


def _linear_bayesian_decoder(ppca: PPCA, weight_scale: float) -> pv.BayesianDecoderVAE:
    """PPCA's decoder as the mean of q(W) (each entry's sd ``weight_scale``), and the guide
    q(z|x) set to PPCA's exact posterior for that mean decoder."""
    model = pv.BayesianDecoderVAE(
        ppca.x_dim, ppca.z_dim, hidden=(), likelihood="normal",
        likelihood_options={"sigma": ppca.sigma}, guide="full_rank",
        encoder=IdentityEncoder(ppca.x_dim), weight_init_scale=weight_scale).double()
    layer = model.decoder.layers[0]
    with torch.no_grad():
        layer.weight_loc.copy_(ppca.W)
        layer.bias_loc.copy_(ppca.b)
    ppca.set_exact_posterior(model.guide_family)
    return model


def test_log_likelihood_with_a_sharp_weight_posterior_is_the_gaussian_marginal():
    """q(W) nearly a point mass at PPCA's W and the exact z posterior: every importance
    weight is p(x | W) = N(x; b, W W^T + sigma^2 I); the global sites' densities (here
    log q(W) ~ +20 per entry) must not leak into the per-datapoint weights."""
    ppca = PPCA(dtype=torch.float64)
    x = ppca.sample(20)
    model = _linear_bayesian_decoder(ppca, weight_scale=1e-9)
    estimate = pv.log_likelihood(model, x, num_samples=50, seed=0)
    torch.testing.assert_close(estimate, ppca.exact_log_prob(x), atol=1e-6, rtol=0)


def test_log_likelihood_is_the_predictive_density_over_weight_draws():
    """With a broad q(W), log p(x) estimates log E_q(W) N(x; b_W, W W^T + sigma^2 I): checked
    against that expectation by direct Monte Carlo over decoders; the mean decoder's density
    is far away, so a fixed or averaged decoder would fail."""
    ppca = PPCA(dtype=torch.float64)
    x = ppca.sample(8)
    model = _linear_bayesian_decoder(ppca, weight_scale=0.2)
    pyro.set_rng_seed(1)
    draws = model.decoder_draws(40000)
    weights, biases = draws["decoder.layers.0.weight"], draws["decoder.layers.0.bias"]
    cov = weights @ weights.transpose(-1, -2) + ppca.sigma ** 2 * torch.eye(ppca.x_dim,
                                                                             dtype=x.dtype)
    densities = torch.distributions.MultivariateNormal(biases[:, None], cov[:, None]
                                                       ).log_prob(x)
    predictive = torch.logsumexp(densities, 0) - math.log(len(weights))
    estimate = pv.log_likelihood(model, x, num_samples=40000, seed=0)
    assert (estimate - predictive).abs().mean() < 0.03
    assert (predictive - ppca.exact_log_prob(x)).abs().mean() > 0.3   # measured 0.37


@pytest.mark.parametrize("batch_size", [1, 4, 8])
def test_weight_kl_is_counted_once_per_pass_whatever_the_batch_size(batch_size):
    """At fixed parameters and fixed noise (the same decoder draw and the same z noise per
    datapoint), the loss per datapoint averaged over one pass in minibatches equals the
    full-batch loss per datapoint to float64 rounding, and both equal the hand-computed
    -(sum_n [log p(x_n|z_n,W) + log p(z_n) - log q(z_n|x_n)] + log p(W) - log q(W)) / N."""
    n = 16
    torch.manual_seed(0)
    model = pv.BayesianDecoderVAE(6, 2, hidden=(5,), likelihood="normal",
                                  weight_init_scale=0.2).double()
    x = torch.randn(n, 6, dtype=torch.float64)
    weight_noise = {name: torch.randn(shape, dtype=torch.float64)
                    for name, shape in [(name, tuple(site.shape)) for name, site in
                                        model.decoder.posterior_means().items()]}
    z_noise = torch.randn(n, 2, dtype=torch.float64)
    elbo = Trace_ELBO()

    def loss(rows: slice) -> float:
        noise = {**weight_noise, "z": z_noise[rows]}
        return elbo.loss(model.model, FixedNoise(noise)(model.guide), x[rows], num_data=n)

    full = loss(slice(None)) / n
    passes = [loss(slice(start, start + batch_size)) / n for start in range(0, n, batch_size)]
    assert sum(passes) / len(passes) == pytest.approx(full, rel=1e-12, abs=1e-10)

    # the same number by hand, from one traced draw with that noise
    guide_trace = pyro.poutine.trace(FixedNoise({**weight_noise, "z": z_noise})(model.guide)
                                     ).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_trace)
                                     ).get_trace(x)
    weight_term = sum(model_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"])
                      - guide_trace.nodes[name]["fn"].log_prob(guide_trace.nodes[name]["value"])
                      for name in model.global_sites)
    local = (model_trace.nodes["x"]["fn"].log_prob(x).sum()
             + model_trace.nodes["z"]["fn"].log_prob(model_trace.nodes["z"]["value"]).sum()
             - guide_trace.nodes["z"]["fn"].log_prob(guide_trace.nodes["z"]["value"]).sum())
    assert full == pytest.approx(-(local + weight_term).item() / n, rel=1e-12)
    # a count per minibatch would be off by this much: far beyond rounding
    assert abs(weight_term.item()) * (1 / batch_size - 1 / n) > 1.0


def test_trains_compiled_and_eager_alike_and_evaluates(binary_digits, one_torch_thread):
    results = {}
    for jit in ("1", "0"):
        pyro.set_rng_seed(0)
        model = pv.BayesianDecoderVAE(64, 4, hidden=(32,), activation="tanh")
        fit = pv.fit(model, binary_digits.train[:256], estimator=f"elbo:jit={jit}", epochs=2,
                     batch_size=64, seed=0, quiet=True)
        results[jit] = (fit.history[-1]["loss"], [p.detach().clone()
                                                   for p in model.parameters()])
    assert results["1"][0] == results["0"][0]
    for compiled, eager in zip(results["1"][1], results["0"][1], strict=True):
        assert torch.equal(compiled, eager)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluation = pv.evaluate(model, binary_digits.test[:64], num_samples=200)
    assert not [w for w in caught if "requires_grad" in str(w.message)]
    assert evaluation.elbo <= evaluation.log_likelihood < 0
    assert math.isfinite(evaluation.kl) and evaluation.active_units is not None
    assert model.weight_kl().item() > 0


def test_meanfield_trains_and_iwae_refuses_with_a_clear_error(binary_digits, one_torch_thread):
    model = pv.BayesianDecoderVAE(64, 4, hidden=(16,))
    fit = pv.fit(model, binary_digits.train[:128], estimator="meanfield", epochs=1,
                 batch_size=64, quiet=True)
    assert math.isfinite(fit.history[-1]["loss"])
    with pytest.raises(ValueError, match="decoder.layers.0.weight.*'elbo' or\\s+'meanfield'"):
        pv.fit(model, binary_digits.train[:128], estimator="iwae:k=3", epochs=1,
               batch_size=64, quiet=True)


def test_samples_draw_decoders_as_well_as_codes():
    pyro.set_rng_seed(0)
    model = pv.BayesianDecoderVAE(10, 2, hidden=(8,), weight_init_scale=0.5)
    z = torch.zeros(1, 2)
    decoders = model.decoder_draws(6)
    means = model.decode(z, decoders)                    # (6, 1, 10): one z, six decoders
    assert means.shape == (6, 1, 10)
    assert means.std(0).min() > 0                          # the decoders disagree
    assert torch.equal(model.decode(z), model.decode(z))   # the mean decoder is deterministic
    assert model.sample(5).shape == (5, 10)
    assert model.sample(5, decoders=False).shape == (5, 10)
    assert set(model.sample_observations(torch.zeros(3, 2)).unique().tolist()) <= {0.0, 1.0}


def test_predictive_returns_weight_and_code_sites():
    model = pv.BayesianDecoderVAE(10, 2, hidden=(8,))
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    samples = Predictive(model.model, guide=model.guide, num_samples=3)(x)
    assert samples["z"].shape == (3, 4, 2)
    # global sites keep the size-1 dim of the data plate, as in any Pyro model
    assert samples["decoder.layers.0.weight"].shape == (3, 1, 8, 2)
    assert samples["decoder.layers.1.bias"].shape == (3, 1, 10)


def test_save_and_load_round_trip(tmp_path):
    model = pv.BayesianDecoderVAE(10, 2, hidden=(8,), weight_prior_scale=0.5,
                                  learn_weight_prior_scale=True)
    path = tmp_path / "model.pt"
    pv.save_model(model, path)
    loaded = pv.load_model(path)
    assert type(loaded) is pv.BayesianDecoderVAE
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match="weight_prior_scale must be a positive number"):
        pv.BayesianDecoderVAE(10, 2, weight_prior_scale=0.0)
    with pytest.raises(ValueError, match="weight_init_scale must be a positive number"):
        pv.BayesianDecoderVAE(10, 2, weight_init_scale=-1.0)


def test_the_command_line_builds_it_and_refuses_iwae_up_front():
    from pyro_vae.runs import ConfigError, build_model, load_data
    from pyro_vae.runs.config import resolve_config

    config = resolve_config({"model": "bayesian_decoder", "z_dim": 3, "hidden": [8],
                             "weight_prior_scale": 0.5})
    model = build_model(config, load_data(config))
    assert isinstance(model, pv.BayesianDecoderVAE)
    assert float(model.decoder.layers[0].prior_scale) == 0.5
    for spec in ("iwae:k=5", "renyi", "freebits"):
        bad = resolve_config({"model": "bayesian_decoder", "estimator": spec})
        with pytest.raises(ConfigError, match="--estimator elbo"):
            build_model(bad, load_data(bad))
