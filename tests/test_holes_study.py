"""The study runners end to end at a tiny size: holes, posterior collapse, anomaly scores."""

import json
import math

import pytest
import torch

import pyro_vae as pv
from pyro_vae.studies.holes import HOLE_METRICS, METRICS, gaussian_kl, kl_check_table


def test_kl_check_table_agrees_with_the_closed_form():
    rows = kl_check_table(num_random=4, num_samples=50_000, seed=1)
    assert [(r["mu"], r["sigma"]) for r in rows[:5]] == [
        (0.0, 1.0), (2.0, 1.0), (0.0, 0.5), (1.5, 2.0), (3.0, 0.3)]
    assert len(rows) == 9 and {r["case"] for r in rows[5:]} == {"random"}
    for r in rows:
        exact = torch.distributions.kl_divergence(
            torch.distributions.Normal(torch.tensor(r["mu"]), torch.tensor(r["sigma"])),
            torch.distributions.Normal(0.0, 1.0)).item()
        assert r["closed_form"] == pytest.approx(exact, rel=1e-5, abs=1e-6)
        assert abs(r["z"]) < 5
    assert gaussian_kl(0.0, 1.0) == 0.0


def test_holes_study_runs_end_to_end(binary_digits, tmp_path):
    result = pv.run_holes_study(
        binary_digits, seeds=(0, 1), epochs=2, hidden=(16,), sweep_betas=(0.0, 1.0, 2.0),
        num_draws=200, kl_samples=5000, out_dir=tmp_path / "study")
    labels = ["AE", "beta=0", "beta=1", "beta=4"]
    assert [row["model"] for row in result.table] == labels
    assert len(result.runs) == 8 and [r["beta"] for r in result.sweep] == [0.0, 1.0, 2.0]
    for row in result.table:
        for metric in HOLE_METRICS:
            assert 0.0 <= row[metric] <= 1.0 and row[metric + "_sd"] >= 0.0
        assert row["num_seeds"] == 2
    ae = result.table[0]
    assert ae["kl"] == math.inf and math.isfinite(ae["recon_nll"])
    assert all(math.isfinite(row["kl"]) and row["kl"] >= 0 for row in result.table[1:])
    # the sweep reuses the study's fits where the beta matches
    first = [r for r in result.runs if r["model"] == "beta=1" and r["seed"] == 0][0]
    assert result.sweep[1]["kl"] == first["kl"]
    assert len(result.figure.axes) >= 8
    markdown = result.to_markdown()
    for text in labels + ["Monte Carlo", "constructed", "beta=0 -> beta=1: "]:
        assert text in markdown
    saved = json.loads((tmp_path / "study" / "holes_study.json").read_text())
    assert set(METRICS) <= set(saved["table"][0]) and saved["table"][0]["kl"] == "inf"
    assert (tmp_path / "study" / "holes_figure.png").stat().st_size > 10_000
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        result.save(tmp_path / "study")


def test_holes_study_rejects_bad_arguments(binary_digits):
    with pytest.raises(ValueError, match="seeds is empty"):
        pv.run_holes_study(binary_digits, seeds=())
    with pytest.raises(ValueError, match="betas"):
        pv.run_holes_study(binary_digits, betas=(-1.0,))
    with pytest.raises(TypeError, match="Dataset or a dataset name"):
        pv.run_holes_study(torch.zeros(3, 3))


def test_holes_study_on_gw():
    result = pv.run_holes_study("gw", seeds=(0,), epochs=1, hidden=(8,), sweep_betas=None,
                                num_draws=100, kl_samples=1000, figure=False)
    assert result.dataset == "gw" and len(result.table) == 4


def test_collapse_and_anomaly_studies_run(binary_digits):
    collapse = pv.run_collapse_study(binary_digits, z_dim=4, epochs=2, hidden=(16,),
                                     num_samples=20)
    assert [r["variant"] for r in collapse.rows] == ["plain", "annealed", "free bits"]
    assert all(len(r["kl_per_dimension"]) == 4 for r in collapse.rows)
    assert "free bits" in collapse.to_markdown() and len(collapse.figure.axes) == 3
    anomaly = pv.run_anomaly_study(binary_digits, holdout_label=0, z_dim=2, epochs=2,
                                   hidden=(16,), num_samples=20)
    assert set(anomaly.auc) == {"elbo", "log_likelihood", "recon"}
    assert all(0.0 <= v <= 1.0 for v in anomaly.auc.values())
    assert anomaly.settings["num_outliers"] == int((binary_digits.test_labels == 0).sum())
    with pytest.raises(ValueError, match="not a label"):
        pv.run_anomaly_study(binary_digits, holdout_label=42, epochs=1)


def test_class_sample_figure(binary_digits):
    model = pv.ConditionalVAE(64, 10, 2, hidden=(8,))
    assert len(pv.plot_class_samples(model, 3, feature_shape=(1, 8, 8)).axes) == 30
    tabular = pv.ConditionalVAE(5, 2, 2, likelihood="normal", hidden=(8,))
    x, c = torch.randn(10, 5), torch.arange(10) % 2
    assert len(pv.plot_class_samples(tabular, 4, data=(x, c)).axes) == 1


@pytest.mark.slow
def test_free_bits_restores_active_units(binary_digits):
    """With beta = 4 most of 16 latent dimensions collapse; free bits keep them in use."""
    result = pv.run_collapse_study(binary_digits, z_dim=16, beta=4.0, free_bits=0.5,
                                   epochs=60, num_samples=100, figure=False)
    units = {r["variant"]: r["active_units"] for r in result.rows}
    assert units["free bits"] >= units["plain"] + 4, units


def test_trend_calls_changes_against_the_seed_spread():
    from pyro_vae.studies.holes import HOLE_METRICS, HolesStudyResult

    def row(model, value, sd):
        out = {"model": model}
        for metric in HOLE_METRICS:
            out[metric], out[metric + "_sd"] = value, sd
        return out

    table = [row("AE", 0.50, 0.05), row("beta=0", 0.48, 0.05), row("beta=1", 0.10, 0.02),
             row("beta=4", 0.12, 0.02)]
    trend = HolesStudyResult("toy", table, [], [], [], [], {})\
        .trend()[HOLE_METRICS[0]]
    assert [s["direction"] for s in trend["steps"]] == ["falls", "flat"]
    assert trend["overall"]["direction"] == "falls"
    assert trend["ae_vs_beta0"]["direction"] == "flat"
    assert trend["steps"][0]["difference"] == pytest.approx(-0.38)
