"""Test 5: fitting on scikit-learn's digits lowers the loss and beats independent pixels."""

import pytest
import torch

import pyro_vae as pv


def independent_bernoulli_log_likelihood(train, test):
    """Per-datapoint log-likelihood of a per-pixel Bernoulli fitted to the training set."""
    p = (train.sum(0) + 1) / (len(train) + 2)
    return torch.distributions.Bernoulli(probs=p).log_prob(test).sum(1).mean().item()


@pytest.mark.parametrize("estimator", ["elbo", "iwae:k=5"])
def test_fit_beats_independent_pixels(binary_digits, estimator):
    d = binary_digits
    model = pv.VAE(d.x_dim, 8, hidden=(128,))
    result = pv.fit(model, d.train, estimator=estimator, epochs=40, batch_size=64, lr=3e-3,
                    seed=0, quiet=True, validation_data=d.validation)
    losses = result.column("loss")
    assert losses[-1] < losses[0] - 5
    assert len(result.history) == 40 and {"recon", "kl", "val_elbo", "seconds"} <= set(
        result.final)
    metrics = pv.evaluate(model, d.test, num_samples=500)
    baseline = independent_bernoulli_log_likelihood(d.train, d.test)
    assert metrics.log_likelihood > baseline + 5, (metrics.log_likelihood, baseline)
    assert metrics.elbo <= metrics.log_likelihood + 0.1
    assert metrics.active_units >= 2
    assert len(metrics.kl_per_dimension) == 8
    assert sum(metrics.kl_per_dimension) == pytest.approx(metrics.kl, rel=0.1)
