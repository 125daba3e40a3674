"""Evaluation's fast paths give the slow paths' numbers: the summed Bernoulli and Normal event
densities against their formulas and Pyro's ``log_prob``, the automatic chunk size against
the old fixed one (within Monte Carlo error), and the validation policy of ``log_likelihood``
(one validated draw per datapoint, unvalidated chunks, a validated rerun on NaN)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

import pyro_vae as pv
from pyro_vae.inference import evaluation, log_likelihood
from pyro_vae.inference.batching import (
    CHUNK_NUMBERS,
    CHUNK_PAIRS,
    _chunking,
    automatic_particle_budget,
)
from pyro_vae.inference.log_densities import site_log_prob
from pyro_vae.models.likelihoods import (
    SOFTPLUS_BLOCK,
    bernoulli_log_density,
    normal_log_density,
    softplus_sum,
)


def float32_sum_tolerance(terms: torch.Tensor) -> torch.Tensor:
    """A few float32 units of a sum of ``terms`` along the last dim (rounding, not error)."""
    return 8 * 2.0 ** -23 * terms.abs().sum(-1) + 1e-6


def bernoulli_formula(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """sum_d x_d l_d - softplus(l_d) in float64, and the terms it sums."""
    terms = x.double() * logits.double() - F.softplus(logits.double())
    return terms.sum(-1), terms


@pytest.mark.parametrize("particles", [1, 3, 40])
def test_bernoulli_log_density_is_the_formula_and_pyros_log_prob(particles):
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((30, 300), 0.2), generator=g)
    logits = 6 * torch.randn(particles, 30, 300, generator=g)
    logits[0, 0, :5] = torch.tensor([-150.0, -60.0, 25.0, 95.0, 300.0])  # past 20 and 88
    fast = bernoulli_log_density(logits, x)
    exact, terms = bernoulli_formula(logits, x)
    assert fast.shape == (particles, 30)
    assert ((fast.double() - exact).abs() <= float32_sum_tolerance(terms)).all()
    pyros = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    assert ((fast - pyros).abs() <= float32_sum_tolerance(terms).float()).all()


def test_softplus_sum_in_blocks_is_the_sum_of_softplus():
    rows = 3 * (SOFTPLUS_BLOCK // 50) + 7          # several blocks and a ragged last one
    logits = 12 * torch.randn(rows, 50, generator=torch.Generator().manual_seed(1))
    logits[5, 3], logits[rows - 1, 0] = 120.0, -120.0
    terms = F.softplus(logits.double())
    summed = softplus_sum(logits)
    assert ((summed.double() - terms.sum(-1)).abs() <= float32_sum_tolerance(terms)).all()
    special = torch.tensor([[math.inf, 0.0], [-math.inf, 0.0], [math.nan, 0.0]])
    result = softplus_sum(special)
    assert result[0] == math.inf and result[1] == pytest.approx(math.log(2))
    assert math.isnan(result[2])


def test_softplus_sum_keeps_autograd():
    logits = torch.randn(4, 10, requires_grad=True)
    softplus_sum(logits).sum().backward()
    torch.testing.assert_close(logits.grad, torch.sigmoid(logits.detach()))


@pytest.mark.parametrize("scale_shape", [(7, 50), (1,)])
def test_normal_log_density_is_pyros_under_a_particles_plate(scale_shape):
    g = torch.Generator().manual_seed(2)
    loc = torch.randn(7, 50, generator=g)
    scale = torch.rand(scale_shape, generator=g) + 0.05
    fn = dist.Normal(loc, scale).to_event(1).expand([11, 7])   # as the plate broadcasts it
    value = fn.sample()
    fast = normal_log_density(value, fn.base_dist.loc, fn.base_dist.scale)
    standard = ((value.double() - loc.double()) / scale.double()) ** 2
    terms = (-0.5 * standard - torch.log(scale.double()).expand_as(standard)
             - 0.5 * math.log(2 * math.pi))
    exact, tolerance = terms.sum(-1), float32_sum_tolerance(terms)
    assert fast.shape == (11, 7)
    assert ((fast.double() - exact).abs() <= tolerance).all()
    assert ((fast - fn.log_prob(value)).abs() <= tolerance.float()).all()


def test_site_log_prob_leaves_other_distributions_to_their_own_log_prob():
    class Halved(dist.Bernoulli):
        def log_prob(self, value):
            return super().log_prob(value) / 2

    x = torch.ones(3, 4)
    site = {"fn": Halved(logits=torch.zeros(3, 4)).to_event(1), "value": x}
    assert torch.allclose(site_log_prob(site), 4 * math.log(0.5) / 2 * torch.ones(3))
    laplace = {"fn": dist.Laplace(torch.zeros(3, 4), 1.0).to_event(1), "value": x}
    torch.testing.assert_close(site_log_prob(laplace), laplace["fn"].log_prob(x))


def test_traced_vae_sites_give_pyros_log_prob(binary_digits):
    model = pv.VAE(64, 3, hidden=(16,)).eval()
    x = binary_digits.test[:20]
    with torch.no_grad(), pyro.plate("_particles", 6, dim=-2):
        guide = pyro.poutine.trace(model.guide).get_trace(x)
        trace = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide)).get_trace(x)
    sites = [s for tr in (guide, trace) for s in tr.nodes.values() if s["type"] == "sample"
             and not s["name"].startswith("_") and s["name"] != "data"]
    assert {s["name"] for s in sites} == {"z", "x"} and len(sites) == 3
    for site in sites:
        torch.testing.assert_close(site_log_prob(site), site["fn"].log_prob(site["value"]),
                                   atol=2e-4, rtol=1e-5)


# ---- chunk size ----------------------------------------------------------------------------
def test_automatic_chunk_follows_the_size_of_a_datapoint_and_the_device():
    low, high = CHUNK_PAIRS["cpu"]
    assert automatic_particle_budget((torch.zeros(2, 784),)) == CHUNK_NUMBERS["cpu"] // 784
    assert automatic_particle_budget((torch.zeros(2, 3072),)) == CHUNK_NUMBERS["cpu"] // 3072
    assert automatic_particle_budget((torch.zeros(2, 8),)) == high        # narrow data
    assert automatic_particle_budget((torch.zeros(2, 10 ** 6),)) == low   # very wide data
    labelled = (torch.zeros(2, 784), torch.zeros(2, dtype=torch.long))
    assert automatic_particle_budget(labelled) == CHUNK_NUMBERS["cpu"] // 785
    gpu = automatic_particle_budget((torch.zeros(2, 784, device="meta"),))
    assert gpu == CHUNK_NUMBERS["gpu"] // 784 > automatic_particle_budget((torch.zeros(2, 784),))


@pytest.mark.parametrize("x_dim, num_samples, n", [(64, 5000, 30), (64, 50, 300), (784, 5000, 3),
                                                   (784, 50, 500)])
def test_a_chunk_stays_within_the_automatic_budget(monkeypatch, x_dim, num_samples, n):
    model = pv.VAE(x_dim, 2, hidden=(8,)).eval()
    x = torch.bernoulli(torch.full((n, x_dim), 0.3))
    sizes = []
    original = evaluation._importance_chunk

    def recording(model, batch, k, *args):
        sizes.append((k, len(batch[0])))
        return original(model, batch, k, *args)

    monkeypatch.setattr(evaluation, "_importance_chunk", recording)
    with pyro.validation_enabled(False):
        estimate = log_likelihood(model, x, num_samples, seed=0)
    budget = automatic_particle_budget((x[:2],))
    assert estimate.shape == (n,) and torch.isfinite(estimate).all()
    assert max(k * b for k, b in sizes) <= budget
    assert sum(k * b for k, b in sizes) == n * num_samples   # every draw exactly once
    assert max(k * b for k, b in sizes) >= min(budget, n * num_samples) // 2   # and no tiny chunks


def test_chunking_keeps_pairs_within_any_budget():
    for n, k, budget in [(1, 5000, 4096), (1000, 50, 4096), (7, 64, 70), (10 ** 5, 5000, 5349)]:
        batch, chunk = _chunking(n, k, None, budget)
        assert batch * chunk <= max(budget, chunk) and 1 <= batch <= n and 1 <= chunk <= k


def test_the_encoder_runs_once_per_datapoint_and_chunk_not_per_particle(binary_digits):
    model = pv.VAE(64, 3, hidden=(16,)).eval()
    encoder_inputs, decoder_inputs = [], []
    model.guide_family.encoder.register_forward_hook(
        lambda module, args, out: encoder_inputs.append(tuple(args[0].shape)))
    model.decoder.register_forward_hook(
        lambda module, args, out: decoder_inputs.append(tuple(args[0].shape)))
    log_likelihood(model, binary_digits.test[:40], 300, particle_budget=4000, seed=0)
    assert all(len(shape) == 2 for shape in encoder_inputs)         # (datapoints, x_dim)
    assert (100, 40, 3) in decoder_inputs                          # (particles, datapoints, z)
    encoded_rows = sum(shape[0] for shape in encoder_inputs)
    assert encoded_rows < 40 * 300 / 50   # a few passes over 40 datapoints, not 12000 pairs


# ---- same numbers as before, within Monte Carlo error ----------------------------------------
def test_same_seed_same_numbers_and_the_old_chunking_agrees_within_mc_error(ppca):
    model, x = ppca.mean_field_vae(inflate=1.5), ppca.sample(150)
    default = log_likelihood(model, x, 2000, seed=0)
    assert torch.equal(default, log_likelihood(model, x, 2000, seed=0))
    assert not torch.equal(default, log_likelihood(model, x, 2000, seed=1))
    old = log_likelihood(model, x, 2000, particle_budget=2 ** 15, seed=0)   # the old default
    difference = default - old
    standard_error = difference.std() / math.sqrt(len(x))
    assert not torch.equal(default, old)   # other chunks, other draws
    assert difference.mean().abs() < 4 * standard_error + 1e-6
    exact = ppca.exact_log_prob(x)
    assert (default - exact).abs().mean() < 0.02 and (old - exact).abs().mean() < 0.02


def test_bernoulli_vae_agrees_with_the_old_chunking_within_mc_error(binary_digits):
    torch.manual_seed(0)
    model = pv.VAE(64, 4, hidden=(32,)).eval()
    x = binary_digits.test[:120]
    default = log_likelihood(model, x, 400, seed=0)
    old = log_likelihood(model, x, 400, particle_budget=2 ** 15, seed=0)
    difference = default - old
    assert difference.abs().max() > 0   # independent draws
    assert difference.mean().abs() < 4 * difference.std() / math.sqrt(len(x))


# ---- validation ------------------------------------------------------------------------------
def test_validation_does_not_change_the_numbers(binary_digits):
    model = pv.VAE(64, 3, hidden=(16,)).eval()
    x = binary_digits.test[:50]
    with pyro.validation_enabled(True):
        validated = log_likelihood(model, x, 200, particle_budget=1000, seed=4)
    with pyro.validation_enabled(False):
        unvalidated = log_likelihood(model, x, 200, particle_budget=1000, seed=4)
    assert torch.equal(validated, unvalidated)


def test_data_outside_the_support_is_still_refused_under_validation():
    model = pv.VAE(8, 2, hidden=(4,)).eval()
    x = torch.bernoulli(torch.full((300, 8), 0.5))
    x[257, 3] = 0.5                     # not binary, far from the first chunk
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        log_likelihood(model, x, 100, seed=0)


class NaNForManyParticles(torch.nn.Module):
    """A decoder whose outputs are NaN whenever it sees more than one particle."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z):
        theta = self.decoder(z)
        return theta * math.nan if z.dim() == 3 and z.shape[0] > 1 else theta


def test_a_nan_weight_reruns_validated_so_pyro_names_the_site():
    model = pv.VAE(8, 2, hidden=(4,)).eval()
    model.decoder = NaNForManyParticles(model.decoder)
    x = torch.bernoulli(torch.full((20, 8), 0.5))
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="logits"):
        log_likelihood(model, x, 10, seed=0)
    with pyro.validation_enabled(False):
        assert log_likelihood(model, x, 10, seed=0).isnan().all()
