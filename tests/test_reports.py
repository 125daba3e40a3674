"""Comparison outputs on disk (CSV, JSON, markdown, figures) and the diagnostic figures."""

import csv
import json

import numpy as np
import pytest
from matplotlib.figure import Figure

import pyro_vae as pv
from pyro_vae.inference import compare, gradient_snr, psis_khat
from pyro_vae.plots.comparison import (
    plot_gradient_snr,
    plot_khat,
    plot_khat_by_estimator,
    plot_khat_results,
    plot_learning_curves,
)
from pyro_vae.studies.comparison import (
    comparison_markdown,
    gradient_snr_markdown,
    khat_markdown,
    model_filename,
    run_comparison,
    save_comparison,
)


@pytest.fixture(scope="module")
def small_comparison():
    d = pv.load_dataset("digits", binarize=True)
    return compare({"z_dim": 2, "hidden": [16]}, d.train[:256], d.test[:60],
                   ["elbo", "iwae:k=5"], seeds=[0, 1], epochs=2, batch_size=128,
                   eval_samples=20, elbo_particles=2, khat_samples=50, khat_points=20)


def test_save_comparison_writes_every_output_and_refuses_to_overwrite(small_comparison,
                                                                      tmp_path):
    files = save_comparison(small_comparison, tmp_path / "out")
    assert set(files) == {"summary_csv", "runs_csv", "curves_csv", "json", "markdown",
                          "curves_figure", "khat_figure"}
    assert all(path.stat().st_size > 0 for path in files.values())
    with open(files["summary_csv"]) as handle:
        summary = list(csv.DictReader(handle))
    assert [row["estimator"] for row in summary] == ["elbo", "iwae:k=5"]
    assert float(summary[0]["log_likelihood_mean"]) == pytest.approx(
        small_comparison.summary()[0]["log_likelihood_mean"])
    with open(files["runs_csv"]) as handle:
        assert len(list(csv.DictReader(handle))) == 4
    with open(files["curves_csv"]) as handle:
        assert len(list(csv.DictReader(handle))) == 8          # 4 runs x 2 epochs
    saved = json.loads(files["json"].read_text())
    assert saved["settings"]["eval_samples"] == 20 and len(saved["runs"]) == 4
    assert len(saved["runs"][0]["khat"]) == 20
    markdown = files["markdown"].read_text()
    assert "| elbo |" in markdown and "| iwae:k=5 |" in markdown and "K = 20" in markdown

    before = files["markdown"].read_text()
    with pytest.raises(FileExistsError, match="nothing was written"):
        save_comparison(small_comparison, tmp_path / "out")
    assert files["markdown"].read_text() == before
    save_comparison(small_comparison, tmp_path / "out", overwrite=True)


def test_comparison_markdown_shows_mean_and_spread(small_comparison):
    text = comparison_markdown(small_comparison)
    row = small_comparison.summary()[0]
    assert f"{row['log_likelihood_mean']:.2f} ± {row['log_likelihood_std']:.2f}" in text
    assert "seeds [0, 1]" in text and "2 epochs" in text


def test_run_comparison_loads_data_and_writes_a_directory(tmp_path):
    config = {"dataset_options": {"binarize": True}, "model": {"z_dim": 2, "hidden": [8]},
              "estimators": ["elbo", "meanfield"], "seeds": [0], "epochs": 1,
              "test_points": 30, "eval_samples": 10, "khat_samples": None,
              "save_models": True}
    result, files = run_comparison(config, tmp_path / "run")
    assert result.settings["num_test"] == 30 and result.settings["dataset"] == "digits"
    assert json.loads(files["config"].read_text())["estimators"] == ["elbo", "meanfield"]
    assert "khat_figure" not in files
    model = pv.load_model(files["model meanfield seed 0"])
    assert model.z_dim == 2 and model.config["likelihood"] == "bernoulli"
    with pytest.raises(FileExistsError):
        run_comparison(config, tmp_path / "run")
    with pytest.raises(ValueError, match="unknown comparison settings"):
        run_comparison({"epochs": 1, "estimator": "elbo"}, tmp_path / "other")
    with pytest.raises(ValueError, match="needs a budget"):
        run_comparison({}, tmp_path / "other")
    assert model_filename("renyi:alpha=0.5,k=5", 2) == "renyi_alpha-0.5_k-5_seed2.pt"


def test_figures(small_comparison, ppca):
    fig = plot_learning_curves(small_comparison)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 4                 # 2 estimators x 2 seeds
    with pytest.raises(KeyError, match="no 'val_elbo'"):
        plot_learning_curves(small_comparison, metric="val_elbo")
    assert len(plot_khat_by_estimator(small_comparison).axes[0].lines) == 2 + 2

    x = ppca.sample(40)
    khat = psis_khat(ppca.mean_field_vae(inflate=0.2), x, num_samples=100)
    fig = plot_khat(khat)
    assert "k-hat > 0.7" in fig.axes[0].get_title()
    assert len(plot_khat_results({"narrow": khat, "exact": psis_khat(
        ppca.exact_posterior_vae(), x, num_samples=100)}).axes) == 2
    plot_khat(np.array([-np.inf, 0.2, 0.9]))           # -inf is drawn at the floor

    snr = gradient_snr(ppca.mean_field_vae(), x, ["iwae:k=1", "iwae:k=5"], num_draws=5)
    fig = plot_gradient_snr(snr)
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].lines) == 4


def test_markdown_tables_for_diagnostics(ppca):
    x = ppca.sample(40)
    snr = gradient_snr(ppca.mean_field_vae(), x, ["elbo", "meanfield"], num_draws=5)
    text = gradient_snr_markdown(snr)
    assert text.count("| elbo | encoder |") == 1 and "| meanfield | decoder |" in text
    table = khat_markdown({"exact": psis_khat(ppca.exact_posterior_vae(), x, 100)})
    assert "| exact | 40 | 100 | 0.0% | 0.0% | 100.0% |" in table
