"""A seeded measurement fixes its own draws and leaves the caller's random streams alone:
after ``torch.manual_seed(12345); f(..., seed=0)`` the next ``torch.rand``, ``np.random`` and
``random`` draws are those the caller's seed gives, and the estimate does not depend on them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import pyro_vae as pv
from pyro_vae.inference.random_state import restores_random_state


@pytest.fixture(scope="module")
def fitted():
    data = pv.load_dataset("digits", binarize=True)
    torch.manual_seed(0)
    model = pv.VAE(data.x_dim, 2, hidden=[16])
    pv.fit(model, data.train[:128], epochs=1, batch_size=64, quiet=True)
    return model, data.test[:20], data.train[:40]


CALLS = {
    "log_likelihood": lambda m, x, t: pv.log_likelihood(m, x, num_samples=8, seed=0),
    "evaluate": lambda m, x, t: pv.evaluate(m, x, num_samples=8, elbo_particles=2,
                                            seed=0).log_likelihood,
    "psis_khat": lambda m, x, t: pv.psis_khat(m, x, num_samples=60, seed=0).khat.sum(),
    "importance_draws": lambda m, x, t: pv.inference.importance_draws(
        m, x, num_draws=8, seed=0).log_weights.sum(),
    "gradient_snr": lambda m, x, t: pv.gradient_snr(
        m, (x,), ["elbo"], num_draws=3, warmup_draws=0, seed=0).stats[0].snr_mean,
    "anomaly_scores": lambda m, x, t: pv.anomaly_scores(m, x, num_samples=4, seed=0).sum(),
    "anomaly_scores(elbo)": lambda m, x, t: pv.anomaly_scores(m, x, "elbo", num_samples=2,
                                                              seed=0).sum(),
    "hole_fractions": lambda m, x, t: pv.hole_fractions(
        m, t, x, num_draws=30, reference_draws=1, seed=0).latent["prior"].scores.sum(),
}


def _caller_draws(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _next_draws():
    return torch.rand(3), np.random.rand(2), random.random()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_seeded_measurements_leave_the_caller_state_alone(fitted, name):
    model, x, train = fitted
    _caller_draws(12345)
    expected = _next_draws()
    _caller_draws(12345)
    first = CALLS[name](model, x, train)
    after = _next_draws()
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1])
    assert after[2] == expected[2]
    _caller_draws(999)   # another caller state: the seeded estimate is the same
    again = CALLS[name](model, x, train)
    assert torch.equal(torch.as_tensor(first), torch.as_tensor(again))


def test_plots_with_a_seed_leave_the_caller_state_alone(fitted):
    model, x, _ = fitted
    _caller_draws(7)
    expected = _next_draws()
    _caller_draws(7)
    pv.plots.plot_samples(model, n=4, feature_shape=(1, 8, 8), seed=0)
    assert torch.equal(_next_draws()[0], expected[0])


def test_unseeded_calls_draw_from_the_caller_streams(fitted):
    model, x, _ = fitted
    _caller_draws(3)
    one = pv.log_likelihood(model, x, num_samples=8, seed=None)
    _caller_draws(3)
    two = pv.log_likelihood(model, x, num_samples=8, seed=None)
    assert torch.equal(one, two)   # the caller's seed decides
    three = pv.log_likelihood(model, x, num_samples=8, seed=None)
    assert not torch.equal(two, three)   # and the stream moves on


def test_the_state_is_restored_after_an_error():
    @restores_random_state
    def failing(seed=0):
        torch.manual_seed(seed)
        raise RuntimeError("boom")

    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with pytest.raises(RuntimeError):
        failing(seed=1)
    assert torch.equal(torch.rand(2), expected)
