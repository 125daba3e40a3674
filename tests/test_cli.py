"""The pyro-vae command line end to end on digits, and one-line errors for user mistakes."""

import csv
import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

import pyro_vae as pv
from pyro_vae.cli import main
from pyro_vae.runs.config import tomllib

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
    import pyro_vae.runs.directory

    def diverge(*args, monitor, **kwargs):
        monitor.callbacks[0]({"epoch": 1, "loss": 1e30, "elbo": -1e30, "recon": -1e30, "kl": 0.0})
        raise pv.NonFiniteLossError("the loss became nan at epoch 2; lower the learning rate")

    monkeypatch.setattr(pyro_vae.runs.directory, "fit", diverge)
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


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_train_resume_continues_bit_for_bit(tmp_path, capsys):
    """Two epochs, then --resume to four, ends with the weights and the history of four
    epochs in one go; the run directory says it was resumed."""
    common = [*FAST[2:], "--z-dim", "2", "--no-figures", "--checkpoint-every", "1"]
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    assert main(["train", "--epochs", "2", *common, "--out", str(interrupted)]) == 0
    assert main(["train", "--resume", str(interrupted), "--epochs", "4", "--quiet"]) == 0
    assert main(["train", "--epochs", "4", *common, "--out", str(whole)]) == 0
    resumed, straight = pv.load_model(interrupted / "model.pt"), pv.load_model(whole / "model.pt")
    for (name, a), (_, b) in zip(resumed.state_dict().items(), straight.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    rows = pv.open_run(interrupted).history()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == [r["loss"] for r in pv.open_run(whole).history()]
    assert tomllib.loads((interrupted / "config.toml").read_text())["epochs"] == 4
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert metrics["run"]["status"] == "complete" and "resumed" in metrics["run"]
    assert metrics["training"]["epoch"] == 4


def test_a_refused_resume_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--z-dim", "2", "--no-figures", "--out", str(run)]) == 0
    assert "compiled steps" not in capsys.readouterr().err     # --quiet: no log lines
    before = _snapshot(run)
    refusals = [
        (["--resume", str(run), "--z-dim", "5"], "z_dim=5 (run: 2)"),
        (["--resume", str(run), "--epochs", "1"], "already completed 2 epochs but epochs=1"),
        (["--resume", str(run), "--out", str(tmp_path / "elsewhere")], "drop --out"),
        (["--resume", str(tmp_path / "missing")], "does not exist"),
        (["--distributed", *FAST, "--out", str(tmp_path / "never")], "launch with `torchrun"),
    ]
    for argv, message in refusals:
        assert main(["train", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("pyro-vae: error: ") and "\n" not in err and message in err, err
    assert _snapshot(run) == before
    assert not (tmp_path / "never").exists() and not (tmp_path / "elsewhere").exists()
    (run / "checkpoint.pt").unlink()
    assert main(["train", "--resume", str(run)]) == 2
    assert "has no checkpoint.pt to resume from" in capsys.readouterr().err


def test_compare_command_writes_the_table_and_never_overwrites(tmp_path, capsys):
    """`pyro-vae compare`: config file + flags (flags win), one row per estimator, every
    output written; a second run into the same directory is refused and changes nothing."""
    config = tmp_path / "compare.toml"
    config.write_text('estimators = ["elbo", "meanfield"]\nseeds = [0]\nepochs = 5\n'
                      'z_dim = 2\nhidden = [16]\n')
    out = tmp_path / "cmp"
    argv = ["compare", "--config", str(config), "--estimators", "elbo", "iwae:k=3",
            "--epochs", "1", "--test-points", "40", "--eval-samples", "10",
            "--khat-points", "20", "--khat-samples", "50", "--device", "cpu", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| elbo |" in printed and "| iwae:k=3 |" in printed and "meanfield" not in printed
    assert {p.name for p in out.iterdir()} == {
        "config.json", "summary.csv", "runs.csv", "curves.csv", "comparison.json",
        "comparison.md", "curves.png", "khat.png"}
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["epochs"] == 1 and recorded["seeds"] == [0]
    assert recorded["model"]["z_dim"] == 2 and recorded["model"]["hidden"] == [16]
    assert "epochs" not in recorded["model"]          # the comparison's own setting
    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert [r["estimator"] for r in runs] == ["elbo", "iwae:k=3"]
    assert len({r["initial_digest"] for r in runs}) == 1   # one start for both
    before = _snapshot(out)
    assert main(argv) == 2
    assert "already exist" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_compare_command_mistakes(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("colour = 'red'\n")
    for argv, message in [
            (["compare"], "needs a budget"),
            (["compare", "--epochs", "1", "--estimators", "iwea:k=5"], "unknown estimator"),
            (["compare", "--epochs", "1", "--seeds", "1,1"], "must be distinct"),
            (["compare", "--epochs", "0"], "expected a positive integer"),
            (["compare", "--epochs", "1", "--khat-samples", "20"], "at least 50"),
            (["compare", "--epochs", "1", "--config", str(tmp_path / "bad.toml")],
             "unknown keys ['colour']"),
            (["compare", "--epochs", "1", "--prior", "nope"], "unknown prior 'nope'")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("pyro-vae: error: ") and "\n" not in err and message in err, err


def test_holes_command_runs_the_study(tmp_path, capsys):
    out = tmp_path / "holes"
    argv = ["holes", "--dataset", "gw", "--betas", "0,1", "--seeds", "0", "--epochs", "2",
            "--hidden", "16", "--sweep-betas", "none", "--num-draws", "100", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Holes study: gw" in printed and "| AE |" in printed and "| beta=1 |" in printed
    assert {p.name for p in out.iterdir()} == {"holes_study.md", "holes_study.json",
                                              "holes_figure.png"}
    study = json.loads((out / "holes_study.json").read_text())
    assert [row["model"] for row in study["table"]] == ["AE", "beta=0", "beta=1"]
    assert study["settings"]["z_dim"] == 2 and study["settings"]["epochs"] == 2
    before = _snapshot(out)
    assert main(argv) == 2                  # refused before any training
    assert "refusing to overwrite" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert main(["holes", "--betas", "1,-4"]) == 2
    assert "numbers >= 0" in capsys.readouterr().err


def test_diagnose_writes_snr_khat_and_posterior(trained, tmp_path, capsys):
    import arviz as az
    out = tmp_path / "diagnostics"
    argv = ["diagnose", str(trained), "--estimators", "iwae:k=1", "iwae:k=5", "--snr-draws",
            "5", "--snr-batch", "20", "--khat-points", "30", "--khat-samples", "60",
            "--points", "0,4", "--posterior-draws", "20", "--ppc-points", "40",
            "--ppc-draws", "30", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| iwae:k=5 | encoder |" in printed and "| iwae:k=1 | decoder |" in printed
    assert "k-hat > 0.7" in printed
    assert "Posterior predictive check" in printed and "| mean feature variance |" in printed
    assert {p.name for p in out.iterdir()} == {"snr.md", "snr.png", "khat.md", "khat.png",
                                              "khat.csv", "posterior.nc", "ppc.md", "ppc.png"}
    with open(out / "khat.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 30
    idata = az.from_netcdf(out / "posterior.nc")
    assert idata.posterior["z"].shape == (4, 20, 2, 3)     # chains, draws, points, z_dim
    before = _snapshot(out)
    for argv_bad, message in [(argv, "already exist"),
                              (argv[:2] + ["--khat-samples", "10"], "at least 50"),
                              (argv[:2] + ["--points", "9999", "--out", str(tmp_path / "b")],
                               "outside the 359 points"),
                              (argv[:2] + ["--estimators", "iwea"], "unknown estimator")]:
        assert main(argv_bad) == 2, argv_bad
        assert message in capsys.readouterr().err
    assert _snapshot(out) == before


def test_compare_command_on_a_discrete_model_trains_with_labels_and_reports_accuracy(
        tmp_path, capsys):
    out = tmp_path / "m2"
    assert main(["compare", "--model", "m2", "--labels", "50", "--hidden", "16",
                 "--estimators", "enum", "relaxed", "--epochs", "1", "--seeds", "0",
                 "--eval-samples", "10", "--khat-samples", "0", "--test-points", "40",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "y summed exactly" in printed
    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert [r["estimator"] for r in runs] == ["enum", "relaxed"]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in runs)
