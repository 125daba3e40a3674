"""ArviZ InferenceData export: groups, shapes, netCDF round trip, ArviZ functions, SIR."""

import arviz as az
import matplotlib
import numpy as np
import pytest
import torch

from pyro_vae.arviz_export import save_inference_data, to_inference_data

matplotlib.use("Agg")


def test_inference_data_round_trips_through_netcdf(ppca, tmp_path):
    model, x = ppca.mean_field_vae(inflate=1.5), ppca.sample(50)
    idata = to_inference_data(model, x, indices=[4, 9, 31], num_draws=100, num_chains=3)
    path = save_inference_data(idata, tmp_path / "posterior.nc")
    back = az.from_netcdf(path)

    assert set(back.groups()) == {"posterior", "sample_stats", "observed_data",
                                  "posterior_predictive", "prior_predictive", "log_likelihood"}
    assert back.posterior_predictive["x"].dims == ("chain", "draw", "datapoint", "feature")
    assert back.posterior["z"].dims == ("chain", "draw", "datapoint", "z_dim")
    assert back.posterior["z"].shape == (3, 100, 3, ppca.z_dim)
    assert back.posterior["z_resampled"].shape == (3, 100, 3, ppca.z_dim)
    for name in ("log_weight", "log_p_x_given_z", "log_p_z", "log_q_z_given_x"):
        assert back.sample_stats[name].dims == ("chain", "draw", "datapoint"), name
    assert back.sample_stats["pareto_k"].dims == ("datapoint",)
    assert back.sample_stats["importance_ess"].shape == (3,)
    assert back.observed_data["x"].dims == ("datapoint", "feature")
    assert back.posterior.coords["datapoint"].values.tolist() == [4, 9, 31]
    np.testing.assert_allclose(back.observed_data["x"].values, x[[4, 9, 31]].numpy())
    np.testing.assert_allclose(back.posterior["z"].values, idata.posterior["z"].values)
    # the weights are those of the stored draws: log w = log p(x|z) + log p(z) - log q(z|x)
    stats = back.sample_stats
    np.testing.assert_allclose(stats["log_weight"], stats["log_p_x_given_z"] + stats["log_p_z"]
                               - stats["log_q_z_given_x"], rtol=1e-5, atol=1e-4)
    assert back.attrs["latent_site"] == "z"

    with pytest.raises(FileExistsError, match="already exists"):
        save_inference_data(idata, path)


@pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")  # inside arviz
def test_arviz_summary_ess_and_plot_posterior_work(ppca):
    idata = to_inference_data(ppca.mean_field_vae(), ppca.sample(10), indices=[0, 1],
                              num_draws=200)
    summary = az.summary(idata, var_names=["z"])
    assert len(summary) == 2 * ppca.z_dim
    assert np.allclose(summary["r_hat"], 1.0, atol=0.02)      # independent draws
    ess = az.ess(idata, var_names=["z"])["z"].values
    assert ess.shape == (2, ppca.z_dim) and (ess > 400).all()   # 800 independent draws
    axes = az.plot_posterior(idata, var_names=["z"], coords={"datapoint": [1]})
    assert np.asarray(axes).size == ppca.z_dim


def test_importance_resampling_moves_a_wide_guide_towards_the_exact_posterior(ppca):
    """A diagonal guide with 4x the posterior variances: its draws are too wide; resampled
    in proportion to the weights they have the exact posterior's mean and covariance."""
    x = ppca.sample(3)
    idata = to_inference_data(ppca.mean_field_vae(inflate=4.0), x, num_draws=2000,
                              num_chains=2, seed=1)
    exact_mean = (x - ppca.b) @ ppca.post_map.T
    exact_var = torch.diagonal(ppca.post_cov)
    for n in range(3):
        guide = idata.posterior["z"].values[:, :, n].reshape(-1, ppca.z_dim)
        resampled = idata.posterior["z_resampled"].values[:, :, n].reshape(-1, ppca.z_dim)
        assert np.all(np.isin(resampled, guide))         # resampling picks guide draws
        ess = idata.sample_stats["importance_ess"].values[n]
        standard_error = np.sqrt(exact_var.numpy() / ess)
        np.testing.assert_array_less(np.abs(resampled.mean(0) - exact_mean[n].numpy()),
                                     5 * standard_error)
        np.testing.assert_allclose(resampled.var(0), exact_var.numpy(), rtol=0.25)
        assert (guide.var(0) > 3 * exact_var.numpy()).all()


def test_export_rejects_bad_arguments(ppca, tmp_path):
    model, x = ppca.mean_field_vae(), ppca.sample(5)
    with pytest.raises(IndexError, match="outside the data's 5 datapoints"):
        to_inference_data(model, x, indices=[7])
    with pytest.raises(ValueError, match="distinct"):
        to_inference_data(model, x, indices=[1, 1])
    with pytest.raises(KeyError, match="no latent site 'w'"):
        to_inference_data(model, x, site="w", num_draws=10)
    with pytest.raises(ValueError, match="num_draws must be a positive integer"):
        to_inference_data(model, x, num_draws=0)
