"""Comparing estimators on one model: same model, data, budget, seeds and initialisations.

For every seed s the model is built once (after ``pyro.set_rng_seed(s)``) and deep-copied
for each estimator, so every estimator starts from identical parameters; ``fit(seed=s)``
then gives every estimator the same minibatch order. Each fitted model is judged on the
test data with the same importance-sampling budget K (log p(x) ~= log mean_k w_k), the
same evaluation seed, the ELBO and its KL, active units and the PSIS k-hat of its guide.
Differences in the table are then due to the estimator (and the particle noise it draws),
not to initialisation or data order; the spread over seeds shows how much that noise moves
the numbers.

Nothing here reads or writes files: :mod:`pyro_vae.studies.comparison` saves tables and figures.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pyro
import torch

from pyro_vae.inference.batching import TensorSource, as_source, first_tensor
from pyro_vae.inference.devices import resolve_device
from pyro_vae.inference.diagnostics import MIN_KHAT_SAMPLES, psis_khat
from pyro_vae.inference.estimators import parse_estimator
from pyro_vae.inference.evaluation import evaluate
from pyro_vae.inference.fitting.options import Monitoring
from pyro_vae.inference.fitting.svi import fit

#: the per-run numbers the summary table aggregates over seeds, in table order
METRICS = ("log_likelihood", "elbo", "kl", "active_units", "seconds_per_epoch",
           "peak_memory_mb", "epochs", "khat_above_0.7", "khat_0.5_to_0.7", "accuracy")


# ---- peak memory ----------------------------------------------------------------------------
def _proc_status_kib(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Collect garbage and ask glibc to return freed heap memory to the system, so memory
    an earlier run freed but the allocator kept does not count towards the next run."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a block, in MiB, measured as honestly as the device allows.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: the peak
      of memory held by tensors on that GPU during the block.
    * CPU on Linux: the process's peak resident set size (``VmHWM`` in /proc/self/status),
      reset to the current RSS at entry via /proc/self/clear_refs, after returning freed
      heap memory to the system (glibc ``malloc_trim``). It counts the whole process
      (interpreter, libraries, data: ``start_mb`` is the RSS at entry), so compare
      differences between runs; tracemalloc would miss torch's allocations entirely.
    * Elsewhere: unavailable (``peak_mb`` is None) rather than a number that cannot be reset.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None
        self.start_mb: float | None = None
        self.measure = "unavailable"
        self._rss = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2 ** 20
            self.measure = "cuda max_memory_allocated"
        elif _reset_peak_rss():
            self._rss = True
            self.start_mb = (_proc_status_kib("VmRSS") or float("nan")) / 1024
            self.measure = "process peak RSS (VmHWM)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        elif self._rss:
            peak = _proc_status_kib("VmHWM")
            self.peak_mb = None if peak is None else peak / 1024


# ---- results --------------------------------------------------------------------------------
def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, shapes, dtypes and values): equal digests
    mean identical parameters."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass
class RunResult:
    """One (estimator, seed) run: its training history and test numbers."""

    estimator: str
    seed: int
    initial_digest: str
    history: list[dict]
    metrics: dict                 # the METRICS of this run
    evaluation: dict              # EvaluationResult.summary() on the test data
    khat: list[float] | None      # PSIS k-hat per test datapoint (k-hat subset)
    train_seconds: float
    eval_seconds: float
    memory: dict                  # peak_mb, start_mb, measure
    model: torch.nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready (the fitted model is left out)."""
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def _mean_and_spread(values: list[float]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else None)


@dataclass
class ComparisonResult:
    """Every run of :func:`compare` and the settings shared by all of them."""

    runs: list[RunResult]
    settings: dict

    @property
    def estimators(self) -> list[str]:
        return list(dict.fromkeys(run.estimator for run in self.runs))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(run.seed for run in self.runs))

    def run(self, estimator: str, seed: int) -> RunResult:
        wanted = str(parse_estimator(estimator))
        for run in self.runs:
            if str(parse_estimator(run.estimator)) == wanted and run.seed == seed:
                return run
        raise KeyError(f"no run for estimator {estimator!r} and seed {seed}; estimators "
                       f"{self.estimators}, seeds {self.seeds}")

    def summary(self) -> list[dict]:
        """One row per estimator: ``<metric>_mean`` and ``<metric>_std`` (sample standard
        deviation over seeds, None with one seed) for every metric in METRICS."""
        rows = []
        for estimator in self.estimators:
            runs = [run for run in self.runs if run.estimator == estimator]
            row = {"estimator": estimator, "seeds": len(runs)}
            for metric in METRICS:
                mean, spread = _mean_and_spread([run.metrics.get(metric) for run in runs])
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean, spread
            rows.append(row)
        return rows

    def run_rows(self) -> list[dict]:
        """One row per run: estimator, seed, its metrics and the initial-state digest."""
        return [{"estimator": run.estimator, "seed": run.seed, **run.metrics,
                 "train_seconds": run.train_seconds, "eval_seconds": run.eval_seconds,
                 "memory_at_start_mb": run.memory.get("start_mb"),
                 "initial_digest": run.initial_digest} for run in self.runs]

    def curves(self) -> list[dict]:
        """Learning curves, long form: one row per (estimator, seed, epoch) with
        ``wall_seconds`` (cumulative training time, monitoring included), ``epochs_done``
        (steps / steps per epoch, so a partial last epoch counts by its share) and the epoch
        record's numbers (``loss``, ``elbo``, ``val_elbo`` when validation data was given)."""
        return [{"estimator": run.estimator, "seed": run.seed, **record}
                for run in self.runs for record in run.history]

    def to_dict(self) -> dict:
        return {"settings": self.settings, "summary": self.summary(),
                "runs": [run.to_dict() for run in self.runs]}


# ---- the comparison -------------------------------------------------------------------------
ModelSpec = Callable[[int], torch.nn.Module] | Mapping


def _builder(model: ModelSpec, x_dim: int) -> Callable[[int], torch.nn.Module]:
    if isinstance(model, Mapping):
        from pyro_vae.models import VAE

        options = {k: v for k, v in model.items() if k != "class"}
        if model.get("class", "VAE") != "VAE":
            raise ValueError(f"a model configuration builds a VAE; got class "
                             f"{model['class']!r}. Pass a factory seed -> model instead.")
        options.setdefault("x_dim", x_dim)
        return lambda seed: VAE(**options)
    if isinstance(model, torch.nn.Module) or not callable(model):
        raise TypeError("model must be a factory (seed -> fresh model), e.g. lambda seed: "
                        "pv.VAE(64, 8), or a dict of VAE keyword arguments such as "
                        f"{{'z_dim': 8, 'hidden': [128]}}; got {type(model).__name__}. A built "
                        "model cannot give each seed its own initialisation.")
    return model


def _check_budget(epochs, max_seconds) -> int:
    if epochs is None and max_seconds is None:
        raise ValueError("give a budget: epochs=N, max_seconds=S (wall-clock seconds of "
                         "training per run), or both")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                               or epochs < 1):
        raise ValueError(f"epochs must be a positive integer or None; got {epochs!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float))
                                        and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number or None; got {max_seconds!r}")
    return epochs if epochs is not None else 10 ** 9


def _check_specs(estimators) -> list[str]:
    """The specs as the user spelled them (checked; duplicates compared once parsed)."""
    if isinstance(estimators, str) or not estimators:
        raise ValueError("estimators must be a non-empty list of specs, e.g. ['elbo', "
                         f"'iwae:k=5']; got {estimators!r}")
    labels = [str(e).strip() if isinstance(e, str) else str(e) for e in estimators]
    parsed = [str(parse_estimator(e)) for e in estimators]
    duplicates = sorted({labels[i] for i, p in enumerate(parsed) if parsed.count(p) > 1})
    if duplicates:
        raise ValueError(f"estimators {duplicates} name the same estimator more than once")
    return labels


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds) if not isinstance(seeds, int) else list(range(seeds))
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers (or a count); got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct; got {seeds}")
    return seeds


def first_points(data, n: int | None = None) -> TensorSource:
    """The first ``n`` datapoints of ``data`` (all when ``n`` is None) as fixed tensors:
    a source that draws afresh on every ``get`` (dynamic binarization) is drawn once, so
    every estimator is judged on the very same data."""
    source = as_source(data)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"the number of datapoints must be a positive integer or None; got {n!r}")
    if isinstance(source, TensorSource) and (n is None or n >= len(source)):
        return source
    n = len(source) if n is None else min(n, len(source))
    return TensorSource(*source.get(torch.arange(n, device=getattr(source, "device", None))))


def _seconds_per_epoch(history: list[dict]) -> float | None:
    full = [record["seconds"] for record in history if not record.get("partial_epoch")]
    return statistics.fmean(full) if full else None


def compare(model: ModelSpec, train_data, test_data, estimators: Sequence = ("elbo", "iwae:k=5"),
            *, seeds: Sequence[int] | int = (0, 1, 2), epochs: int | None = None,
            max_seconds: float | None = None, batch_size: int | None = None, lr: float = 1e-3,
            optimizer="adam", validation_data=None, eval_samples: int = 1000,
            elbo_particles: int = 10, eval_seed: int = 0, khat_samples: int | None = 1000,
            khat_points: int | None = 500, device="cpu", monitor_size: int = 1000,
            fit_options: Mapping | None = None, keep_models: bool = False, quiet: bool = True,
            on_run: Callable[[RunResult], None] | None = None,
            test_labels: torch.Tensor | None = None) -> ComparisonResult:
    """Fit ``model`` with every estimator under the same budget, for every seed, and judge
    each fit on ``test_data`` the same way (a source that draws afresh on every access,
    such as dynamic binarization, is drawn once, so every run is judged on the same data).

    ``model`` is a factory ``seed -> model`` (any object fit accepts) or a dict of
    :class:`~pyro_vae.models.VAE` keyword arguments (``x_dim`` taken from the data when
    absent). ``estimators`` are any registered specs (``'elbo'``, ``'meanfield'``,
    ``'iwae:k=50'``, ``'renyi:alpha=0.5,k=5'``, ...). The budget is ``epochs``,
    ``max_seconds`` of training per run, or both (whichever ends first). Test numbers:
    importance-sampled log p(x) with ``eval_samples`` draws for every estimator, the ELBO
    (``elbo_particles`` draws), KL, active units, and PSIS k-hat of the guide on the first
    ``khat_points`` test points with ``khat_samples`` draws (``khat_samples=None`` skips it).
    ``fit_options`` go to :func:`~pyro_vae.inference.fit` (e.g. ``beta``, ``clip_norm``).
    Memory: see :class:`PeakMemory`. ``on_run`` is called with each finished run.

    Discrete-latent models compare ``'enum'``, ``'score:baseline=...'`` and ``'relaxed'``
    like any estimators: every test number is the discrete model's (y summed exactly where
    it can be enumerated, whatever the estimator trained on), and ``test_labels`` (one per
    test point) add the ``accuracy`` of argmax q(y|x) (see
    :func:`~pyro_vae.inference.evaluate`).
    """
    specs = _check_specs(estimators)
    seeds = _check_seeds(seeds)
    fit_epochs = _check_budget(epochs, max_seconds)
    if isinstance(eval_samples, bool) or not isinstance(eval_samples, int) or eval_samples < 1:
        raise ValueError(f"eval_samples must be a positive integer; got {eval_samples!r}")
    if khat_samples and (isinstance(khat_samples, bool) or not isinstance(khat_samples, int)
                         or khat_samples < MIN_KHAT_SAMPLES):
        raise ValueError(f"khat_samples must be None (no k-hat) or an integer >= "
                         f"{MIN_KHAT_SAMPLES} (1000 or more is advisable); got {khat_samples!r}")
    fit_options = dict(fit_options or {})
    clash = sorted(set(fit_options) & {"estimator", "epochs", "max_seconds", "seed", "device",
                                        "batch_size", "lr", "optimizer", "validation_data",
                                        "monitor_size", "quiet"})
    if clash:
        raise ValueError(f"fit_options may not set {clash}: they are compare's own arguments")
    device = resolve_device(device)
    train = as_source(train_data)
    build = _builder(model, int(first_tensor(train).shape[1]))
    pyro.set_rng_seed(eval_seed)      # a dynamic test source is drawn once, reproducibly
    test = first_points(test_data)
    khat_data = first_points(test, khat_points) if khat_samples else None
    if test_labels is not None and len(test_labels) != len(test):
        raise ValueError(f"test_labels has {len(test_labels)} entries for {len(test)} test "
                         "points; pass one label per test point")

    settings = {"estimators": specs, "seeds": seeds, "epochs": epochs,
                "max_seconds": max_seconds, "batch_size": batch_size, "lr": lr,
                "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
                "eval_samples": eval_samples, "elbo_particles": elbo_particles,
                "eval_seed": eval_seed, "khat_samples": khat_samples,
                "khat_points": None if khat_data is None else len(khat_data),
                "device": str(device), "num_train": len(train), "num_test": len(test),
                "num_validation": None if validation_data is None else len(
                    as_source(validation_data)),
                "model": dict(model) if isinstance(model, Mapping) else getattr(
                    model, "__name__", repr(model)),
                "fit_options": fit_options, "torch_threads": torch.get_num_threads(),
                "test_labels": test_labels is not None}
    if khat_samples:
        import arviz  # noqa: F401  (imported before the first run, not during its measurement)
    runs = []
    for seed in seeds:
        pyro.set_rng_seed(seed)
        template = build(seed)
        if seed == seeds[0]:   # every split fits the model, before hours of training
            _check_splits(template, training=train, test=test, validation=validation_data)
        initial = state_digest(template)
        for spec in specs:
            fitted = copy.deepcopy(template)
            run = _one_run(fitted, spec, seed, initial, train, test, khat_data, device,
                           dict(epochs=fit_epochs, max_seconds=max_seconds,
                                batch_size=batch_size, lr=lr, optimizer=optimizer,
                                validation_data=validation_data,
                                monitor=fit_options.pop("monitor", Monitoring(size=monitor_size)),
                                quiet=quiet, **fit_options),
                           dict(num_samples=eval_samples, elbo_particles=elbo_particles,
                                seed=eval_seed, labels=test_labels), khat_samples)
            if keep_models:
                run.model = fitted
            runs.append(run)
            if on_run is not None:
                on_run(run)
        settings.setdefault("model_config", getattr(template, "config", None))
    return ComparisonResult(runs, settings)


def _check_splits(model, **splits) -> None:
    """The model's own data check (feature size, finite values, likelihood support) on
    every split given, named in the error."""
    check = getattr(model, "check_data", None)
    if not callable(check):
        return
    for name, data in splits.items():
        if data is not None:
            check(first_tensor(as_source(data)), what=f"{name} data")


def _one_run(model, spec: str, seed: int, initial: str, train, test, khat_data,
             device: torch.device, fit_kwargs: dict, eval_kwargs: dict,
             khat_samples: int | None) -> RunResult:
    digest = state_digest(model)
    if digest != initial:   # deepcopy must give every estimator the same start
        raise RuntimeError(f"the copy of the model for {spec!r} (seed {seed}) differs from "
                           "the model built for that seed; the model cannot be deep-copied "
                           "faithfully, so compare cannot guarantee equal initialisations")
    with PeakMemory(device) as memory:
        fitted = fit(model, train, estimator=spec, seed=seed, device=device, **fit_kwargs)
    steps_per_epoch = math.ceil(fitted.settings["num_data"] / fitted.settings["batch_size"])
    history, elapsed = [], 0.0
    for record in fitted.history:
        elapsed += record["seconds"]
        history.append({**record, "wall_seconds": elapsed,
                        "epochs_done": record["step"] / steps_per_epoch})
    started = time.perf_counter()
    evaluation = evaluate(model, test.to(device), **eval_kwargs)
    khat = (None if khat_data is None else psis_khat(
        model, khat_data.to(device), khat_samples, seed=eval_kwargs["seed"]))
    eval_seconds = time.perf_counter() - started
    metrics = {"log_likelihood": evaluation.log_likelihood, "elbo": evaluation.elbo,
               "kl": evaluation.kl, "active_units": evaluation.active_units,
               "seconds_per_epoch": _seconds_per_epoch(history),
               "peak_memory_mb": memory.peak_mb,
               "epochs": history[-1]["epochs_done"] if history else 0.0,
               "khat_above_0.7": None if khat is None else khat.fraction_bad,
               "khat_0.5_to_0.7": None if khat is None else khat.fraction_ok,
               "accuracy": evaluation.accuracy}
    return RunResult(
        estimator=spec, seed=seed, initial_digest=digest, history=history, metrics=metrics,
        evaluation=evaluation.summary(), khat=None if khat is None else khat.khat.tolist(),
        train_seconds=fitted.seconds, eval_seconds=eval_seconds,
        memory={"peak_mb": memory.peak_mb, "start_mb": memory.start_mb,
                "measure": memory.measure})
