"""The pyro-vae command line end to end on digits, and one-line errors for user mistakes."""

import csv
import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

import pyro_vae as pv
from pyro_vae.cli import main
from pyro_vae.config import tomllib

FAST = ["--epochs", "2", "--hidden", "32", "--batch-size", "128", "--eval-samples", "20",
        "--quiet", "--device", "cpu"]
FIGURES = {"training_curves", "samples", "reconstructions", "latent_space", "latent_traversal",
           "interpolation"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small training run through the CLI, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", *FAST, "--z-dim", "3", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_every_artifact(trained, capsys):
    config = tomllib.loads((trained / "config.toml").read_text())
    assert config == pv.resolve_config(config)           # complete and valid
    assert config["epochs"] == 2 and config["z_dim"] == 3 and config["hidden"] == [32]
    with open(trained / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "elbo", "recon", "kl", "val_elbo", "val_kl", "beta", "seconds"} <= set(rows[0])
    assert all(np.isfinite(float(r["elbo"])) for r in rows)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["run"]["status"] == "complete"
    assert metrics["run"]["likelihood"] == "bernoulli"     # auto: threshold-binarized digits
    assert metrics["training"]["epoch"] == 2 and metrics["training"]["minibatch_scaled"]
    test = metrics["test"]
    assert test["num_samples"] == 20 and test["num_datapoints"] == 359
    assert test["elbo"] <= test["log_likelihood"] + 0.5 and test["log_likelihood"] < 0
    assert len(test["kl_per_dimension"]) == 3
    model = pv.load_model(trained / "model.pt")
    assert model.z_dim == 3 and model.x_dim == 64
    written = {p.stem for p in (trained / "figures").glob("*.png")}
    assert written == FIGURES
    for name in FIGURES:
        image = matplotlib.image.imread(trained / "figures" / f"{name}.png")
        assert image.ndim == 3 and min(image.shape[:2]) > 100


def test_evaluate_updates_metrics_and_keeps_other_keys(trained, capsys):
    before = json.loads((trained / "metrics.json").read_text())
    assert main(["evaluate", str(trained), "-k", "30", "--split", "validation"]) == 0
    out = capsys.readouterr().out
    assert "log p(x), K=20/30" in out and "updated" in out
    after = json.loads((trained / "metrics.json").read_text())
    assert after["test"] == before["test"] and after["training"] == before["training"]
    assert after["validation"]["num_samples"] == 30
    assert after["validation"]["num_datapoints"] == 180
    assert after["run"]["status"] == "complete"


def test_sample_and_reconstruct(trained, capsys):
    assert main(["sample", str(trained), "-n", "9", "--seed", "2"]) == 0
    arrays = np.load(trained / "samples-n9-seed2.npz")
    assert arrays["z"].shape == (9, 3) and arrays["mean"].shape == arrays["x"].shape == (9, 64)
    assert set(np.unique(arrays["x"])) <= {0.0, 1.0}
    assert ((arrays["mean"] >= 0) & (arrays["mean"] <= 1)).all()
    assert (trained / "figures" / "samples-n9-seed2.png").is_file()
    first = arrays["z"].copy()
    assert main(["sample", str(trained), "-n", "9", "--seed", "2"]) == 0   # reproducible
    assert np.array_equal(np.load(trained / "samples-n9-seed2.npz")["z"], first)

    assert main(["reconstruct", str(trained), "-n", "5"]) == 0
    out = capsys.readouterr().out
    assert "5 test points: mean squared error" in out
    arrays = np.load(trained / "reconstructions-test-n5-seed0.npz")
    assert arrays["x"].shape == arrays["reconstruction"].shape == (5, 64)
    assert arrays["z"].shape == (5, 3) and len(set(arrays["index"].tolist())) == 5


def test_existing_run_is_never_overwritten_silently(trained, capsys):
    metrics = (trained / "metrics.json").read_bytes()
    assert main(["train", *FAST, "--out", str(trained)]) == 2
    err = capsys.readouterr().err
    assert "already exists and is not empty" in err and "--overwrite" in err
    assert (trained / "metrics.json").read_bytes() == metrics


def test_rerun_from_config_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--z-dim", "2", "--out", str(out), "--no-figures"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--config", str(out / "config.toml"), "--epochs", "1", "--out",
                 str(out), "--overwrite", "--quiet"]) == 0
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["epochs"] == 1 and config["z_dim"] == 2 and config["figures"] is False
    assert (out / "notes.txt").read_text() == "mine"          # not ours: left alone
    assert "status     complete" in capsys.readouterr().out


def bad_runs(tmp_path):
    never = ["--epochs", "1", "--no-figures", "--out", str(tmp_path / "never")]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    return [
        (["train", "--prior", "vampp"], "Did you mean 'vamp'"),
        (["train", "--z-dim", "two"], "argument --z-dim: invalid int value"),
        (["train", "--z-dim", "-1"], "bad z_dim -1: must be > 0"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--hidden", "a,b"], "comma-separated integers"),
        (["train", "--config", str(tmp_path / "no.toml")], "does not exist"),
        (["train", "--dataset", "mnist", "--data-dir", str(tmp_path)], "MNIST file"),
        (["train", "--dataset", str(tmp_path / "x.npy")], "does not exist"),
        (["train", "--binarize", "none", "--likelihood", "bernoulli", *never],
         "BernoulliLikelihood expects binary values"),
        (["train", "--batch-size", "5000", *never], "exceeds the 1258 training points"),
        (["train", "--dataset", "gw", "--binarize", "static"], "cannot be binarized"),
        (["train", "--network", "conv", "--dataset", "gw"], "needs image data"),
        (["train", "--prior-option", "colours=3", *never],
         "prior 'normal' takes no options; got prior_options ['colours']"),
        (["train", "--prior", "mixture", "--prior-option", "components=3", *never],
         "unknown option 'components' for prior 'mixture'"),
        (["train", "--out", str(other), "--overwrite"], "is not one, so nothing was touched"),
        (["evaluate", str(tmp_path / "missing")], "does not exist"),
        (["evaluate", str(other)], "not a pyro-vae run directory"),
        (["sample", str(other), "-n", "0"], "expected a positive integer"),
        ([], "the following arguments are required: COMMAND"),
    ]


def test_user_mistakes_give_one_line_and_exit_2(tmp_path, capsys):
    for argv, message in bad_runs(tmp_path):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert err.startswith("pyro-vae: error: ") and "\n" not in err, (argv, err)
        assert message in err, (argv, err)
        assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "never").exists()                     # checked before writing
    assert (tmp_path / "other" / "keep.txt").read_text() == "x"


def test_console_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pyro_vae", "evaluate",
                             str(tmp_path / "none")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("pyro-vae: error: run directory")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_failed_training_is_recorded_and_reported(tmp_path, capsys, monkeypatch):
    import pyro_vae.runs

    def diverge(*args, callbacks=(), **kwargs):
        callbacks[0]({"epoch": 1, "loss": 1e30, "elbo": -1e30, "recon": -1e30, "kl": 0.0})
        raise pv.NonFiniteLossError("the loss became nan at epoch 2; lower the learning rate")

    monkeypatch.setattr(pyro_vae.runs, "fit", diverge)
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "pyro-vae: error: the loss became nan at epoch 2; lower the learning rate"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["status"] == "failed" and "NonFiniteLossError" in metrics["run"][
        "error"]
    assert len(pyro_vae.runs.read_history(out / "history.csv")) == 1
    assert main(["evaluate", str(out)]) == 2
    assert "has no model.pt (status: failed)" in capsys.readouterr().err
