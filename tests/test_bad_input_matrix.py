"""The bad-input matrix: for each public entry point, the wrong inputs users actually make.

Every row must raise its exception type with a one-line message saying what was expected,
what was received and how to fix it, and leave every file already saved byte-for-byte
unchanged. A row is one entry of ``MATRIX`` (``call`` runs the entry point against the
:class:`Workspace`); a command-line row must end with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_vae as pv
from pyro_vae.cli import main

SETTINGS = dict(epochs=1, batch_size=40, lr=3e-3, seed=0, quiet=True)
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
NOT_UNDER_TORCHRUN = pytest.mark.skipif(pv.distributed.launched_by_torchrun(),
                                        reason="these tests run under torchrun")


class Workspace:
    """Files a user already has: a saved model, a run directory with its checkpoint, and
    damaged or foreign files; plus the binary digits the model was fitted on."""

    def __init__(self, root: Path, x: torch.Tensor):
        self.root, self.x = root, x
        self.model_file = pv.save_model(self.model(), root / "model.pt")
        self.run = root / "run"
        pv.fit(self.model(), x, checkpoint_dir=self.run, **SETTINGS)
        checkpoint = (self.run / "checkpoint.pt").read_bytes()
        self.truncated = root / "truncated.pt"
        self.truncated.write_bytes(checkpoint[: len(checkpoint) // 2])
        damaged = bytearray(checkpoint)
        middle = len(damaged) // 2   # inside the tensor data, which torch does not verify
        damaged[middle:middle + 16] = bytes(b ^ 0xFF for b in damaged[middle:middle + 16])
        self.corrupted = root / "corrupted.pt"
        self.corrupted.write_bytes(bytes(damaged))
        self.foreign = root / "foreign.pt"
        torch.save({"weights": torch.zeros(3)}, self.foreign)
        self.empty_run = root / "empty_run"
        self.empty_run.mkdir()
        self.cli_run = root / "cli_run"
        assert main(["train", "--epochs", "1", "--hidden", "16", "--z-dim", "2",
                     "--eval-samples", "5", "--no-figures", "--quiet", "--device", "cpu",
                     "--out", str(self.cli_run)]) == 0
        self.nan_array, self.empty_array = root / "nan.npy", root / "empty.npy"
        values = np.random.default_rng(0).random((50, 5), dtype=np.float32)
        values[3, 2] = np.nan
        np.save(self.nan_array, values)
        np.save(self.empty_array, np.zeros((0, 5), dtype=np.float32))

    @staticmethod
    def model(**options) -> pv.VAE:
        torch.manual_seed(0)
        return pv.VAE(64, **{"z_dim": 3, "hidden": (16,), **options})

    def snapshot(self) -> dict:
        return {path: path.read_bytes() for path in sorted(self.root.rglob("*"))
                if path.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, binary_digits):
    return Workspace(tmp_path_factory.mktemp("workspace"), binary_digits.train[:80])


@dataclass(frozen=True)
class Row:
    entry: str                                  # the public entry point
    mistake: str                                # what the user did
    call: Callable[[Workspace], object]
    error: type[BaseException]
    match: str                                  # regex the message must contain
    marks: tuple = ()


def grey(ws):
    return torch.full((len(ws.x), 64), 0.3)


def with_nan(ws, value=float("nan")):
    x = ws.x.clone()
    x[5, 7] = value
    return x


class CommandLineError(Exception):
    """What ``pyro-vae`` printed on stderr when it exited with a non-zero code."""


def cli(*argv):
    """Run ``pyro-vae ARGV``; a non-zero exit raises :class:`CommandLineError` with stderr,
    which must be exactly one line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    if code != 0:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyro-vae: error: "), lines
        raise CommandLineError(f"exit {code}: {lines[0]}")
    return code


def compare(ws, estimators=("elbo",), train=None, test=None, **options):
    return pv.compare({"z_dim": 2, "hidden": [8]}, ws.x if train is None else train,
                      ws.x if test is None else test, list(estimators),
                      **{"epochs": 1, "seeds": [0], "eval_samples": 4, "khat_samples": None,
                         **options})


def fit(ws, data=None, **options):
    return pv.fit(ws.model(), ws.x if data is None else data, **{**SETTINGS, **options})


def evaluate(ws, data=None, model=None, **options):
    return pv.evaluate(model or ws.model(), ws.x if data is None else data,
                       **{"num_samples": 4, **options})


MATRIX = [
    # -- data loaders --------------------------------------------------------------------
    Row("load_dataset", "unknown dataset name", lambda ws: pv.load_dataset("mnsit"),
        ValueError, r"unknown dataset 'mnsit'; expected one of \[.*'digits'"),
    Row("load_dataset", "misspelt option", lambda ws: pv.load_dataset("digits", binarise=True),
        ValueError, r"unknown option 'binarise' for dataset 'digits'.*Did you mean 'binarize'"),
    Row("load_dataset", "split fractions leaving no training data",
        lambda ws: pv.load_dataset("digits", validation_fraction=0.5, test_fraction=0.5),
        ValueError, r"leaves no training data; expected a sum below 1"),
    Row("load_dataset", "negative split fraction",
        lambda ws: pv.load_dataset("digits", test_fraction=-0.2),
        ValueError, r"test_fraction must be a number in \[0, 1\); got -0.2"),
    # -- model constructor ---------------------------------------------------------------
    Row("VAE", "non-positive latent size", lambda ws: pv.VAE(64, 0),
        ValueError, r"z_dim must be a positive integer; got 0. Pass e.g. z_dim=2"),
    Row("VAE", "fractional latent size", lambda ws: pv.VAE(64, 2.5),
        ValueError, r"z_dim must be a positive integer; got 2.5"),
    Row("VAE", "non-positive feature size", lambda ws: pv.VAE(-64, 2),
        ValueError, r"x_dim must be a positive integer; got -64"),
    Row("VAE", "zero-width hidden layer", lambda ws: pv.VAE(64, 2, hidden=(16, 0)),
        ValueError, r"hidden layer width must be a positive integer; got 0.$"),
    Row("VAE", "unknown prior", lambda ws: pv.VAE(64, 2, prior="gaussian"),
        ValueError, r"unknown prior 'gaussian'; expected one of \[.*'normal'"),
    Row("VAE", "unknown likelihood", lambda ws: pv.VAE(64, 2, likelihood="bernouli"),
        ValueError, r"unknown likelihood 'bernouli'.*Did you mean 'bernoulli'"),
    Row("VAE", "unknown guide", lambda ws: pv.VAE(64, 2, guide="diag"),
        ValueError, r"unknown guide 'diag'; expected one of \[.*'diagonal'"),
    Row("VAE", "unknown network", lambda ws: pv.VAE(64, 2, network="cnn"),
        ValueError, r"unknown network 'cnn'; expected one of \['conv', 'mlp'\]"),
    Row("VAE", "misspelt component option",
        lambda ws: pv.VAE(64, 2, prior="mixture", prior_options={"num_component": 5}),
        ValueError, r"unknown option 'num_component' for prior 'mixture'.*'num_components'"),
    Row("VAE", "option for a component that takes none",
        lambda ws: pv.VAE(64, 2, prior="normal", prior_options={"scale": 2.0}),
        ValueError, r"prior 'normal' takes no options; got prior_options \['scale'\]"),
    Row("VAE", "non-positive component size",
        lambda ws: pv.VAE(64, 2, prior="mixture", prior_options={"num_components": 0}),
        ValueError, r"num_components must be a positive integer; got 0"),
    Row("VAE", "negative KL weight", lambda ws: pv.VAE(64, 2, beta=-1.0),
        ValueError, r"beta \(the KL weight\) must be >= 0; got beta=-1.0. Use beta=1"),
    Row("VAE", "image shape not matching the features",
        lambda ws: pv.VAE(64, 2, network="conv", image_shape=(1, 28, 28)),
        ValueError, r"image_shape \(1, 28, 28\) has 784 pixels but x_dim=64"),
    # -- fit: the data -------------------------------------------------------------------
    Row("fit", "wrong feature size", lambda ws: fit(ws, torch.zeros(80, 60)),
        ValueError, r"training data has 60 features but the model was built for x_dim=64"),
    Row("fit", "images not flattened", lambda ws: fit(ws, ws.x.reshape(80, 8, 8)),
        ValueError, r"shape \(N, features\); got shape \(80, 8, 8\).*Flatten"),
    Row("fit", "NaN in the data", lambda ws: fit(ws, with_nan(ws)),
        ValueError, r"training data contains 1 NaN or infinite values \(first rows: \[5\]\)"),
    Row("fit", "inf in the validation data",
        lambda ws: fit(ws, validation_data=with_nan(ws, float("inf"))),
        ValueError, r"validation data contains 1 NaN or infinite values.*impute"),
    Row("fit", "empty dataset", lambda ws: fit(ws, torch.zeros(0, 64)),
        ValueError, r"training data is empty; expected at least one datapoint"),
    Row("fit", "batch size above the dataset size", lambda ws: fit(ws, batch_size=500),
        ValueError, r"batch_size=500 exceeds the 80 training datapoints; use batch_size <= 80"),
    Row("fit", "zero batch size", lambda ws: fit(ws, batch_size=0),
        ValueError, r"batch_size must be a positive integer; got 0"),
    Row("fit", "data outside the likelihood's support (grey levels, Bernoulli)",
        lambda ws: fit(ws, grey(ws)),
        pv.DataSupportError, r"expects binary values in \{0, 1\}.*Binarize"),
    Row("fit", "data outside the likelihood's support (fractions, Poisson)",
        lambda ws: pv.fit(pv.VAE(64, 2, likelihood="poisson"), grey(ws), **SETTINGS),
        pv.DataSupportError, r"expects non-negative integer counts.*Round or convert"),
    Row("fit", "a list instead of a tensor", lambda ws: fit(ws, ws.x.tolist()),
        TypeError, r"must be torch tensors; got list.*torch.as_tensor"),
    Row("fit", "integer tensor", lambda ws: fit(ws, ws.x.long()),
        TypeError, r"must be a floating-point tensor; got dtype torch.int64.*x.float\(\)"),
    Row("fit", "inputs and labels of different lengths",
        lambda ws: fit(ws, (ws.x, torch.zeros(79))),
        ValueError, r"same number of rows \(one per datapoint\); got \[80, 79\]"),
    # -- fit: the settings ---------------------------------------------------------------
    Row("fit", "unknown estimator", lambda ws: fit(ws, estimator="vi"),
        ValueError, r"unknown estimator 'vi'; expected one of \[.*'iwae:k=5'"),
    Row("fit", "misspelt estimator option", lambda ws: fit(ws, estimator="iwae:kk=5"),
        ValueError, r"bad option 'kk=5' in estimator spec 'iwae:kk=5'.*e.g. 'iwae:k=5'"),
    Row("fit", "zero particles", lambda ws: fit(ws, estimator="iwae:k=0"),
        ValueError, r"number of particles k must be >= 1; got k=0"),
    Row("fit", "unknown optimizer", lambda ws: fit(ws, optimizer="adamax2"),
        ValueError, r"unknown optimizer 'adamax2'; expected one of \["),
    Row("fit", "non-positive learning rate", lambda ws: fit(ws, lr=0),
        ValueError, r"lr must be a positive number; got 0. Pass e.g. lr=1e-3"),
    Row("fit", "negative epochs", lambda ws: fit(ws, epochs=-1),
        ValueError, r"epochs must be a non-negative integer; got -1"),
    Row("fit", "unknown non-finite policy", lambda ws: fit(ws, nonfinite="ignore"),
        ValueError, r"nonfinite must be one of \['raise', 'skip'\]; got 'ignore'"),
    Row("fit", "zero checkpoint interval", lambda ws: fit(ws, checkpoint_every=0),
        ValueError, r"checkpoint_every must be a positive integer.*got 0"),
    Row("fit", "CUDA requested where none exists", lambda ws: fit(ws, device="cuda"),
        RuntimeError, r"'cuda' was requested but CUDA is not available.*device='cpu'",
        (NO_CUDA,)),
    Row("fit", "unknown device", lambda ws: fit(ws, device="gpu"),
        ValueError, r"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got 'gpu'"),
    Row("fit", "distributed=True outside torchrun", lambda ws: fit(ws, distributed=True),
        RuntimeError, r"variables that torchrun sets, but \[.*\] are not set\. Launch every "
        r"process with torchrun", (NOT_UNDER_TORCHRUN,)),
    Row("fit", "distributed given as a string", lambda ws: fit(ws, distributed="yes"),
        TypeError, r"distributed must be True or False; got 'yes'"),
    # -- fit: checkpoints and resume -----------------------------------------------------
    Row("fit", "fresh fit into a run that holds a checkpoint",
        lambda ws: fit(ws, checkpoint_dir=ws.run),
        FileExistsError, r"already holds a checkpoint of another run; pass resume=.*run"),
    Row("fit", "checkpoint_dir is a file", lambda ws: fit(ws, checkpoint_dir=ws.model_file),
        NotADirectoryError, r"checkpoint_dir .*model.pt' is a file; pass a directory"),
    Row("fit(resume)", "truncated checkpoint", lambda ws: fit(ws, resume=ws.truncated),
        pv.CheckpointError, r"truncated.pt' is not a readable training checkpoint .*"
                            r"truncated or corrupted"),
    Row("fit(resume)", "corrupted checkpoint", lambda ws: fit(ws, resume=ws.corrupted),
        pv.CheckpointError, r"corrupted.pt' is (corrupted: its contents do not match the "
                            r"SHA-256|not a readable training checkpoint)"),
    Row("fit(resume)", "run directory without a checkpoint",
        lambda ws: fit(ws, resume=ws.empty_run),
        FileNotFoundError, r"no training checkpoint at .*checkpoint.pt'; expected a file "
                           r"written by fit\(model, data, checkpoints=CheckpointFiles\(RUN\)\)"),
    Row("fit(resume)", "a saved model instead of a checkpoint",
        lambda ws: fit(ws, resume=ws.model_file),
        pv.CheckpointError, r"is a saved model \(save_model\), not a training checkpoint.*"
                            r"load_model\(path\); fit\(model, data\)"),
    Row("fit(resume)", "a file that is not pyro-vae's", lambda ws: fit(ws, resume=ws.foreign),
        pv.CheckpointError, r"not a pyro-vae training checkpoint \(format None"),
    Row("fit(resume)", "checkpoint of another model configuration",
        lambda ws: pv.fit(ws.model(z_dim=4), ws.x, resume=ws.run, **SETTINGS),
        pv.CheckpointError, r"another model configuration \(z_dim: checkpoint 3, this fit 4\)"
                            r".*load_model"),
    Row("fit(resume)", "checkpoint whose weights do not fit a custom model",
        lambda ws: pv.fit(pv.VAE(64, 3, decoder=torch.nn.Linear(3, 64)), ws.x, resume=ws.run,
                          **SETTINGS),
        pv.CheckpointError, r"weights do not fit this model \(missing .*'decoder.weight'"),
    Row("fit(resume)", "resumed with other settings", lambda ws: fit(ws, resume=ws.run, lr=0.1),
        pv.CheckpointError, r"other settings \(lr: checkpoint 0.003, this fit 0.1\)"),
    Row("fit(resume)", "resumed on other data",
        lambda ws: fit(ws, 1.0 - ws.x, resume=ws.run),
        pv.CheckpointError, r"training data differ from the checkpoint's.*same data"),
    Row("fit(resume)", "fewer epochs than already done",
        lambda ws: fit(ws, resume=ws.run, epochs=0),
        pv.CheckpointError, r"already completed 1 epochs but epochs=0; pass epochs >= 1"),
    Row("fit(resume)", "a model's state dict instead of a training state",
        lambda ws: fit(ws, resume=ws.model().state_dict()),
        pv.ResumeError, r"expects a training state written by fit's checkpoint hook .*got a "
                        r"dict without a format, with keys \['decoder.0.weight'"),
    # -- evaluate ------------------------------------------------------------------------
    Row("evaluate", "wrong feature size", lambda ws: evaluate(ws, torch.zeros(10, 60)),
        ValueError, r"evaluation data has 60 features but the model was built for x_dim=64"),
    Row("evaluate", "NaN in the data", lambda ws: evaluate(ws, with_nan(ws)),
        ValueError, r"evaluation data contains 1 NaN or infinite values"),
    Row("evaluate", "empty dataset", lambda ws: evaluate(ws, torch.zeros(0, 64)),
        ValueError, r"evaluation data is empty"),
    Row("evaluate", "data outside the likelihood's support", lambda ws: evaluate(ws, grey(ws)),
        pv.DataSupportError, r"BernoulliLikelihood expects binary values"),
    Row("evaluate", "zero importance samples", lambda ws: evaluate(ws, num_samples=0),
        ValueError, r"num_samples must be a positive integer; got 0"),
    Row("evaluate", "zero ELBO particles", lambda ws: evaluate(ws, elbo_particles=0),
        ValueError, r"elbo_particles must be a positive integer; got 0"),
    Row("evaluate", "negative batch size", lambda ws: evaluate(ws, batch_size=-8),
        ValueError, r"batch_size must be a positive integer; got -8"),
    # -- saving and loading models -------------------------------------------------------
    Row("load_model", "truncated file", lambda ws: pv.load_model(ws.truncated),
        pv.CheckpointError, r"not a readable saved model .*truncated or corrupted"),
    Row("load_model", "corrupted file", lambda ws: pv.load_model(ws.corrupted),
        pv.CheckpointError, r"(corrupted: its contents do not match|not a readable saved)"),
    Row("load_model", "missing file", lambda ws: pv.load_model(ws.root / "nope.pt"),
        FileNotFoundError, r"no saved model at .*nope.pt'; expected a file written by "
                           r"save_model"),
    Row("load_model", "a file that is not pyro-vae's", lambda ws: pv.load_model(ws.foreign),
        pv.CheckpointError, r"not a pyro-vae model file \(format None, expected"),
    Row("load_model", "CUDA requested where none exists",
        lambda ws: pv.load_model(ws.model_file, device="cuda"),
        RuntimeError, r"CUDA is not available on this machine; use device='cpu'", (NO_CUDA,)),
    # -- compare -------------------------------------------------------------------------
    Row("compare", "unknown estimator name", lambda ws: compare(ws, ["elbo", "iwea:k=5"]),
        ValueError, r"unknown estimator 'iwea'; expected one of \[.*Did you mean 'iwae'"),
    Row("compare", "no budget", lambda ws: compare(ws, epochs=None),
        ValueError, r"give a budget: epochs=N, max_seconds=S"),
    Row("compare", "the same seed twice", lambda ws: compare(ws, seeds=[1, 1]),
        ValueError, r"seeds must be distinct; got \[1, 1\]"),
    Row("compare", "wrong feature size in the test data",
        lambda ws: compare(ws, test=torch.zeros(10, 60)),
        ValueError, r"test data has 60 features but the model was built for x_dim=64"),
    Row("compare", "NaN in the training data", lambda ws: compare(ws, train=with_nan(ws)),
        ValueError, r"training data contains 1 NaN or infinite values"),
    Row("compare", "empty training data", lambda ws: compare(ws, train=torch.zeros(0, 64)),
        ValueError, r"training data is empty \(shape \(0, 64\)\); expected at least one"),
    Row("compare", "test data outside the likelihood's support",
        lambda ws: compare(ws, test=grey(ws)),
        pv.DataSupportError, r"BernoulliLikelihood expects binary values"),
    Row("compare", "batch size above dataset size", lambda ws: compare(ws, batch_size=500),
        ValueError, r"batch_size=500 exceeds the 80 training datapoints"),
    Row("compare", "too few draws for k-hat", lambda ws: compare(ws, khat_samples=10),
        ValueError, r"khat_samples must be None \(no k-hat\) or an integer >= 50"),
    Row("compare", "CUDA requested where none exists", lambda ws: compare(ws, device="cuda"),
        RuntimeError, r"CUDA is not available on this machine; use device='cpu'", (NO_CUDA,)),
    # -- command line --------------------------------------------------------------------
    Row("pyro-vae train", "unknown prior name", lambda ws: cli("train", "--prior", "vampp"),
        CommandLineError, r"unknown prior 'vampp'; expected one of .*Did you mean 'vamp'"),
    Row("pyro-vae train", "unknown estimator name",
        lambda ws: cli("train", "--estimator", "iwea:k=5"),
        CommandLineError, r"unknown estimator 'iwea'.*Did you mean 'iwae'"),
    Row("pyro-vae train", "non-positive latent size", lambda ws: cli("train", "--z-dim", "0"),
        CommandLineError, r"bad z_dim 0: must be > 0"),
    Row("pyro-vae train", "batch size above dataset size",
        lambda ws: cli("train", "--batch-size", "5000", "--out", ws.root / "never"),
        CommandLineError, r"batch_size 5000 exceeds the 1258 training points of 'digits'"),
    Row("pyro-vae train", "data outside the likelihood's support",
        lambda ws: cli("train", "--binarize", "none", "--likelihood", "bernoulli", "--out",
                       ws.root / "never"),
        CommandLineError, r"BernoulliLikelihood expects binary values.*Binarize the data"),
    Row("pyro-vae train", "NaN in the user's array",
        lambda ws: cli("train", "--dataset", ws.nan_array, "--out", ws.root / "never"),
        CommandLineError, r"nan.npy contains NaN or infinite values \(first rows: \[3\]\); "
                          r"remove or impute them"),
    Row("pyro-vae train", "empty user array",
        lambda ws: cli("train", "--dataset", ws.empty_array, "--out", ws.root / "never"),
        CommandLineError, r"must have shape \(N, features\).* with N >= 1; got shape \(0, 5\)"),
    Row("pyro-vae train", "an existing run as --out",
        lambda ws: cli("train", "--out", ws.cli_run),
        CommandLineError, r"already exists and is not empty; choose another --out, or pass "
                          r"--overwrite"),
    Row("pyro-vae train", "resume with another configuration",
        lambda ws: cli("train", "--resume", ws.cli_run, "--z-dim", "5"),
        CommandLineError, r"these options differ from its config.toml: z_dim=5 \(run: 2\)"),
    Row("pyro-vae train", "resume a directory that is no run",
        lambda ws: cli("train", "--resume", ws.empty_run),
        CommandLineError, r"is not a pyro-vae run directory \(no config.toml\)"),
    Row("pyro-vae train", "CUDA requested where none exists",
        lambda ws: cli("train", "--device", "cuda"),
        CommandLineError, r"CUDA is not available on this machine; use device='cpu'", (NO_CUDA,)),
    Row("pyro-vae evaluate", "a directory that is no run",
        lambda ws: cli("evaluate", ws.empty_run),
        CommandLineError, r"is not a pyro-vae run directory"),
    Row("pyro-vae compare", "no budget", lambda ws: cli("compare", "--out", ws.root / "never"),
        CommandLineError, r"needs a budget: --epochs N, --max-seconds S"),
    Row("pyro-vae holes", "negative beta", lambda ws: cli("holes", "--betas", "0,-1"),
        CommandLineError, r"argument --betas: expected comma-separated numbers >= 0"),
    Row("save_model", "a model built from custom modules",
        lambda ws: pv.save_model(pv.VAE(64, 3, decoder=torch.nn.Linear(3, 64)), ws.model_file),
        ValueError, r"no reconstructable configuration.*torch.save\(model.state_dict\(\)"),
]


@pytest.mark.parametrize("row", [pytest.param(row, id=f"{row.entry}: {row.mistake}",
                                              marks=row.marks) for row in MATRIX])
def test_bad_input(row, workspace):
    before = workspace.snapshot()
    with pytest.raises(row.error, match=row.match) as info:
        row.call(workspace)
    message = str(info.value)
    assert "\n" not in message, message
    assert workspace.snapshot() == before   # nothing already saved changed


def test_a_failed_resume_changes_neither_the_model_nor_the_files(workspace):
    model = workspace.model(z_dim=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pv.CheckpointError):
        pv.fit(model, workspace.x, resume=workspace.run, **SETTINGS)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model = workspace.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pv.CheckpointError):
        pv.fit(model, workspace.x, resume=workspace.run, **{**SETTINGS, "batch_size": 20})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
