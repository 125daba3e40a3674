"""Run directories: a resolved configuration, the model built from it, and what it produced.

A run directory holds::

    config.toml     the resolved configuration (every option; rerun with --config)
    history.csv     one row per epoch: loss, elbo, recon, kl (train and val_*), beta, seconds
    metrics.json    {"run": ..., "training": last epoch, "test": evaluation, ...}
    model.pt        weights + model configuration (pyro_vae.load_model)
    checkpoint.pt   the training state every checkpoint_every epochs (pyro-vae train --resume)
    figures/        PNG figures (pyro_vae.plots.standard_figures)

Every file is written atomically; an existing non-empty directory is never overwritten
unless asked (``overwrite=True``, and then only a run directory). :func:`train_run` is the
whole job behind ``pyro-vae train``; :func:`load_data` and :func:`build_model` turn a
configuration into a dataset and a model for notebooks and other commands.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyro
import torch

from pyro_vae import distributed as distributed_setup
from pyro_vae._version import __version__
from pyro_vae.checkpoints import CHECKPOINT_FILE, CheckpointFiles
from pyro_vae.data import Dataset, is_array_path
from pyro_vae.inference import KLSchedule, Monitoring, Optimization, evaluate, fit, resolve_device
from pyro_vae.inference.batching import as_source, first_tensor
from pyro_vae.io import atomic_write_text, load_model, save_model
from pyro_vae.runs.builders import (
    build_model,
    evaluation_labels,
    load_data,
    resolve_likelihood,
    training_data,
    training_estimator,
)
from pyro_vae.runs.class_tracking import ClassAccuracyTracker
from pyro_vae.runs.config import read_config_file, resolve_config, to_toml
from pyro_vae.runs.errors import ConfigError, RunDirectoryError

CONFIG_FILE, HISTORY_FILE, METRICS_FILE = "config.toml", "history.csv", "metrics.json"
MODEL_FILE, FIGURES_DIR = "model.pt", "figures"
#: files (globs) a run writes, removed when a run is overwritten
RUN_ARTIFACTS = (CONFIG_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, CHECKPOINT_FILE,
                 "samples-*.npz",
                 "reconstructions-*.npz", f"{FIGURES_DIR}/*.png")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelFactory:
    """``seed -> fresh model`` for :func:`pyro_vae.compare`: the model a (partial)
    configuration describes, sized for ``dataset`` (the caller seeds the initialisation);
    ``config`` is what a comparison records."""

    config: dict
    dataset: Dataset

    def __call__(self, seed: int) -> torch.nn.Module:
        return build_model(resolve_config(self.config), self.dataset)


# ---- files ----------------------------------------------------------------------------------

def write_config(path: str | Path, config: Mapping) -> Path:
    header = (f"pyro-vae run configuration, resolved {now()}.\n"
              "Rerun with: pyro-vae train --config THIS_FILE --out NEW_DIR")
    return atomic_write_text(path, to_toml(config, header))


def write_history(path: str | Path, records: list[dict]) -> Path:
    """Epoch records as CSV, one column per key seen (in first-seen order)."""
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return atomic_write_text(path, buffer.getvalue())


def _parse_cell(text: str):
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() \
        else number


def read_history(path: str | Path) -> list[dict]:
    """The records written by :func:`write_history` (numbers parsed, empty cells None)."""
    with open(path, newline="") as handle:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _json_ready(value):
    """NaN/inf become None: metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def read_metrics(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunDirectoryError(f"{str(path)!r} is not valid JSON ({error}); restore it or "
                                "delete it and run 'pyro-vae evaluate' again") from None


def update_metrics(path: str | Path, updates: Mapping) -> dict:
    """Merge ``updates`` into metrics.json (top-level keys replaced, others kept) atomically;
    returns the merged metrics."""
    metrics = read_metrics(path)
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(metrics.get(key), dict) and key == "run":
            metrics[key] = {**metrics[key], **value}
        else:
            metrics[key] = value
    atomic_write_text(path, json.dumps(_json_ready(metrics), indent=2) + "\n")
    return metrics


# ---- run directories ------------------------------------------------------------------------

def default_run_dir(config: Mapping, root: str | Path = "runs", prefix: str = "") -> Path:
    """``runs/<prefix><dataset>-<YYYYmmdd-HHMMSS>``, with a numeric suffix if taken."""
    stem = Path(config["dataset"]).stem if is_array_path(config["dataset"]) else config[
        "dataset"]
    base = Path(root) / f"{prefix}{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, number = base, 1
    while path.exists():
        number += 1
        path = base.with_name(f"{base.name}-{number}")
    return path


def prepare_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create ``path`` for a new run. A non-empty directory is an error unless
    ``overwrite`` and it is a run directory; then the files of the old run are removed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"{str(path)!r} exists and is not a directory; choose another "
                                "--out")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise RunDirectoryError(
                f"run directory {str(path)!r} already exists and is not empty; choose another "
                "--out, or pass --overwrite to replace the run in it")
        if not (path / CONFIG_FILE).is_file():
            raise RunDirectoryError(
                f"--overwrite replaces only a pyro-vae run directory (one holding "
                f"{CONFIG_FILE}); {str(path)!r} is not one, so nothing was touched. Choose "
                "another --out")
        for pattern in RUN_ARTIFACTS:
            for old in path.glob(pattern):
                old.unlink()
    (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Run:
    """A run directory on disk: its path, resolved configuration and metrics."""

    path: Path
    config: dict
    metrics: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def figures(self) -> list[Path]:
        return sorted((self.path / FIGURES_DIR).glob("*.png"))

    def history(self) -> list[dict]:
        path = self.path / HISTORY_FILE
        return read_history(path) if path.is_file() else []

    def load_model(self, device="cpu") -> torch.nn.Module:
        if not self.model_path.is_file():
            raise RunDirectoryError(f"{str(self.path)!r} has no {MODEL_FILE} (status: "
                                    f"{self.metrics.get('run', {}).get('status', 'unknown')}); "
                                    "train it again with pyro-vae train")
        return load_model(self.model_path, resolve_device(device))

    def load_data(self) -> Dataset:
        return load_data(self.config)

    def update_metrics(self, updates: Mapping) -> dict:
        self.metrics = update_metrics(self.path / METRICS_FILE, updates)
        return self.metrics


def open_run(path: str | Path) -> Run:
    """Read a run directory written by :func:`train_run`."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirectoryError(f"run directory {str(path)!r} does not exist; pass a directory "
                                "written by pyro-vae train (its --out)")
    if not (path / CONFIG_FILE).is_file():
        raise RunDirectoryError(f"{str(path)!r} is not a pyro-vae run directory (no "
                                f"{CONFIG_FILE}); pass a directory written by pyro-vae train")
    config = resolve_config(read_config_file(path / CONFIG_FILE))
    return Run(path, config, read_metrics(path / METRICS_FILE))


# ---- the jobs -------------------------------------------------------------------------------

#: multiply-adds, roughly, that a train run's default evaluation may spend: K x N x parameters
#: (each (particle, datapoint) pair passes the networks once); a few seconds of one CPU core
EVALUATION_WORK = 2 * 10 ** 11
#: the bounds of the automatic K: Burda et al.'s 5000 where the work allows, never below 10
AUTO_EVAL_SAMPLES = (10, 5000)


def auto_eval_samples(model, num_points: int) -> int:
    """The K a train run evaluates with when ``eval_samples = 0``: 5000 unless K x N x
    (number of parameters) would exceed :data:`EVALUATION_WORK`, then as many as fit, at
    least 10 (digits: 5000; MNIST's 10k test points with 784-400-50 networks: 29).
    ``pyro-vae evaluate RUN --num-samples 5000`` gives the tighter bound afterwards."""
    parameters = sum(p.numel() for p in model.parameters())
    low, high = AUTO_EVAL_SAMPLES
    return max(low, min(high, EVALUATION_WORK // max(1, num_points * parameters)))


def evaluate_split(model, dataset: Dataset, split: str = "test", num_samples: int = 5000,
                   seed: int = 0, device="cpu") -> dict:
    """:func:`~pyro_vae.evaluate` on one split, as a JSON-ready summary (records K, seed and
    time). A dynamically binarised training split is evaluated on one fresh draw."""
    data = dataset.split(split).to(resolve_device(device))
    labels = evaluation_labels(model, dataset, split)
    started = time.perf_counter()
    summary = evaluate(model, data, num_samples, seed=seed, labels=labels).summary()
    summary.update(split=split, seed=seed, seconds=round(time.perf_counter() - started, 3),
                   evaluated_at=now())
    return summary


def write_figures(model, dataset: Dataset, history, directory: str | Path, seed: int = 0
                  ) -> list[Path]:
    """The standard figures of a model (see :func:`pyro_vae.plots.standard_figures`) as PNG."""
    from pyro_vae.plots import save_figures, standard_figures
    figures = standard_figures(model, dataset, history, seed=seed)
    if "y" in getattr(model, "discrete_sites", ()):
        from pyro_vae.plots.classes import plot_class_samples
        shape = dataset.feature_shape if dataset.kind == "image" else None
        figures["class_samples"] = plot_class_samples(model, 8, shape)
    return save_figures(figures, directory)


#: options a resumed run may change (everything else must stay as the run was configured)
RESUME_OVERRIDABLE = ("epochs", "max_seconds", "device", "eval_samples", "figures",
                      "checkpoint_every", "threads")


def train_run(config: Mapping | None = None, out: str | Path | None = None, *,
              overwrite: bool = False, quiet: bool = False, resume: str | Path | None = None,
              distributed: bool = False) -> Run:
    """Fit the model a configuration describes and write a run directory (the job behind
    ``pyro-vae train``). ``config`` may be partial; missing options take their defaults.

    Everything that can be checked before training (options, data, likelihood support,
    batch size, the directory) is checked before anything is written. The fit writes
    ``RUN/checkpoint.pt`` every ``checkpoint_every`` epochs and at the end.

    ``resume=RUN`` continues the run in ``RUN`` from its checkpoint (``config`` may then
    change only :data:`RESUME_OVERRIDABLE`, e.g. more ``epochs``); on the CPU the result is
    bit-identical to the run done in one go. A resume that fails before its first epoch
    leaves the run directory as it was.

    ``distributed=True`` (every process that torchrun starts makes the same call) trains
    with all processes (:func:`pyro_vae.fit`); only rank 0 writes the run directory,
    evaluates and draws the figures; the other ranks return once training is done.
    """
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True or False; got {distributed!r}")
    share = distributed_setup.file_work_runner(distributed)
    if distributed:
        if not distributed_setup.launched_by_torchrun():
            raise ConfigError(
                "--distributed needs the processes that torchrun starts (the variables "
                f"{', '.join(distributed_setup.TORCHRUN_VARIABLES)} are not all set); launch "
                "with `torchrun --standalone --nproc_per_node=2 -m pyro_vae train "
                "--distributed ...`, or train without --distributed")
        distributed_setup.init_distributed(device=resolve_config(config)["device"])
    if resume is not None:
        path, config = share(_resumed_config, resume, config or {})
    else:
        config = resolve_config(config)
    is_writer = distributed_setup.is_rank_zero()
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"]) if not distributed else None
    dataset = load_data(config)
    pyro.set_rng_seed(config["seed"])   # the initial weights too are the seed's
    model = build_model(config, dataset)
    check = getattr(model, "check_data", None)
    if callable(check):
        check(first_tensor(as_source(dataset.train)), what="training data")
    n_train = len(dataset.train)
    if config["batch_size"] > n_train:
        raise ConfigError(f"batch_size {config['batch_size']} exceeds the {n_train} training "
                          f"points of {dataset.name!r}; use batch_size <= {n_train}")
    estimator = training_estimator(config, model, dataset)
    train_data = training_data(config, dataset)
    if resume is None:
        path = share(_start_run_dir, out if out is not None else default_run_dir(config),
                     overwrite, config, dataset, model, device)
    run = Run(path, dict(config), {})
    records: list[dict] = []
    resumed_rows = Run(path, config, {}).history() if resume is not None and is_writer else []

    def record_epoch(record: dict) -> None:
        if not is_writer:
            return
        if not records and resume is not None:   # keep the epochs before the checkpoint's
            records.extend(row for row in resumed_rows if row["epoch"] < record["epoch"])
            write_config(path / CONFIG_FILE, config)
            run.update_metrics({"run": {"status": "training", "resumed": now()}})
        records.append(record)
        write_history(path / HISTORY_FILE, records)

    callbacks = [record_epoch]
    tracker = None
    if ClassAccuracyTracker.applies(model, dataset):
        tracker = ClassAccuracyTracker(model, dataset, path, saves=is_writer)
        callbacks.insert(0, tracker)   # its columns reach history.csv
    try:
        result = fit(
            model, train_data, estimator=estimator, epochs=config["epochs"],
            batch_size=config["batch_size"], lr=config["lr"],
            optimizer=Optimization(config["optimizer"], clip_norm=config["clip_norm"] or None),
            seed=config["seed"], device=config["device"] if distributed else device,
            beta=KLSchedule(config["beta"], warmup_epochs=config["beta_warmup_epochs"]),
            max_seconds=config["max_seconds"] or None, validation_data=dataset.validation,
            quiet=quiet, monitor=Monitoring(callbacks=callbacks),
            checkpoints=CheckpointFiles(path, every=config["checkpoint_every"],
                                        resume=resume is not None),
            distributed=distributed)
    except BaseException as error:
        if is_writer and (resume is None or records):
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            run.update_metrics({"run": {"status": status, "finished": now(),
                                        "error": f"{type(error).__name__}: {error}"}})
        raise
    if not is_writer:
        return run
    device = next(model.parameters()).device
    write_history(path / HISTORY_FILE, result.history)
    save_model(model, path / MODEL_FILE)
    run.update_metrics({"run": {"status": "evaluating", "training_seconds": round(
        result.seconds, 2), "processes": result.settings.get("world_size", 1)},
        "training": {**result.settings, **result.final}})
    num_samples = config["eval_samples"] or auto_eval_samples(model, len(dataset.test))
    test = evaluate_split(model, dataset, "test", num_samples, config["seed"], device)
    run.update_metrics({"test": test})
    best = None if tracker is None else tracker.best(result.history)
    if best is not None:
        run.update_metrics({"best_validation": best})
    if config["figures"]:
        write_figures(model, dataset, result, path / FIGURES_DIR, config["seed"])
    run.update_metrics({"run": {"status": "complete", "finished": now()}})
    return run


def _start_run_dir(out, overwrite: bool, config: dict, dataset: Dataset, model,
                   device) -> Path:
    """Create the run directory of a new run and write its configuration and metadata."""
    path = prepare_run_dir(out, overwrite)
    write_config(path / CONFIG_FILE, config)
    update_metrics(path / METRICS_FILE, {"run": {
        "status": "training", "started": now(), "dataset": dataset.describe(),
        "likelihood": resolve_likelihood(config, dataset),
        "device": str(device or config["device"]),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "versions": {"pyro_vae": _version(), "pyro": pyro.__version__,
                     "torch": torch.__version__}}})
    return path


def _resumed_config(run_dir, requested: Mapping) -> tuple[Path, dict]:
    """The run directory to resume and its configuration, with the changes ``requested``
    may make (:data:`RESUME_OVERRIDABLE`); any other difference is a :class:`ConfigError`."""
    run = open_run(run_dir)
    if not (run.path / CHECKPOINT_FILE).is_file():
        raise RunDirectoryError(
            f"{str(run.path)!r} has no {CHECKPOINT_FILE} to resume from (runs write one every "
            "checkpoint_every epochs and at the end); start a new run with --out instead")
    requested = resolve_config(run.config, requested)
    changed = sorted(name for name in requested if requested[name] != run.config[name]
                     and name not in RESUME_OVERRIDABLE)
    if changed:
        raise ConfigError(
            f"--resume continues {str(run.path)!r} as it was configured, but these options "
            f"differ from its config.toml: "
            + ", ".join(f"{n}={requested[n]!r} (run: {run.config[n]!r})" for n in changed)
            + f". Only {', '.join(RESUME_OVERRIDABLE)} may change; drop the others, or start "
            "a new run with --out")
    return run.path, requested


def _version() -> str:
    return __version__


def __getattr__(name: str):
    """``summary_table`` moved to :mod:`pyro_vae.runs.summary`; the old path still works, with
    a warning, for one release."""
    if name == "summary_table":
        from pyro_vae.runs.summary import summary_table
        warnings.warn("pyro_vae.runs.directory.summary_table moved to pyro_vae.runs.summary; "
                      "import it from there or from pyro_vae.runs (the old path is removed in "
                      "pyro-vae 0.3).", DeprecationWarning, stacklevel=2)
        return summary_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
