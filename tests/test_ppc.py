"""Posterior predictive checks: the InferenceData groups ArviZ expects, and a check that
catches a wrong likelihood."""

from __future__ import annotations

import arviz as az
import matplotlib
import pytest
import torch

import pyro_vae as pv
from pyro_vae.plots import plot_ppc, ppc_statistics

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def digits():
    return pv.load_dataset("digits", binarize=True)


def fitted(digits, likelihood: str):
    torch.manual_seed(0)
    model = pv.VAE(64, 4, hidden=(64,), likelihood=likelihood)
    pv.fit(model, digits.train, epochs=20, quiet=True)
    return model


def test_inference_data_has_the_predictive_groups_arviz_uses(digits):
    model = fitted(digits, "bernoulli")
    idata = pv.to_inference_data(model, digits.test, num_draws=30, num_chains=2)
    assert {"posterior", "posterior_predictive", "prior_predictive", "log_likelihood",
            "observed_data", "sample_stats"} <= set(idata.groups())
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "datapoint", "feature")
    assert idata.prior_predictive["x"].shape == (2, 30, 10, 64)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "datapoint")
    # the log-likelihood group is the sample_stats' log p(x|z), per draw and datapoint
    assert (idata.log_likelihood["x"].values == idata.sample_stats["log_p_x_given_z"].values
            ).all()
    replicated = idata.posterior_predictive["x"].values
    assert set(replicated.flatten().tolist()) <= {0.0, 1.0}
    az.plot_ppc(idata, num_pp_samples=10)
    az.plot_ppc(idata, group="prior", num_pp_samples=10)
    assert len(az.summary(idata, var_names=["z"])) == 10 * 4


def test_the_check_catches_a_wrong_likelihood(digits):
    """Binary digits: a Normal likelihood with sigma = 1 replicates data about 8 times as
    variable as the data; the Bernoulli's replicates are within 10% of it."""
    ratios, p_values = {}, {}
    for likelihood in ("normal", "bernoulli"):
        idata = pv.to_inference_data(fitted(digits, likelihood), digits.test,
                                     indices=range(200), num_draws=50, num_chains=2)
        stats = ppc_statistics(idata)
        ratios[likelihood] = stats.replicated_statistic.mean() / stats.observed_statistic
        p_values[likelihood] = stats.p_value
        figure = plot_ppc(idata)
        assert f"p = {stats.p_value:.3f}" in figure.axes[2].get_title()
    assert ratios["normal"] > 3 and p_values["normal"] == 1.0
    assert abs(ratios["bernoulli"] - 1) < 0.1


def test_a_missing_group_is_a_clear_error(digits):
    model = fitted(digits, "bernoulli")
    idata = pv.to_inference_data(model, digits.test, num_draws=5, num_chains=1,
                                 predictive=False)
    with pytest.raises(ValueError, match="no 'posterior_predictive' group"):
        ppc_statistics(idata)

