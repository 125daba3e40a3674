"""Hole-fraction measures on latent configurations whose answer is known by construction."""

import functools
import math

import pytest
import torch

import pyro_vae as pv
from pyro_vae.inference.metrics.holes import (
    aggregate_log_density,
    data_hole_fraction,
    hole_fractions,
    kernel_scales,
    latent_hole_fraction,
    matched_gaussian,
    naive_hole_fraction,
    nearest_negative_log_likelihood,
    scott_bandwidth,
)
from pyro_vae.studies.holes import constructed_cases

ALPHA = 0.05
# "no holes" means the fraction equals alpha up to Monte Carlo error: 4000 draws (sd 0.0034)
# and a threshold estimated from 2000 reference points (sd of its exceedance rate 0.0049)
NO_HOLES_TOLERANCE = 4 * math.hypot(0.0034, 0.0049)

CASES = {case.name: case for case in constructed_cases(seed=0)}


def _draws(case):
    if case.draws_from == "matched":
        torch.manual_seed(1)
        return matched_gaussian(case.locs, case.scales).sample((len(case.prior_draws),))
    return case.prior_draws


@functools.cache
def _fractions_of(name, threshold=0.5):
    return _fractions(CASES[name], threshold)


def _fractions(case, threshold=0.5):
    draws = _draws(case)
    latent = latent_hole_fraction(draws, case.locs, case.scales, case.reference, ALPHA)
    data = data_hole_fraction(case.decoder(draws), case.decoder(case.reference),
                              case.decoder(case.train_codes), ALPHA)
    naive = naive_hole_fraction(draws, case.locs, threshold)
    return latent.fraction, data.fraction, naive.fraction


@pytest.mark.parametrize("name", list(CASES))
def test_measures_give_the_known_answer(name):
    case = CASES[name]
    latent, data = _fractions_of(name)[:2]
    if case.expected == "none":
        assert latent == pytest.approx(ALPHA, abs=NO_HOLES_TOLERANCE)
        assert data == pytest.approx(ALPHA, abs=NO_HOLES_TOLERANCE)
    else:
        assert latent > 0.75 and data > 0.75


def test_naive_measure_is_fooled_by_shrunk_codes_with_matching_variances():
    """q(z) = N(0, I) = p(z) exactly, yet the nearest code mean is far from most prior draws."""
    latent, data, naive = _fractions_of("shrunk codes, matching variances")
    assert latent < ALPHA + NO_HOLES_TOLERANCE and data < ALPHA + NO_HOLES_TOLERANCE
    assert naive > 0.5


def test_naive_measure_depends_on_the_latent_scale():
    covered, rescaled = _fractions_of("covered"), _fractions_of("covered, all rescaled x10")
    assert abs(covered[2] - rescaled[2]) > 0.3
    for i in (0, 1):
        assert abs(covered[i] - rescaled[i]) < 2 * NO_HOLES_TOLERANCE


def test_latent_and_data_measures_are_exactly_invariant_to_rescaling_everything():
    case = CASES["clusters with gaps"]
    for c in (0.1, 7.0):
        scaled = latent_hole_fraction(c * case.prior_draws, c * case.locs, c * case.scales,
                                      c * case.reference, ALPHA)
        original = latent_hole_fraction(case.prior_draws, case.locs, case.scales,
                                        case.reference, ALPHA)
        assert torch.equal(scaled.is_hole, original.is_hole)
        assert scaled.threshold == pytest.approx(original.threshold + 2 * math.log(c), abs=1e-9)
        shifted = latent_hole_fraction(case.prior_draws + 3, case.locs + 3, case.scales,
                                       case.reference + 3, ALPHA)
        assert torch.equal(shifted.is_hole, original.is_hole)


def test_aggregate_density_is_the_mixture_density():
    locs = torch.tensor([[0.0, 0.0], [2.0, -1.0]], dtype=torch.float64)
    scales = torch.tensor([[1.0, 0.5], [0.3, 2.0]], dtype=torch.float64)
    z = torch.randn(7, 2, dtype=torch.float64)
    expected = torch.stack([torch.distributions.Normal(locs[n], scales[n]).log_prob(z).sum(-1)
                            for n in range(2)]).exp().mean(0).log()
    assert torch.allclose(aggregate_log_density(z, locs, scales, chunk_elements=3), expected)


def test_kernel_floor_and_bandwidth():
    locs = torch.randn(500, 3, dtype=torch.float64)
    h = scott_bandwidth(locs)
    assert torch.allclose(h, locs.std(0) * 500 ** (-1 / 7))
    point_masses = torch.zeros_like(locs)
    assert torch.allclose(kernel_scales(locs, point_masses), h.expand_as(locs))
    wide = torch.full_like(locs, 5.0)
    assert torch.equal(kernel_scales(locs, wide), wide)       # wider encoders are kept as is
    with pytest.raises(ValueError, match="point mass has no density"):
        kernel_scales(locs, point_masses, bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth must be"):
        kernel_scales(locs, point_masses, bandwidth="silverman")


def test_matched_gaussian_has_the_aggregate_moments():
    locs = torch.randn(20000, 2, dtype=torch.float64) @ torch.tensor(
        [[2.0, 0.0], [1.0, 0.5]], dtype=torch.float64) + 1.0
    scales = torch.full_like(locs, 0.3)
    gaussian = matched_gaussian(locs, scales)
    z = locs + scales * torch.randn_like(locs)    # draws from the aggregate posterior
    assert torch.allclose(gaussian.mean, z.mean(0), atol=0.05)
    assert torch.allclose(gaussian.covariance_matrix, torch.cov(z.T), atol=0.1)


def test_bad_inputs_are_reported():
    locs = torch.randn(10, 2)
    with pytest.raises(ValueError, match="alpha"):
        latent_hole_fraction(locs, locs, locs.abs(), locs, alpha=1.5)
    with pytest.raises(ValueError, match="dimension 3 but the codes have 2"):
        latent_hole_fraction(torch.randn(5, 3), locs, locs.abs(), locs)
    with pytest.raises(ValueError, match="shape"):
        data_hole_fraction(torch.randn(5), locs, locs)


def _shrunk_copy(model, c):
    """The same autoencoding map with every code multiplied by c and the decoder compensating:
    mu -> c mu, sigma -> c sigma, f -> f(. / c); the prior stays N(0, I)."""
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.guide_family.loc_head.weight.mul_(c)
        other.guide_family.loc_head.bias.mul_(c)
        other.guide_family.logvar_head.bias.add_(2 * math.log(c))
        other.decoder[0].weight.div_(c)
    return other


def test_shrinking_codes_with_a_compensating_decoder(binary_digits):
    """The lead's invariance: what the decoder produces for data is unchanged, and so is every
    matched-draw fraction; prior draws now decode differently, so their fractions change."""
    torch.manual_seed(0)
    model = pv.VAE(64, 2, hidden=(32,))
    pv.fit(model, binary_digits.train, epochs=3, quiet=True)
    shrunk = _shrunk_copy(model, 0.2)
    x = binary_digits.test
    assert torch.allclose(model.reconstruct(x), shrunk.reconstruct(x), atol=1e-5)
    kwargs = {"num_draws": 1000, "seed": 3}
    before = hole_fractions(model, binary_digits.train, x, **kwargs).summary()
    after = hole_fractions(shrunk, binary_digits.train, x, **kwargs).summary()
    for key in ("latent_matched", "data_matched"):
        assert after[key] == pytest.approx(before[key], abs=0.003)
    assert after["latent_prior"] > before["latent_prior"] + 0.2
    assert abs(after["naive_matched"] - before["naive_matched"]) > 0.2


@pytest.mark.parametrize("likelihood", ["bernoulli", "normal_per_feature", "laplace"])
def test_nearest_negative_log_likelihood_matches_brute_force(likelihood):
    torch.manual_seed(0)
    model = pv.VAE(6, 2, likelihood=likelihood, hidden=(8,))
    train = (torch.rand(30, 6) > 0.5).float() if likelihood == "bernoulli" else torch.randn(30, 6)
    z = torch.randn(7, 2)
    theta = model.decoder(z)
    brute = torch.stack([-model.likelihood.distribution(theta[m]).log_prob(train).max()
                         for m in range(len(z))])
    fast = nearest_negative_log_likelihood(model, z, train)
    assert torch.allclose(fast, brute, rtol=1e-5, atol=1e-4)
