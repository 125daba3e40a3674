"""Comparison and diagnostic reports on disk: CSV, JSON, markdown tables and figures.

:func:`run_comparison` is the whole ``pyro-vae compare`` command as one call: load a
dataset, run :func:`pyro_vae.inference.compare`, write every output into one directory.
Nothing already saved is overwritten unless asked (``overwrite=True``), and every file is
written atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from pyro_vae.inference.comparison import ComparisonResult, RunResult, compare, first_points
from pyro_vae.inference.diagnostics import GradientSNRResult, KHatResult
from pyro_vae.io import atomic_path, atomic_write_text

#: (metric, column header, format spec, as percent) for the comparison table
TABLE_COLUMNS = (
    ("log_likelihood", "test log p(x)", ".2f", False),
    ("elbo", "test ELBO", ".2f", False),
    ("kl", "KL", ".2f", False),
    ("active_units", "active units", ".1f", False),
    ("seconds_per_epoch", "s / epoch", ".3g", False),
    ("peak_memory_mb", "peak memory (MiB)", ".0f", False),
    ("epochs", "epochs", ".1f", False),
    ("khat_above_0.7", "k-hat > 0.7", ".1f", True),
    ("khat_0.5_to_0.7", "0.5 < k-hat <= 0.7", ".1f", True),
)


# ---- formatting -----------------------------------------------------------------------------
def _number(value, spec: str, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a" if value is None else str(value)
    return f"{100 * value:{spec}}%" if percent else f"{value:{spec}}"


def _mean_pm(mean, spread, spec: str, percent: bool) -> str:
    text = _number(mean, spec, percent)
    if mean is None or spread is None:
        return text
    return f"{text} ± {_number(spread, spec, percent)}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_markdown(result: ComparisonResult) -> str:
    """The comparison table (mean ± sample standard deviation over seeds) with the settings
    a reader needs to trust it."""
    s = result.settings
    budget = " and ".join(part for part in (
        f"{s['epochs']} epochs" if s.get("epochs") else "",
        f"{s['max_seconds']} s of training" if s.get("max_seconds") else "") if part)
    memory = sorted({run.memory.get("measure") for run in result.runs})
    columns = TABLE_COLUMNS
    if any(run.metrics.get("accuracy") is not None for run in result.runs):
        columns = columns + (("accuracy", "test accuracy", ".1f", True),)
    header = ["estimator", *(label for _, label, _, _ in columns)]
    rows = [[row["estimator"], *(_mean_pm(row[f"{m}_mean"], row[f"{m}_std"], d, p)
                                 for m, _, d, p in columns)]
            for row in result.summary()]
    notes = [
        f"Budget: {budget} per run; seeds {s['seeds']} (mean ± standard deviation over "
        f"seeds); every estimator starts from the same parameters for a given seed and sees "
        f"the same minibatch order.",
        f"Test: {s['num_test']} datapoints; log p(x) by importance sampling with "
        f"K = {s['eval_samples']} guide draws for every estimator; ELBO with "
        f"{s['elbo_particles']} draws; nats per datapoint.",
        "KL = E_q[log q(z|x) - log p(z)]; active units: Cov_x(E_q[z_u|x]) > 0.01; "
        "s / epoch: mean over complete epochs, training-set monitoring included.",
        f"Peak memory: {', '.join(memory)} during training"
        + (" (whole process: compare differences)" if any("RSS" in m for m in memory)
           else "") + ".",
    ]
    discrete = {site: how for run in result.runs
                for site, how in (run.evaluation.get("discrete_sites") or {}).items()}
    if discrete:
        notes.append("Discrete latent sites in every test number (whatever the estimator "
                     "trained on): " + "; ".join(f"{site} {how}" for site, how in
                                                 discrete.items()) + ".")
    if s.get("khat_samples"):
        notes.append(f"k-hat: PSIS shape of the guide's importance weights on the first "
                     f"{s['khat_points']} test points with {s['khat_samples']} draws each; "
                     f"share of points above 0.7 (unreliable) and between 0.5 and 0.7.")
    notes.append(f"Device {s['device']}, {s.get('torch_threads')} torch threads; "
                 f"{s['num_train']} training datapoints.")
    return markdown_table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def gradient_snr_markdown(result: GradientSNRResult) -> str:
    """One row per (estimator, group): SNR mean and median over elements, mean per-element
    variance, and the number of elements left out because their gradient never varies."""
    header = ["estimator", "group", "SNR (mean over elements)", "SNR (median)",
              "norm(E g) / sqrt(tr Cov g)", "mean Var(g_j)", "elements (constant)"]
    rows = [[r["estimator"], r["group"], f"{r['snr_mean']:.3g}", f"{r['snr_median']:.3g}",
             f"{r['snr_vector']:.3g}", f"{r['variance_mean']:.3g}",
             f"{r['num_elements']} ({r['num_constant']})"] for r in result.rows()]
    st = result.settings
    return (markdown_table(header, rows) + f"\n\n- {st.get('num_draws')} gradient draws at "
            f"fixed parameters on one fixed minibatch of {st.get('batch_size')}; gradients of "
            "the batch-mean negative objective.\n")


def khat_markdown(results: Mapping[str, KHatResult]) -> str:
    """One row per named k-hat result: shares of datapoints in each k-hat band."""
    header = ["guide", "datapoints", "draws", "k-hat > 0.7", "0.5 < k-hat <= 0.7",
              "k-hat <= 0.5", "median k-hat", "max k-hat"]
    rows = []
    for name, khat in results.items():
        s = khat.summary()
        rows.append([name, str(s["num_datapoints"]), str(s["num_samples"]),
                     _number(s["fraction_khat_above_0.7"], ".1f", True),
                     _number(s["fraction_khat_0.5_to_0.7"], ".1f", True),
                     _number(s["fraction_khat_at_most_0.5"], ".1f", True),
                     _number(s["khat_median"], ".2f"), _number(s["khat_max"], ".2f")])
    return markdown_table(header, rows) + "\n"


# ---- files ------------------------------------------------------------------------------------
def _json_ready(value):
    """NaN and infinities -> None (JSON has neither); tuples -> lists; numpy scalars -> float."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def csv_text(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_text(path, text)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def _refuse_existing(paths, overwrite: bool) -> None:
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"these outputs already exist: {existing}; choose another "
                              "directory or pass overwrite=True (--overwrite on the command "
                              "line); nothing was written")


def comparison_files(directory: str | os.PathLike, figures: bool = True) -> dict[str, Path]:
    """Where :func:`save_comparison` writes, by name."""
    d = Path(directory)
    files = {"summary_csv": d / "summary.csv", "runs_csv": d / "runs.csv",
             "curves_csv": d / "curves.csv", "json": d / "comparison.json",
             "markdown": d / "comparison.md"}
    if figures:
        files.update(curves_figure=d / "curves.png", khat_figure=d / "khat.png")
    return files


def save_comparison(result: ComparisonResult, directory: str | os.PathLike, *,
                    overwrite: bool = False, figures: bool = True) -> dict[str, Path]:
    """Write the comparison into ``directory``: ``summary.csv`` (per estimator: mean and std
    of every metric), ``runs.csv`` (per run), ``curves.csv`` (per epoch), ``comparison.json``
    (settings, summary, runs with histories and k-hats), ``comparison.md`` (the table) and,
    with ``figures``, ``curves.png`` and ``khat.png``. Returns the paths written."""
    files = comparison_files(directory, figures)
    if figures and not any(run.khat for run in result.runs):
        files.pop("khat_figure")
    _refuse_existing(files.values(), overwrite)
    write_text(files["summary_csv"], csv_text(result.summary()))
    write_text(files["runs_csv"], csv_text(result.run_rows()))
    write_text(files["curves_csv"], csv_text(result.curves()))
    write_text(files["json"], json.dumps(_json_ready(result.to_dict()), indent=1,
                                         allow_nan=False, default=str))
    write_text(files["markdown"], comparison_markdown(result))
    if figures:
        from pyro_vae.plots.comparison import plot_khat_by_estimator, plot_learning_curves

        save_figure(plot_learning_curves(result), files["curves_figure"])
        if "khat_figure" in files:
            save_figure(plot_khat_by_estimator(result), files["khat_figure"])
    return files


# ---- the compare command as a function -------------------------------------------------------
#: every key run_comparison understands, with its default
COMPARISON_DEFAULTS: dict = {
    "dataset": "digits",          # a name for pyro_vae.load_dataset
    "dataset_options": {},        # its options, e.g. {"binarize": True} or a data_dir
    "model": {},                  # VAE keyword arguments; x_dim and likelihood from the data
    "estimators": ["elbo", "meanfield", "iwae:k=5", "iwae:k=50"],
    "seeds": [0, 1, 2],
    "epochs": None,               # budget: epochs and/or max_seconds per run
    "max_seconds": None,
    "batch_size": None,
    "lr": 1e-3,
    "optimizer": "adam",
    "validation": True,           # monitor the validation split for the learning curves
    "test_points": None,          # evaluate on the first n test points (None: all)
    "eval_samples": 1000,
    "elbo_particles": 10,
    "eval_seed": 0,
    "khat_samples": 1000,
    "khat_points": 500,
    "device": "cpu",
    "fit_options": {},
    "save_models": False,         # write models/<estimator>_seed<s>.pt for later diagnosis
}


def _resolve_config(config: Mapping | None) -> dict:
    config = dict(config or {})
    unknown = sorted(set(config) - set(COMPARISON_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown comparison settings {unknown}; valid settings are "
                         f"{sorted(COMPARISON_DEFAULTS)}")
    resolved = {**COMPARISON_DEFAULTS, **config}
    if resolved["epochs"] is None and resolved["max_seconds"] is None:
        raise ValueError("the comparison needs a budget: set 'epochs', 'max_seconds' "
                         "(wall-clock seconds of training per run), or both")
    return resolved


def model_filename(estimator: str, seed: int) -> str:
    """A file-system-safe name such as ``iwae_k-5_seed0.pt``."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", estimator.replace("=", "-")).strip("_")
    return f"{safe}_seed{seed}.pt"


def run_comparison(config: Mapping, directory: str | os.PathLike, *, dataset=None,
                   train_data=None, test_labels=None, overwrite: bool = False,
                   quiet: bool = True,
                   progress: Callable[[RunResult], None] | None = None
                   ) -> tuple[ComparisonResult, dict[str, Path]]:
    """Load the data, compare the estimators, and write everything into ``directory``.

    ``config`` holds any of :data:`COMPARISON_DEFAULTS` (unknown keys are an error; a
    budget is required); its ``model`` is a dict of VAE keyword arguments or a factory
    ``seed -> model`` (e.g. :class:`pyro_vae.runs.ModelFactory`). ``dataset`` (a
    :class:`pyro_vae.Dataset`) replaces loading by name. ``train_data`` replaces the
    training split (e.g. M2's points joined with their partly hidden labels); ``test_labels``
    (one per test point) add test accuracy for a model with a discrete class site. Writes
    ``config.json``, the files
    of :func:`save_comparison` and, with ``save_models``, one model file per run. Existing
    outputs are an error unless ``overwrite``; the check happens before any training.
    """
    from pyro_vae.data import load_dataset
    from pyro_vae.io import save_model

    settings = _resolve_config(config)
    directory = Path(directory)
    files = comparison_files(directory)
    config_path = directory / "config.json"
    model_paths = {}
    if settings["save_models"]:
        model_paths = {(str(e).strip(), s): directory / "models" / model_filename(str(e), s)
                       for e in settings["estimators"] for s in settings["seeds"]}
    _refuse_existing([config_path, *files.values(), *model_paths.values()], overwrite)

    data = dataset if dataset is not None else load_dataset(settings["dataset"],
                                                           **settings["dataset_options"])
    model = settings["model"]
    if isinstance(model, Mapping):
        model = dict(model)
        model.setdefault("likelihood", getattr(data, "suggested_likelihood", "bernoulli"))
    else:   # a factory seed -> model; config.json records its configuration if it has one
        settings["model"] = getattr(model, "config", None) or repr(model)
    test = first_points(data.test, settings["test_points"])
    if test_labels is not None:
        test_labels = test_labels[:len(test)]
    result = compare(
        model, data.train if train_data is None else train_data, test,
        settings["estimators"], seeds=settings["seeds"],
        epochs=settings["epochs"], max_seconds=settings["max_seconds"],
        batch_size=settings["batch_size"], lr=settings["lr"], optimizer=settings["optimizer"],
        validation_data=data.validation if settings["validation"] else None,
        eval_samples=settings["eval_samples"], elbo_particles=settings["elbo_particles"],
        eval_seed=settings["eval_seed"], khat_samples=settings["khat_samples"],
        khat_points=settings["khat_points"], device=settings["device"],
        fit_options=settings["fit_options"], keep_models=settings["save_models"],
        quiet=quiet, on_run=progress, test_labels=test_labels)
    result.settings["dataset"] = getattr(data, "name", settings["dataset"])
    written = {"config": write_text(config_path, json.dumps(_json_ready(settings), indent=1,
                                                            default=str))}
    written.update(save_comparison(result, directory, overwrite=overwrite))
    for run in result.runs:
        if run.model is not None:
            path = model_paths[(run.estimator, run.seed)]
            written[f"model {run.estimator} seed {run.seed}"] = save_model(
                run.model, path, extra={"estimator": run.estimator, "seed": run.seed,
                                        "metrics": _json_ready(run.metrics)})
            run.model = None
    return result, written
