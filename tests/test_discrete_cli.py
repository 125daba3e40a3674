"""``pyro-vae train --model gmvae|m2|categorical --discrete ... --baseline ... --labels N``."""

import json

import matplotlib.image
import pytest

import pyro_vae as pv
from pyro_vae.cli import main
from pyro_vae.runs import build_model, load_data
from pyro_vae.runs.config import tomllib

FAST = ["--epochs", "1", "--hidden", "16", "--batch-size", "128", "--eval-samples", "10",
        "--quiet", "--device", "cpu", "--z-dim", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_m2_run_hides_labels_trains_with_score_avg_and_reports_accuracy(tmp_path, capsys):
    out = tmp_path / "m2"
    code = main(["train", *FAST, "--model", "m2", "--labels", "30", "--discrete", "score",
                 "--baseline", "avg", "--no-figures", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "classification accuracy" in printed
    config = tomllib.loads((out / "config.toml").read_text())
    assert (config["model"], config["labels"], config["discrete"], config["baseline"]) == (
        "m2", 30, "score", "avg")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["estimator"] == "score:baseline=avg,decay=0.9,k=1"
    test = metrics["test"]
    assert test["accuracy_kind"] == "classification" and 0 <= test["accuracy"] <= 1
    assert test["discrete_sites"] == {"y": "summed exactly"}
    assert test["elbo"] <= test["log_likelihood"] + 1.0
    model = pv.load_model(out / "model.pt")
    assert isinstance(model, pv.SemiSupervisedVAE) and model.num_classes == 10
    # the other subcommands work on a discrete model's run
    assert main(["evaluate", str(out), "-k", "5", "--split", "validation"]) == 0
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert validation["accuracy_kind"] == "classification" and validation["num_samples"] == 5
    assert main(["sample", str(out), "-n", "4"]) == 0
    assert main(["reconstruct", str(out), "-n", "4"]) == 0
    assert (out / "samples-n4-seed0.npz").is_file()


def test_gmvae_and_categorical_runs_pick_their_estimators(tmp_path, capsys):
    gw = tmp_path / "gmvae"
    assert main(["train", *FAST, "--model", "gmvae", "--dataset", "gw", "--no-figures",
                 "--out", str(gw)]) == 0
    metrics = json.loads((gw / "metrics.json").read_text())
    assert metrics["training"]["estimator"] == "enum:k=1"          # auto: 3 components
    assert metrics["test"]["accuracy_kind"] == "clustering"
    assert pv.load_model(gw / "model.pt").num_components == 3     # gw has 3 populations
    cat = tmp_path / "categorical"
    assert main(["train", *FAST, "--model", "categorical", "--no-figures", "--out", str(cat)
                 ]) == 0
    metrics = json.loads((cat / "metrics.json").read_text())
    assert metrics["training"]["estimator"].startswith("relaxed")   # auto: 10^20 configurations
    assert metrics["test"]["accuracy"] is None
    assert set(metrics["test"]["discrete_sites"]) == {f"y{i}" for i in range(20)}
    small = tmp_path / "small"
    assert main(["train", *FAST, "--model", "categorical", "--num-latents", "2",
                 "--num-classes", "3", "--no-figures", "--out", str(small)]) == 0
    metrics = json.loads((small / "metrics.json").read_text())
    assert metrics["training"]["estimator"] == "enum:k=1"
    assert metrics["test"]["discrete_sites"] == {"y0": "summed exactly",
                                                 "y1": "summed exactly"}


@pytest.mark.parametrize("flags, message", [
    (["--model", "vae", "--discrete", "score"], "apply to the discrete-latent models"),
    (["--model", "gmvae", "--estimator", "iwae:k=5"], "not --estimator"),
    (["--model", "gmvae", "--baseline", "nn"], "use it with --discrete score"),
    (["--model", "m2", "--discrete", "score:baseline=nn", "--baseline", "avg"],
     "contradicts the spec"),
    (["--model", "gmvae", "--discrete", "iwae"], "must be auto or one of"),
    (["--model", "gmvae", "--prior", "vamp"], "own prior"),
    (["--model", "categorical", "--guide", "flow"], "no continuous latent"),
    (["--model", "categorical", "--discrete", "enum"], "use --discrete score or relaxed"),
    (["--model", "m2", "--labels", "5"], "cannot cover the 10 classes"),
    (["--model", "m2", "--dataset", "gw", "--num-classes", "2"], "num_classes >= 3"),
    (["--model", "gmvae", "--baseline", "mean"], "unknown baseline"),
])
def test_bad_discrete_flags_are_one_line_errors_and_write_nothing(flags, message, tmp_path,
                                                                  capsys):
    out = tmp_path / "run"
    assert main(["train", *FAST, *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_runs_add_a_samples_per_class_figure(tmp_path, monkeypatch):
    """write_figures adds class_samples (samples per cluster / class) for models with a
    discrete site y; the standard figures are stubbed out here (tested elsewhere)."""
    import pyro_vae.plots
    from pyro_vae.runs import write_figures

    monkeypatch.setattr(pyro_vae.plots, "standard_figures", lambda *args, **kwargs: {})
    config = pv.resolve_config({"model": "gmvae", "dataset": "gw", "hidden": [8]})
    dataset = load_data(config)
    paths = write_figures(build_model(config, dataset), dataset, None, tmp_path)
    assert [p.name for p in paths] == ["class_samples.png"]
    image = matplotlib.image.imread(paths[0])
    assert min(image.shape[:2]) > 100
    config = pv.resolve_config({"model": "categorical", "hidden": [8]})
    assert write_figures(build_model(config, load_data(config)), load_data(config), None,
                         tmp_path / "none") == []


def test_vae_defaults_are_unchanged():
    config = pv.resolve_config({})
    assert (config["model"], config["estimator"], config["discrete"], config["baseline"]) == (
        "vae", "elbo", "auto", "none")
    dataset = load_data(config)
    assert type(build_model(config, dataset)) is pv.VAE


def test_m2_history_tracks_accuracy_and_keeps_the_best_validation_model(tmp_path):
    out = tmp_path / "m2"
    assert main(["train", *FAST, "--epochs", "3", "--model", "m2", "--labels", "30",
                 "--discrete", "enum", "--alpha", "0.2", "--no-figures", "--out",
                 str(out)]) == 0
    run = pv.open_run(out)
    rows = run.history()
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
    for i, row in enumerate(rows):   # the first epoch of the best accuracy so far
        assert row["best_epoch"] == max(rows[:i + 1], key=lambda r: r["val_accuracy"])["epoch"]
    best = max(rows, key=lambda row: row["val_accuracy"])
    assert run.metrics["best_validation"] == {
        "epoch": best["epoch"], "validation_accuracy": best["val_accuracy"],
        "test_accuracy": best["test_accuracy"], "model": "best_model.pt"}
    kept = pv.load_model(out / "best_model.pt")
    dataset = load_data(run.config)
    accuracy = (kept.classify(dataset.validation) == dataset.validation_labels).float().mean()
    assert accuracy.item() == pytest.approx(best["val_accuracy"])
    # the weight per labelled point: alpha N / labels (N = the training points)
    model = pv.load_model(out / "model.pt")
    assert model.labelled_weight(len(dataset.train)) == pytest.approx(
        0.2 * len(dataset.train) / 30)
