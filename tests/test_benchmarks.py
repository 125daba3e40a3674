"""The benchmark scripts run end to end at tiny sizes (slow), and with --device cuda where a
GPU is present. Their correctness checks (the plain reference computes pyro-vae's objective)
are in test_fast_paths.py; nothing here times anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def scripts():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import eval_throughput
        import host_reads
        import step_overhead
        yield step_overhead, eval_throughput, host_reads
    finally:
        sys.path.remove(str(BENCHMARKS))


def run_step_overhead(module, device: str) -> str:
    module.main(["--device", device, "--estimators", "elbo", "iwae:k=2", "--batch-sizes", "8",
                 "--rounds", "2", "--block-seconds", "0", "--warmup", "2", "--x-dim", "16",
                 "--hidden", "8", "--z-dim", "2", "--no-validation"])


def run_eval_throughput(module, device: str) -> None:
    module.main(["--device", device, "--ks", "5", "--points", "4", "--naive-points", "2",
                 "--repeats", "1", "--no-memory"])


@pytest.mark.parametrize("spec, validation", [("elbo", False), ("iwae:k=2,jit=1", True)])
def test_a_fit_step_reads_one_value_back_to_the_host(scripts, spec, validation):
    """The running loss stays on the device: the one read per step is the non-finite guard's
    flag (the eager path under distribution validation adds torch's own checks)."""
    counts = scripts[2].reads_per_step(spec, validation, torch.device("cpu"), steps=4)
    assert counts == {"tolist": 1.0}


@pytest.mark.slow
def test_step_overhead_prints_a_ratio_per_estimator_and_batch(scripts, capsys):
    run_step_overhead(scripts[0], "cpu")
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("elbo ", "iwae"))]
    assert [row[:2] for row in rows] == [["elbo", "8"], ["iwae:k=2", "8"]]
    # pyro-vae, eager, Pyro's example (SVI) and no-valid, each against plain
    assert "pyro-svi/plain" in out and "note:" not in out    # the default step is compiled
    assert all(len(row) == 2 + 5 + 4 and all(cell.endswith("x") and float(cell[:-1]) > 0
                                             for cell in row[-4:]) for row in rows)


@pytest.mark.slow
def test_eval_throughput_prints_floor_naive_and_plain_ratios(scripts, capsys):
    run_eval_throughput(scripts[1], "cpu")
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("5 "))
    assert len(row) == 9 and all(cell.endswith("x") for cell in row[-3:])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_benchmarks_run_unchanged_on_cuda(scripts, capsys):
    run_step_overhead(scripts[0], "cuda")
    run_eval_throughput(scripts[1], "cuda")
    out = capsys.readouterr().out
    assert "device    cuda" in out and "gpu " in out


SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the MNIST files in ../shared")
def test_mnist_curves_resume_exactly_and_plot(tmp_path, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import mnist_nll
    finally:
        sys.path.remove(str(BENCHMARKS))
    common = ["--data-dir", str(SHARED_MNIST), "--train-points", "200", "--test-points", "10",
              "--eval-samples", "5", "--burda-schedule", "--estimators", "elbo",
              "--two-layer-for", "elbo"]
    mnist_nll.main([*common, "--curve", str(tmp_path / "a"), "--eval-epochs", "1"])
    mnist_nll.main([*common, "--curve", str(tmp_path / "a"), "--eval-epochs", "1", "2"])
    mnist_nll.main([*common, "--curve", str(tmp_path / "b"), "--eval-epochs", "2"])
    resumed = mnist_nll.read_curve(tmp_path / "a" / "curve.csv")
    whole = mnist_nll.read_curve(tmp_path / "b" / "curve.csv")
    assert [(r["implementation"], r["epoch"]) for r in resumed] == [
        ("pyro-vae", "1"), ("plain", "1"), ("pyro-vae 2-layer", "1"),
        ("pyro-vae", "2"), ("plain", "2"), ("pyro-vae 2-layer", "2")]
    assert [r["test_nll"] for r in resumed[3:]] == [r["test_nll"] for r in whole]
    with pytest.raises(SystemExit, match="K=5; this command asks for 10 and K=7"):
        mnist_nll.main([*common[:-9], "--test-points", "10", "--eval-samples", "7",
                        "--estimators", "elbo", "--curve", str(tmp_path / "a")])
    figure = tmp_path / "curve.png"
    mnist_nll.main(["--curve", str(tmp_path / "a"), "--plot", "--figure", str(figure)])
    assert figure.stat().st_size > 1000


def _pyro_examples_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pyro_examples
        return pyro_examples
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_pyro_examples_reads_the_examples_output_and_prints_one_table():
    module = _pyro_examples_module()
    vae_lines = [(5.0, "[epoch 000]  average training loss: 150.5"),
                 (6.0, "[epoch 000]  average test loss: 120.25"),
                 (9.5, "[epoch 001]  average training loss: 110.0"),
                 (10.0, "[epoch 001]  average test loss: 105.5")]
    vae = module.parse_pyro_output("vae", vae_lines)
    assert vae == {"epoch_seconds": [3.5], "train_loss": 110.0, "test_elbo": -105.5}
    m2_lines = [(70.0, "0 epoch: avg losses 600.1 140.2 validation accuracy 0.41 test accuracy "
                       "0.4"),
                (130.0, "1 epoch: avg losses 500.0 120.5 validation accuracy 0.52 test "
                        "accuracy 0.515"),
                (131.0, "best validation accuracy 0.52 corresponding testing accuracy 0.515 "
                        "last testing accuracy 0.515")]
    m2 = module.parse_pyro_output("m2", m2_lines)
    assert m2["epoch_seconds"] == [60.0] and m2["train_loss"] == 120.5
    assert (m2["test_accuracy"], m2["best_test_accuracy"]) == (0.515, 0.515)
    text = module.table([("vae", "pyro example", vae), ("m2", "pyro example", m2)])
    lines = text.splitlines()
    assert lines[2].split() == ["vae", "pyro", "example", "3.50", "110.00", "-105.50", "-", "-"]
    assert lines[3].split()[-2:] == ["0.5150", "0.5150"]
    with pytest.raises(SystemExit, match="point --pyro-examples"):
        module.main(["--pyro-examples", str(BENCHMARKS), "--data-dir", "x"])


PYRO_EXAMPLES = os.environ.get("PYRO_EXAMPLES")


@pytest.mark.skipif(not PYRO_EXAMPLES, reason="needs a checkout of Pyro's examples/vae "
                    "($PYRO_EXAMPLES)")
def test_pyro_examples_runs_pyros_vae_beside_pyro_vae_at_a_tiny_size(tmp_path, capsys,
                                                                    monkeypatch):
    """Pyro's vae.py and pyro-vae on 512 fake 28x28 images, two epochs each."""
    from test_mnist import write_mnist
    write_mnist(tmp_path / "mnist", n_train=512, n_test=256, size=(28, 28), compress=False)
    monkeypatch.setenv("PYRO_EXAMPLES_VERIFY", "0")
    module = _pyro_examples_module()
    monkeypatch.setitem(module.PYRO_VAE_FLAGS, "vae", [
        *module.PYRO_VAE_FLAGS["vae"], "--data-option", "verify=false"])
    module.main(["--pyro-examples", PYRO_EXAMPLES, "--data-dir", str(tmp_path / "mnist"),
                 "--examples", "vae", "--epochs", "2"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("vae ")]
    assert [row[1] for row in rows] == ["pyro", "pyro-vae"]
    assert all(float(row[-5]) >= 0 and float(row[-4]) > 0 for row in rows)   # s, loss


def test_m2_stacked_keeps_the_best_validation_epoch(tmp_path, capsys):
    """M1 + M2 on the digits: one history row per epoch with both accuracies, and the model
    kept is the best validation epoch's (its validation accuracy is that row's)."""
    import csv

    import pyro_vae as pv
    from pyro_vae.inference.metrics.classes import label_accuracy

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import m2_stacked
    finally:
        sys.path.remove(str(BENCHMARKS))
    data = pv.load_dataset("digits", binarize="none")
    torch.manual_seed(0)
    m1 = pv.VAE(data.x_dim, 4, hidden=[32])
    pv.fit(m1, (data.train > 0.5).float(), epochs=5, quiet=True, lr=1e-2)
    pv.save_model(m1, tmp_path / "m1.pt")
    m2_stacked.main(["--dataset", "digits", "--m1", str(tmp_path / "m1.pt"), "--labels", "30",
                     "--epochs", "4", "--hidden", "32", "--z-dim", "2", "--lr", "3e-3",
                     "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    with open(tmp_path / "out" / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    accuracies = [float(row["val_accuracy"]) for row in rows]
    assert all(0 <= float(row["test_accuracy"]) <= 1 for row in rows)
    best = rows[accuracies.index(max(accuracies))]
    assert f"best      epoch {best['epoch']}: validation accuracy {max(accuracies):.4f}" in out
    assert "classifier on the 30 labelled codes alone" in out
    kept = pv.load_model(tmp_path / "out" / "best_model.pt").eval()
    codes, _ = m2_stacked.active_codes(m1.eval(), {"train": data.train,
                                                   "validation": data.validation})
    assert label_accuracy(kept, codes["validation"], data.labels("validation")).accuracy \
        == pytest.approx(max(accuracies))
