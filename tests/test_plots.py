"""Figures: every plot returns a Figure for image and tabular data, without training."""

import matplotlib
import numpy as np
import pyro
import pytest
import torch
from matplotlib.figure import Figure

import pyro_vae as pv
from pyro_vae import plots
from pyro_vae.runs import read_history, write_history


@pytest.fixture(scope="module")
def digits():
    return pv.load_dataset("digits", binarize="threshold")


@pytest.fixture(scope="module")
def gw():
    return pv.load_dataset("gw", num_events=300)


def small_vae(x_dim, z_dim, likelihood="bernoulli"):
    pyro.set_rng_seed(0)
    return pv.VAE(x_dim, z_dim, likelihood=likelihood, hidden=(16,))


def titles(fig):
    return " ".join(ax.get_title() for ax in fig.axes) + (
        fig._suptitle.get_text() if fig._suptitle else "")


def test_standard_figures_images_and_tables(digits, gw, tmp_path):
    for data, likelihood in ((digits, "bernoulli"), (gw, "normal_per_feature")):
        model = small_vae(data.x_dim, 3, likelihood)
        history = [{"epoch": 1, "loss": 30.0, "elbo": -29.0, "recon": -28.0, "kl": 1.0},
                   {"epoch": 2, "loss": 25.0, "elbo": -24.0, "recon": -22.0, "kl": 2.0}]
        figures = plots.standard_figures(model, data, history)
        assert set(figures) == {"training_curves", "samples", "reconstructions",
                                "latent_space", "latent_traversal", "interpolation"}
        assert all(isinstance(f, Figure) for f in figures.values())
        paths = plots.save_figures(figures, tmp_path / data.name)
        for path in paths:
            assert matplotlib.image.imread(path).shape[2] in (3, 4)
    assert "x ~ p(x|z)" in titles(figures["samples"])                 # tabular: pair plot
    assert "log_chirp_mass" in [ax.get_xlabel() for ax in figures["samples"].axes]


def test_training_curves_from_history_csv(tmp_path):
    records = [{"epoch": e, "loss": 10.0 / e, "elbo": -9.0 / e, "recon": -8.0, "kl": 1.0,
                "val_elbo": -9.5 / e, "val_recon": -8.5, "val_kl": 1.0} for e in (1, 2, 3)]
    records[-1]["partial_epoch"] = True
    write_history(tmp_path / "h.csv", records)
    back = read_history(tmp_path / "h.csv")
    assert back[0]["partial_epoch"] is None and back[-1]["partial_epoch"] is True
    assert back[1]["epoch"] == 2 and back[1]["loss"] == 5.0
    fig = plots.plot_training_curves(back)
    assert [ax.get_title() for ax in fig.axes] == ["total", "reconstruction", "KL"]
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3                                 # objective, train, validation
    np.testing.assert_allclose(lines[1].get_ydata(), [-9.0, -4.5, -3.0])
    with pytest.raises(ValueError, match="history is empty"):
        plots.plot_training_curves([])


@pytest.mark.parametrize("z_dim,xlabel", [(1, "z"), (2, "z1"), (5, "PC1")])
def test_latent_space_dimensions(digits, z_dim, xlabel):
    model = small_vae(64, z_dim)
    fig = plots.plot_latent_space(model, digits.test, digits.test_labels,
                                  digits.info["label_names"])
    assert fig.axes[0].get_xlabel().startswith(xlabel)
    legend = fig.axes[0].get_legend()
    assert legend is not None and len(legend.get_texts()) == 10


def test_most_active_dimensions_rank_by_posterior_variance(digits):
    model = small_vae(64, 6)
    with torch.no_grad():                                  # make dimension 4 dominate
        model.guide_family.loc_head.weight[4] *= 20
    dims, z = plots.most_active_dimensions(model, digits.test, num_dims=3)
    variances = model.encode(digits.test).var(0)
    assert dims == torch.argsort(variances, descending=True)[:3].tolist() and dims[0] == 4
    fig = plots.plot_latent_traversal(model, digits.test, num_dims=3, steps=5,
                                      feature_shape=(1, 8, 8))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "z5"


def test_plots_follow_the_model_dtype(digits):
    """Float64 model, float32 inputs, default dtype float32: inputs are moved to the model."""
    model = small_vae(64, 2).double()
    x = digits.test[:6]
    for fig in (plots.plot_reconstructions(model, x, (1, 8, 8)),
                plots.plot_interpolation(model, x[:3], x[3:], 4, (1, 8, 8)),
                plots.plot_samples(model, 9, (1, 8, 8)),
                plots.plot_latent_traversal(model, x, 2, 3, (1, 8, 8))):
        assert isinstance(fig, Figure)
