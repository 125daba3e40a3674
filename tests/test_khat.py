"""PSIS k-hat of a guide: low for the exact posterior, high for a poor guide (PPCA)."""

import arviz as az
import numpy as np
import pytest
import torch
from conftest import PPCA, inverse_softplus

from pyro_vae.inference.diagnostics import (
    importance_log_weights,
    khat_from_log_weights,
    psis_khat,
)


def overdispersed_exact_guide(ppca: PPCA, scale: float):
    """The exact posterior with its covariance multiplied by scale^2 > 1: a guide with
    heavier tails than p(z|x), so the weights are bounded and k-hat is low (<= 0)."""
    model = ppca.exact_posterior_vae()
    guide = model.guide_family
    chol = scale * torch.linalg.cholesky(ppca.post_cov)
    with torch.no_grad():
        guide.diag_head.bias.copy_(inverse_softplus(torch.diagonal(chol) - 1e-5))
        guide.offdiag_head.bias.copy_(chol[guide._rows, guide._cols])
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_posterior_guide_has_low_khat(dtype):
    ppca = PPCA(dtype=dtype)
    x = ppca.sample(100)
    result = psis_khat(ppca.exact_posterior_vae(), x, num_samples=500)
    # every weight equals p(x) up to rounding: no tail at all
    assert result.khat.shape == (100,)
    assert result.fraction_good == 1.0 and result.fraction_bad == 0.0
    assert np.all(result.khat == -np.inf)


def test_overdispersed_exact_guide_has_low_fitted_khat(ppca):
    x = ppca.sample(100)
    result = psis_khat(overdispersed_exact_guide(ppca, 1.3), x, num_samples=1000)
    assert np.isfinite(result.khat).all()       # a real Pareto fit, not the tie shortcut
    assert result.fraction_good == 1.0
    assert np.median(result.khat) < 0.0


def test_too_narrow_guide_has_high_khat(ppca):
    """A diagonal guide with a tenth of the posterior variances: heavy-tailed weights."""
    x = ppca.sample(100)
    result = psis_khat(ppca.mean_field_vae(inflate=0.1), x, num_samples=1000)
    assert result.fraction_bad > 0.5
    assert np.median(result.khat) > 0.7
    summary = result.summary()
    assert summary["fraction_khat_above_0.7"] + summary["fraction_khat_0.5_to_0.7"] + summary[
        "fraction_khat_at_most_0.5"] == pytest.approx(1.0)
    assert summary["num_samples"] == 1000 and summary["num_datapoints"] == 100
    assert summary["sample_size_threshold"] == pytest.approx(1 - 1 / 3)


def test_khat_is_arviz_psislw_over_the_draws_of_each_datapoint(ppca):
    x = ppca.sample(20)
    log_w = importance_log_weights(ppca.mean_field_vae(inflate=0.5), x, 300, seed=1)
    assert log_w.shape == (300, 20)
    _, expected = az.psislw(log_w.double().numpy().T)
    np.testing.assert_allclose(khat_from_log_weights(log_w), expected)


def test_importance_log_weights_are_chunked_consistently(ppca):
    model, x = ppca.mean_field_vae(), ppca.sample(30)
    whole = importance_log_weights(model, x, 64, seed=3)
    chunked = importance_log_weights(model, x, 64, batch_size=7, particle_budget=70, seed=3)
    assert chunked.shape == whole.shape == (64, 30)
    # different chunking draws different particles; each datapoint's column still holds
    # that datapoint's weights (columns differ by several nats between datapoints)
    difference = chunked.mean(0) - whole.mean(0)
    standard_error = ((chunked.var(0) + whole.var(0)) / 64).sqrt()
    assert (difference.abs() < 4 * standard_error + 1e-6).all()
    assert whole.mean(0).std() > 10 * standard_error.max()


def test_khat_rejects_bad_log_weights():
    with pytest.raises(ValueError, match="at least 50 draws"):
        khat_from_log_weights(np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"shape \(K draws, N datapoints\)"):
        khat_from_log_weights(np.zeros(100))
    bad = np.zeros((100, 2))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        khat_from_log_weights(bad)
    with pytest.raises(ValueError, match="every weight is zero"):
        khat_from_log_weights(np.full((100, 2), -np.inf))
