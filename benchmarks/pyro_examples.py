"""pyro-vae beside Pyro's own VAE examples, on the same data and budget, in one table.

Pyro's ``examples/vae/vae.py`` (784-400-50 softplus VAE, Adam 1e-3, batch 256) and
``examples/vae/ss_vae_M2.py`` (M2, ``--sup-num 100 --aux-loss -alm 46 -enum parallel``,
hidden 500, z 50, lr 0.00042, batch 100) are run from a checkout of Pyro's examples that you
point at (they are not vendored): ``git clone https://github.com/pyro-ppl/pyro`` and pass
``--pyro-examples pyro/examples/vae`` (or set ``PYRO_EXAMPLES``). Each runs in its own
process, unchanged except for what this machine requires, printed before the table:

* data: ``torchvision.datasets.MNIST`` (which the examples load through
  ``pyro.contrib.examples.util``, and which would download) is replaced by a reader of the
  local IDX files (``--data-dir``), with the images thresholded at 0.5 as pyro-vae's
  ``--binarize threshold`` (``--binarize none`` keeps the examples' grey levels, and
  pyro-vae then scores them as they do, by the Bernoulli cross-entropy:
  ``--binarize none --likelihood bernoulli --likelihood-option grey_levels=true``);
* their figures are off: ``utils.vae_plots`` needs seaborn and visdom, which are not
  installed, and draw nothing the table uses;
* they assert Pyro 1.9.1; the installed 1.9.x is let through.

pyro-vae runs the same configuration through ``pyro-vae train`` (its command is printed).
The table: seconds per epoch of training (the median over epochs; Pyro's examples evaluate
between epochs, which is not counted), the training loss per datapoint of the last epoch,
the test ELBO per datapoint (VAE; Pyro's ``svi.evaluate_loss`` is one draw, pyro-vae's
``evaluate`` ten), and for M2 the test accuracy of the last epoch and at the best
validation epoch.

    python benchmarks/pyro_examples.py --pyro-examples ~/pyro/examples/vae --data-dir DIR \\
        --epochs 5 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import print_header

EXAMPLES = ("vae", "m2")

#: pyro-vae's flags for the configuration of each example
PYRO_VAE_FLAGS = {
    "vae": ["--hidden", "400", "--z-dim", "50", "--activation", "softplus", "--lr", "1e-3",
            "--batch-size", "256"],
    "m2": ["--model", "m2", "--labels", "100", "--discrete", "enum", "--aux-weight", "46",
           "--hidden", "500", "--z-dim", "50", "--activation", "softplus", "--lr", "0.00042",
           "--batch-size", "100", "--data-option", "validation_size=10000",
           "--data-option", "validation_split=last"],
}

#: the example programs' own flags for the same configuration
PYRO_FLAGS = {
    "vae": ["-tf", "1"],
    "m2": ["--seed", "0", "--sup-num", "100", "--aux-loss", "-alm", "46", "-enum", "parallel",
           "-zd", "50", "-hl", "500", "-lr", "0.00042", "-bs", "100"],
}
SCRIPTS = {"vae": "vae.py", "m2": "ss_vae_M2.py"}

ADAPTATIONS = [
    "torchvision.datasets.MNIST -> a reader of the local IDX files in the data directory "
    "(no download)",
    "utils.vae_plots: figures off (they need seaborn and visdom); visdom.Visdom is a stub",
    "pyro.__version__ reported as 1.9.1 to the examples' version assert",
]

# ---- the shim the examples run with --------------------------------------------------------

_TORCHVISION_DATASETS = '''
"""Stand-in for torchvision.datasets.MNIST: the local IDX files, no download."""
import os, urllib.error
import torch
from pyro_vae.data.mnist import read_mnist_file

URLError = urllib.error.URLError


class _Utils:
    @staticmethod
    def download_and_extract_archive(*args, **kwargs):
        raise RuntimeError("no downloads here: the IDX files are read locally")


utils = _Utils()


class MNIST:
    resources = []

    def __init__(self, root=None, train=True, transform=None, target_transform=None,
                 download=False, **kwargs):
        prefix = "train" if train else "t10k"
        directory = os.environ["PYRO_VAE_DATA"]
        verify = os.environ.get("PYRO_EXAMPLES_VERIFY", "1") == "1"
        images = torch.from_numpy(read_mnist_file(f"{prefix}-images-idx3-ubyte", directory,
                                                  verify).copy())
        if os.environ.get("PYRO_EXAMPLES_BINARIZE", "threshold") == "threshold":
            images = torch.where(images.float() / 255.0 > 0.5, 255, 0).to(torch.uint8)
        self.data = images
        self.targets = torch.from_numpy(
            read_mnist_file(f"{prefix}-labels-idx1-ubyte", directory, verify).astype("int64"))
        self.transform, self.target_transform = transform, target_transform
        self.raw_folder = directory

    def _check_exists(self):
        return True

    def __len__(self):
        return len(self.data)
'''

_RUNNER = '''
"""Run one of Pyro's example programs with the adaptations the benchmark prints."""
import runpy, sys
example = sys.argv[1]
sys.argv = [example] + sys.argv[2:]
sys.path.insert(0, __import__("os").path.dirname(example))
import pyro
if pyro.__version__.startswith("1.9"):
    pyro.__version__ = "1.9.1"
import utils.vae_plots as plots
for name in dir(plots):
    if name.startswith(("plot_", "mnist_test_tsne")):
        setattr(plots, name, lambda *args, **kwargs: None)
runpy.run_path(example, run_name="__main__")
'''


def write_shim(directory: Path) -> Path:
    """The stand-in modules and the runner, in ``directory``; returns the runner."""
    (directory / "torchvision" / "datasets").mkdir(parents=True, exist_ok=True)
    (directory / "torchvision" / "transforms").mkdir(exist_ok=True)
    (directory / "torchvision" / "__init__.py").write_text("from . import datasets, transforms\n")
    (directory / "torchvision" / "datasets" / "__init__.py").write_text(_TORCHVISION_DATASETS)
    (directory / "torchvision" / "transforms" / "__init__.py").write_text(
        "class Compose:\n    def __init__(self, transforms):\n        self.transforms = "
        "transforms\n\n\nclass ToTensor:\n    pass\n")
    (directory / "visdom.py").write_text(
        "class Visdom:\n    def __init__(self, *args, **kwargs):\n        raise RuntimeError("
        "'visdom is not available here')\n")
    runner = directory / "run_example.py"
    runner.write_text(_RUNNER)
    return runner


# ---- reading the examples' output ----------------------------------------------------------

VAE_TRAIN = re.compile(r"\[epoch (\d+)\]\s+average training loss: ([-\d.eE+]+)")
VAE_TEST = re.compile(r"\[epoch (\d+)\]\s+average test loss: ([-\d.eE+]+)")
M2_EPOCH = re.compile(r"^(\d+) epoch: avg losses (.*) validation accuracy ([\d.]+) "
                      r"test accuracy ([\d.]+)")
M2_FINAL = re.compile(r"best validation accuracy ([\d.]+) corresponding testing accuracy "
                      r"([\d.]+) last testing accuracy ([\d.]+)")


def parse_pyro_output(example: str, lines: list[tuple[float, str]]) -> dict:
    """The table's numbers from an example's timestamped output lines ``(seconds, text)``:
    training seconds per epoch (from the previous line that ended an epoch, so the examples'
    evaluations between epochs are not counted), the last training loss, and the test ELBO
    (VAE) or test accuracies (M2)."""
    row: dict = {"epoch_seconds": [], "train_loss": None}
    previous = None
    for stamp, text in lines:
        if example == "vae":
            if match := VAE_TRAIN.search(text):
                if previous is not None:
                    row["epoch_seconds"].append(stamp - previous)
                row["train_loss"] = float(match.group(2))
                previous = stamp
            elif match := VAE_TEST.search(text):
                row["test_elbo"] = -float(match.group(2))
                previous = stamp
        elif match := M2_EPOCH.search(text):
            if previous is not None:
                row["epoch_seconds"].append(stamp - previous)
            losses = [float(v) for v in match.group(2).split()]
            row["train_loss"] = losses[len(losses) // 2] if losses else None
            row["test_accuracy"] = float(match.group(4))
            previous = stamp
        elif match := M2_FINAL.search(text):
            row["best_test_accuracy"] = float(match.group(2))
    return row


def run_pyro_example(example: str, examples_dir: Path, runner: Path, shim: Path, epochs: int,
                     env: dict) -> dict:
    """Run the example in its own process, reading its output as it comes."""
    script = examples_dir / SCRIPTS[example]
    command = [sys.executable, "-u", str(runner), str(script), "-n", str(epochs),
               *PYRO_FLAGS[example]]
    print(f"pyro      {' '.join(command[2:])}", flush=True)
    lines = []
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True,
                                   env={**env, "PYTHONPATH": os.pathsep.join(
                                       [str(shim), env.get("PYTHONPATH", "")])})
        for text in process.stdout:
            lines.append((time.perf_counter() - started, text.rstrip()))
            print(f"  {lines[-1][0]:8.1f} s | {lines[-1][1]}", flush=True)   # the record
        if process.wait() != 0:
            tail = "\n".join(text for _, text in lines[-15:])
            raise SystemExit(f"Pyro's {SCRIPTS[example]} failed:\n{tail}")
    return parse_pyro_output(example, lines)


def run_pyro_vae(example: str, data_dir: str, epochs: int, binarize: str, out: Path,
                 env: dict) -> dict:
    """The same configuration through ``pyro-vae train``; numbers from the run directory."""
    grey = (["--likelihood", "bernoulli", "--likelihood-option", "grey_levels=true"]
            if binarize == "none" else [])
    command = [sys.executable, "-m", "pyro_vae", "train", "--dataset", "mnist", "--data-dir",
               data_dir, "--binarize", binarize, *grey, "--epochs", str(epochs), "--eval-samples",
               "10", "--no-figures", "--quiet", "--out", str(out), *PYRO_VAE_FLAGS[example]]
    print(f"pyro-vae  {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return read_pyro_vae_run(out)


def read_pyro_vae_run(out: Path) -> dict:
    """The table's numbers from a run directory's history.csv and metrics.json (read as
    files, so that a run written by another version of pyro-vae reads too)."""
    with open(out / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    metrics = json.loads((out / "metrics.json").read_text())

    def number(text):
        return float(text) if text not in ("", None) else None

    row = {"epoch_seconds": [float(r["seconds"]) for r in history],
           "train_loss": number(history[-1]["loss"]), "test_elbo": metrics["test"]["elbo"]}
    if "test_accuracy" in history[-1]:
        row["test_accuracy"] = number(history[-1]["test_accuracy"])
        row["best_test_accuracy"] = metrics.get("best_validation", {}).get("test_accuracy")
    return row


def table(rows: list[tuple[str, str, dict]]) -> str:
    """One line per (example, implementation)."""
    header = (f"{'example':<8} {'implementation':<15} {'s/epoch':>8} {'train loss':>11} "
              f"{'test ELBO':>10} {'test acc':>9} {'acc@best val':>13}")
    out = [header, "-" * len(header)]

    def cell(value, width, digits):
        return f"{value:>{width}.{digits}f}" if isinstance(value, (int, float)) else (
            f"{'-':>{width}}")

    for example, implementation, row in rows:
        seconds = statistics.median(row["epoch_seconds"]) if row["epoch_seconds"] else None
        out.append(f"{example:<8} {implementation:<15} {cell(seconds, 8, 2)} "
                   f"{cell(row.get('train_loss'), 11, 2)} {cell(row.get('test_elbo'), 10, 2)} "
                   f"{cell(row.get('test_accuracy'), 9, 4)} "
                   f"{cell(row.get('best_test_accuracy'), 13, 4)}")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyro-examples", default=os.environ.get("PYRO_EXAMPLES"),
                        help="the examples/vae directory of a Pyro checkout ($PYRO_EXAMPLES)")
    parser.add_argument("--data-dir", default=os.environ.get("PYRO_VAE_DATA"),
                        help="directory with the MNIST IDX files ($PYRO_VAE_DATA)")
    parser.add_argument("--examples", nargs="+", default=list(EXAMPLES), choices=EXAMPLES)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--binarize", choices=["threshold", "none"], default="threshold",
                        help="threshold: both on images thresholded at 0.5 (default); none: "
                             "both on the grey levels, scored by the Bernoulli cross-entropy "
                             "as Pyro's examples do (pyro-vae: likelihood option "
                             "grey_levels=true)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of every process (default 1)")
    parser.add_argument("--out", default=None, help="where pyro-vae's runs go (default: a "
                        "temporary directory)")
    args = parser.parse_args(argv)
    if not args.pyro_examples or not (Path(args.pyro_examples) / "vae.py").is_file():
        raise SystemExit("point --pyro-examples (or PYRO_EXAMPLES) at the examples/vae "
                         "directory of a Pyro checkout: git clone "
                         "https://github.com/pyro-ppl/pyro; got "
                         f"{args.pyro_examples!r}")
    if not args.data_dir:
        raise SystemExit("pass --data-dir (or set PYRO_VAE_DATA): the directory of the MNIST "
                         "IDX files")
    import torch
    print_header("pyro-vae beside Pyro's VAE examples", torch.device("cpu"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYRO_VAE_DATA": args.data_dir,
           "PYRO_EXAMPLES_BINARIZE": args.binarize}
    images = ("thresholded at 0.5" if args.binarize == "threshold"
              else "grey levels, as the examples have them")
    print("adapted   " + "\n          ".join(ADAPTATIONS + [f"images: {images}"]))
    print(f"threads   OMP_NUM_THREADS={args.threads} for every process; {args.epochs} "
          "epoch(s) each")
    print()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        shim = Path(scratch) / "shim"
        runner = write_shim(shim)
        runs = Path(args.out) if args.out else Path(scratch) / "runs"
        binarize = args.binarize
        for example in args.examples:
            rows.append((example, "pyro example", run_pyro_example(
                example, Path(args.pyro_examples), runner, shim, args.epochs, env)))
            rows.append((example, "pyro-vae", run_pyro_vae(
                example, args.data_dir, args.epochs, binarize, runs / example, env)))
    print()
    print(table(rows))
    print()
    print(textwrap.fill(
        "s/epoch: median seconds of training per epoch (wall clock, each process alone on "
        "its core's share); train loss: the last epoch's training objective per datapoint "
        "(Pyro's M2: the unsupervised part); test ELBO: per datapoint (higher is better); "
        "acc@best val: test accuracy at the epoch of the best validation accuracy. The first "
        "epoch of a Pyro example has no time (its process starts before it).", 100))


if __name__ == "__main__":
    main()
