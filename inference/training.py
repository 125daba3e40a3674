"""Fitting by stochastic variational inference: ``elbo.loss_and_grads`` + a torch optimizer.

One path serves every estimator (RenyiELBO and TraceGraph_ELBO have no
``differentiable_loss``): per step, gradients of the estimator's surrogate are accumulated
by Pyro, checked for NaN/inf, optionally clipped, and applied by a plain ``torch.optim``
optimizer over the module's parameters.

The step keeps the device busy: the built-in estimators return the loss as a tensor on the
device (``device_loss_and_grads``, the same numbers as ``loss_and_grads``), the epoch's
running loss is summed there and read once, for the epoch's record, and the one value a
step reads back is the flag "loss and gradient norm are finite", which the non-finite guard
needs before it lets the optimizer step. The data are moved to the device once, before the
first epoch. An estimator compiled with ``jit=1`` replays a recorded graph instead of
tracing the model every step; the steps of a KL warm-up (a new beta each) run eagerly.

Minibatches are scaled to the full data: a model whose ``model``/``guide`` accept a
``num_data`` keyword receives the training-set size and scales its ``"data"`` plate by N/B,
so the loss is an unbiased estimate of the full-data objective; reported losses are divided
by N (per datapoint, nats). A model without ``num_data`` is run unscaled and its batch loss
is divided by B instead (the same per-datapoint number when all latents are local).

Exact resume: :func:`fit` can hand a *training state* to a ``checkpoint`` hook and continue
from one (``resume=``). The state is a plain dict of tensors and primitive values, loadable
with ``torch.load(weights_only=True)``: model and optimizer state, the schedules (beta
warm-up position, learning-rate scheduler, and any object taking part in the fit that has
``state_dict``/``load_state_dict``), epoch and step, the data order (the permutation
generator's state, and the unfinished epoch's permutation), every random state (Python,
NumPy, torch CPU and CUDA), the history so far and the settings. A fit interrupted and
resumed from its last state ends with the same parameters, bit for bit on CPU, as the same
fit run in one go. This module writes no files; :mod:`pyro_vae.checkpoints` does.

Data parallelism (``distributed=True``, see :mod:`pyro_vae.inference.data_parallel`): every
rank of a ``torch.distributed`` process group runs the same fit; each step's global batch
is split among the ranks and their gradients are combined into the global batch's before
anything else looks at them, so all ranks take identical steps. A distributed state also
holds every rank's random state (``rng_by_rank``); resumed with as many ranks it continues
bit for bit.
"""

from __future__ import annotations

import inspect
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.subsample_messenger import _Subsample
from tqdm.auto import tqdm

from pyro_vae.inference.batching import as_source, first_tensor
from pyro_vae.inference.data_parallel import DataParallel, particle_seed
from pyro_vae.inference.estimators import make_estimator, parse_estimator
from pyro_vae.inference.evaluation import elbo_terms, guess_max_plate_nesting
from pyro_vae.models.handlers import scale_latent_sites

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}
NONFINITE_POLICIES = ("raise", "skip")

STATE_FORMAT = "pyro-vae-training-state"
STATE_VERSION = 1
#: settings that must agree between a saved state and the fit resuming it
RESUME_SETTINGS = ("estimator", "batch_size", "lr", "optimizer", "lr_schedule", "seed", "beta",
                   "beta_warmup_epochs", "clip_norm", "num_data", "minibatch_scaled",
                   "monitor_size", "vectorize_particles", "nonfinite")


class NonFiniteLossError(FloatingPointError):
    """The training loss, a gradient or a parameter became NaN or infinite.

    ``epoch``, ``step`` (within the epoch), ``global_step``, ``site`` (the sample site whose
    log-probability went non-finite, where one was found) and ``parameters`` (names of
    parameters with non-finite values or gradients) say where.
    """

    def __init__(self, message: str, *, epoch: int | None = None, step: int | None = None,
                 global_step: int | None = None, site: str | None = None,
                 parameters: Sequence[str] = ()):
        super().__init__(message)
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.site, self.parameters = site, list(parameters)


class ResumeError(ValueError):
    """A training state this fit cannot continue: malformed, or written by a fit with
    another model configuration, other data or other settings."""


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """'auto' -> CUDA when available else CPU; a CUDA request without CUDA is an error."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}"
                         ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was requested but CUDA is not available "
                           "on this machine; use device='cpu' or device='auto'.")
    return device


def accepts_num_data(model) -> bool:
    """Whether ``model.model`` takes a ``num_data`` keyword (for minibatch scaling)."""
    try:
        params = inspect.signature(model.model).parameters
    except (TypeError, ValueError):
        return False
    return "num_data" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def make_optimizer(optimizer, parameters, lr: float) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(parameters)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}"
                         " or a callable params -> torch.optim.Optimizer")
    return OPTIMIZERS[optimizer](parameters, lr=lr)


def beta_schedule(beta: float, warmup_steps: int, step: int) -> float:
    """Linear KL warm-up: beta * min(1, (step + 1) / warmup_steps)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_fit_arguments(epochs, batch_size, lr, n, beta, beta_warmup_epochs, clip_norm,
                         max_seconds, checkpoint_every, nonfinite, max_skipped_steps):
    if not _is_count(epochs, 0):
        raise ValueError(f"epochs must be a non-negative integer; got {epochs!r}. Pass e.g. "
                         "epochs=10.")
    if not _is_count(batch_size, 1):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}. Pass e.g. "
                         "batch_size=64.")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training datapoints; use "
                         f"batch_size <= {n}.")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number; got {lr!r}. Pass e.g. lr=1e-3.")
    if not (isinstance(beta, (int, float)) and beta >= 0):
        raise ValueError(f"beta must be a number >= 0; got {beta!r}")
    if beta_warmup_epochs < 0:
        raise ValueError(f"beta_warmup_epochs must be >= 0; got {beta_warmup_epochs!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None; got {clip_norm!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None; got {max_seconds!r}")
    if not _is_count(checkpoint_every, 1):
        raise ValueError(f"checkpoint_every must be a positive integer (epochs between "
                         f"checkpoints); got {checkpoint_every!r}")
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {list(NONFINITE_POLICIES)}; got "
                         f"{nonfinite!r}. Use 'skip' to skip non-finite steps.")
    if not _is_count(max_skipped_steps, 0):
        raise ValueError(f"max_skipped_steps must be a non-negative integer; got "
                         f"{max_skipped_steps!r}")


@dataclass
class FitResult:
    """What a fit did: one record per epoch and the settings it ran with.

    ``skipped_steps`` counts the steps skipped for a non-finite loss or gradient (only with
    ``nonfinite='skip'``); ``resumed_from_epoch`` is the epoch of the state a resumed fit
    continued from (None for a fit run from the start).
    """

    history: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    skipped_steps: int = 0
    resumed_from_epoch: int | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    def column(self, key: str) -> list[float]:
        return [record.get(key, float("nan")) for record in self.history]


# ---- random states and plain-value state ------------------------------------------------

def capture_rng_state() -> dict:
    """Every global random state (Python, NumPy, torch CPU and CUDA) as tensors and plain
    values, so it loads with ``torch.load(weights_only=True)``."""
    py_version, py_internal, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "python": {"version": py_version, "internal": torch.tensor(py_internal),
                   "gauss_next": py_gauss},
    }


def restore_rng_state(state: Mapping) -> None:
    """Set every global random state from :func:`capture_rng_state`'s output. CUDA states
    are restored when CUDA is available (as many devices as both sides have)."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()),
                     python["gauss_next"]))


def _cpu_copy(obj):
    """A deep copy with every tensor detached and copied to the CPU (no aliasing of the
    live parameters or optimizer buffers)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {key: _cpu_copy(value) for key, value in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_cpu_copy(value) for value in obj)
    if isinstance(obj, list):
        return [_cpu_copy(value) for value in obj]
    return obj


_PLAIN_TYPES = (str, int, float, bool, type(None), torch.dtype, torch.Size)


def check_plain(obj, where: str = "state") -> None:
    """Raise TypeError unless obj is built from dicts, lists, tuples, tensors and plain
    values only, i.e. readable by ``torch.load(weights_only=True)``."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _PLAIN_TYPES):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}; "
                                "expected str or int keys")
            check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            check_plain(value, f"{where}[{index}]")
        return
    raise TypeError(f"{where} holds a {type(obj).__name__}, which a checkpoint cannot store "
                    "(torch.load(weights_only=True) reads only tensors and plain values). Give "
                    "the object a state_dict() of tensors, numbers, strings, lists and dicts.")


def non_finite_entries(obj, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in obj holding NaN or inf."""
    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() and not bool(torch.isfinite(obj).all())
        return [prefix or "tensor"] if bad else []
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    return [name for key, value in items
            for name in non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))]


def _data_fingerprint(source) -> dict:
    """Shape and an order-sensitive checksum of the training data (to refuse resuming a fit
    on other data): sum_n w_n sum_d x_nd with weights w_n rising linearly from 1 to 2."""
    x = first_tensor(source)
    rows = x.reshape(len(x), -1).sum(1, dtype=torch.float64)
    weights = torch.linspace(1.0, 2.0, len(rows), dtype=torch.float64, device=rows.device)
    return {"shape": list(x.shape), "checksum": float((rows * weights).sum())}


def _stateful(obj) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None))


def _describe_differences(saved: Mapping, current: Mapping, keys) -> list[str]:
    return [f"{key}: checkpoint {saved.get(key)!r}, this fit {current.get(key)!r}"
            for key in keys if saved.get(key) != current.get(key)]


_STATE_KEYS = ("epoch", "step", "skipped_steps", "epoch_progress", "model", "optimizer",
               "schedules", "rng", "data_order", "monitor_index", "data", "settings", "history",
               "seconds")


# ---- finding what went non-finite -------------------------------------------------------

def _non_finite_summary(tensor: torch.Tensor) -> str:
    bad = ~torch.isfinite(tensor)
    example = tensor[bad].flatten()[:3].tolist()
    return f"{int(bad.sum())} of {tensor.numel()} values, e.g. {example}"


@torch.no_grad()
def find_non_finite_site(model, batch: tuple, kwargs: Mapping, beta: float = 1.0
                         ) -> tuple[str, str] | None:
    """Trace the guide and replay the model on ``batch`` (validation off, so NaN parameters
    reach the densities) and return ``(name, description)`` of the first sample site, guide
    first, whose value or log-probability is non-finite; None when every site is finite.
    Uses the current random state: set it to the one of a failed step to redraw that step's
    latent values."""
    with pyro.validation_enabled(False), poutine.block(), scale_latent_sites(beta):
        guide_trace = poutine.trace(model.guide).get_trace(*batch, **kwargs)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(
            *batch, **kwargs)
    for role, trace in (("guide", guide_trace), ("model", model_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            value = site["value"]
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(
                    torch.isfinite(value).all()):
                what = "observed site" if site["is_observed"] else "sample site"
                return name, (f"{what} {name!r} of the {role} has non-finite values "
                              f"({_non_finite_summary(value)})")
            log_prob = scale_and_mask(site["fn"].log_prob(value), mask=site["mask"])
            if isinstance(log_prob, torch.Tensor) and not bool(torch.isfinite(log_prob).all()):
                return name, (f"the log-probability of sample site {name!r} in the {role} "
                              f"is non-finite ({_non_finite_summary(log_prob)})")
    return None


def _found(finding: tuple[str | None, str] | None, parameters: Sequence[str]) -> str:
    text = f"; {finding[1]}" if finding else ""
    return text + (f"; non-finite parameters {list(parameters[:5])}" if parameters else "")


# ---- the fit ----------------------------------------------------------------------------

class _Fit:
    """One fit's moving parts and progress; :meth:`state_dict` / :meth:`load_state_dict`
    capture and restore all of it (see the module docstring)."""

    def __init__(self, model, source, *, elbo, optimizer, lr_scheduler, schedules: dict,
                 settings: dict, monitor_index, order: torch.Generator, nesting: int,
                 batch_size: int, beta: float, warmup_steps: int, clip_norm, scaled: bool,
                 nonfinite: str, max_skipped_steps: int, device,
                 parallel: DataParallel | None = None, validation: tuple | None = None):
        self.model, self.source, self.elbo = model, source, elbo
        self.validation = validation
        self.optimizer, self.lr_scheduler, self.schedules = optimizer, lr_scheduler, schedules
        self.settings, self.monitor_index, self.order = settings, monitor_index, order
        self.nesting, self.batch_size, self.beta = nesting, batch_size, beta
        self.warmup_steps, self.clip_norm, self.scaled = warmup_steps, clip_norm, scaled
        self.nonfinite, self.max_skipped_steps, self.device = nonfinite, max_skipped_steps, device
        self.parallel = parallel
        # bound once: a compiled estimator keys its graph on them, and every step saves the
        # attribute lookups; the parameters are the optimizer's, fixed for the fit
        self.model_fn, self.guide_fn = model.model, model.guide
        self.parameters = list(model.parameters())
        # the estimator can leave the loss on the device (no host read per site): used
        # unless the gradients are all-reduced, which needs the loss on the host anyway
        self.device_loss = parallel is None and callable(
            getattr(elbo, "device_loss_and_grads", None))
        self.n = len(source)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.step_kwargs = {"num_data": self.n} if scaled else {}
        self.current_beta = beta
        # progress: completed epochs, batches processed (global), and the unfinished epoch
        self.epoch, self.step, self.skipped_steps = 0, 0, 0
        self.permutation: torch.Tensor | None = None
        self.batch_in_epoch, self.loss_sum, self.seen, self.skipped_in_epoch = 0, 0.0, 0, 0
        self.history: list[dict] = []
        self.seconds = 0.0
        # random states at the step boundary where the time budget cut an epoch short: a
        # resumed fit continues from there, before the partial record's monitor draws
        self.rng_at_stop: dict | None = None

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        scheduler_states = {name: obj.state_dict() for name, obj in self.schedules.items()}
        scheduler_states["beta"] = {"beta": self.beta, "warmup_steps": self.warmup_steps,
                                    "step": self.step}
        if self.lr_scheduler is not None:
            scheduler_states["lr"] = self.lr_scheduler.state_dict()
        rng = self.rng_at_stop or capture_rng_state()
        state = {
            "format": STATE_FORMAT, "version": STATE_VERSION,
            "epoch": self.epoch, "step": self.step, "skipped_steps": self.skipped_steps,
            "epoch_progress": {"batch": self.batch_in_epoch, "permutation": self.permutation,
                               "loss_sum": float(self.loss_sum), "seen": self.seen,
                               "skipped": self.skipped_in_epoch},
            "model": self.model.state_dict(),
            "model_config": getattr(self.model, "config", None),
            "optimizer": self.optimizer.state_dict(),
            "schedules": scheduler_states,
            "rng": rng,
            "data_order": self.order.get_state(),
            "monitor_index": self.monitor_index,
            "data": _data_fingerprint(self.source),
            "settings": dict(self.settings),
            "history": self.history,
            "seconds": self.seconds,
        }
        if self.parallel is not None:
            # every rank's particle streams, so that a resumed run draws what it would have
            state["rng_by_rank"] = self.parallel.gather(_cpu_copy(rng))
        state = _cpu_copy(state)
        check_plain(state)
        return state

    def check_compatible(self, state) -> None:
        """Raise :class:`ResumeError` unless ``state`` can continue this fit; changes nothing."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            if isinstance(state, Mapping) and "format" in state:
                found = f"format {state['format']!r}"
            elif isinstance(state, Mapping):
                found = f"a dict without a format, with keys {list(state)[:4]}"
            else:
                found = f"a {type(state).__name__}"
            raise ResumeError(f"resume= expects a training state written by fit's checkpoint "
                              f"hook (format {STATE_FORMAT!r}); got {found}. Pass the state "
                              "the checkpoint hook received, or a run directory to pyro_vae.fit.")
        if state.get("version") != STATE_VERSION:
            raise ResumeError(f"this training state has version {state.get('version')!r}; this "
                              f"pyro-vae reads version {STATE_VERSION}.")
        absent = [key for key in _STATE_KEYS if key not in state]
        if absent:
            raise ResumeError(f"the training state lacks {absent}; it is incomplete or was "
                              "altered. Use another checkpoint.")
        differences = _describe_differences(state["settings"], self.settings, RESUME_SETTINGS)
        if differences:
            raise ResumeError("the checkpoint was written by a fit with other settings ("
                              + "; ".join(differences) + "). Resume with the checkpoint's "
                              "settings, or start a new fit.")
        saved_config, config = state.get("model_config"), getattr(self.model, "config", None)
        if saved_config is not None and config is not None and saved_config != config:
            keys = sorted(set(saved_config) | set(config))
            raise ResumeError("the checkpoint was written for another model configuration ("
                              + "; ".join(_describe_differences(saved_config, config, keys))
                              + "). Build the model with the checkpoint's configuration "
                              "(pyro_vae.load_model(checkpoint) rebuilds it).")
        current = self.model.state_dict()
        saved = state["model"]
        missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
        shapes = [f"{key}: checkpoint {tuple(saved[key].shape)}, model "
                  f"{tuple(current[key].shape)}" for key in sorted(set(saved) & set(current))
                  if saved[key].shape != current[key].shape]
        if missing or unexpected or shapes:
            raise ResumeError(f"the checkpoint's weights do not fit this model (missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}, shape mismatches "
                              f"{shapes[:5]}). Build the model the checkpoint was written for.")
        fingerprint = _data_fingerprint(self.source)
        saved_data = state["data"]
        if saved_data["shape"] != fingerprint["shape"] or not math.isclose(
                saved_data["checksum"], fingerprint["checksum"], rel_tol=1e-6, abs_tol=1e-6):
            raise ResumeError(f"the training data differ from the checkpoint's (checkpoint: "
                              f"shape {saved_data['shape']}, checksum {saved_data['checksum']:.6g}"
                              f"; now: shape {fingerprint['shape']}, checksum "
                              f"{fingerprint['checksum']:.6g}). Resume with the same data, in "
                              "the same order.")
        expected = set(self.schedules) | {"beta"} | ({"lr"} if self.lr_scheduler else set())
        if set(state["schedules"]) != expected:
            raise ResumeError(f"the checkpoint holds schedule states {sorted(state['schedules'])}"
                              f" but this fit has {sorted(expected)}; pass the same "
                              "lr_schedule, callbacks, schedules and estimator as the run that "
                              "wrote it.")
        bad = non_finite_entries({"model": saved, "optimizer": state["optimizer"]})
        if bad:
            raise ResumeError(f"the training state holds non-finite values ({bad[:5]}); it "
                              "cannot be resumed. Use an earlier checkpoint.")

    def load_state_dict(self, state) -> None:
        """Restore everything but the random states (see :meth:`restore_random_states`)."""
        self.check_compatible(state)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as error:
            raise ResumeError(f"the checkpoint's optimizer state does not fit this fit's "
                              f"optimizer: {error}") from None
        self.model.load_state_dict(state["model"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["schedules"]["lr"])
        for name, obj in self.schedules.items():
            obj.load_state_dict(state["schedules"][name])
        self.epoch, self.step = state["epoch"], state["step"]
        self.skipped_steps = state["skipped_steps"]
        progress = state["epoch_progress"]
        self.batch_in_epoch, self.permutation = progress["batch"], progress["permutation"]
        self.loss_sum, self.seen = progress["loss_sum"], progress["seen"]
        self.skipped_in_epoch = progress["skipped"]
        self.monitor_index = state["monitor_index"].to(self.device)
        self.history = [dict(record) for record in state["history"]]
        if self.batch_in_epoch and self.history and self.history[-1].get("partial_epoch"):
            self.history.pop()   # the unfinished epoch gets its full record when it completes
        self.seconds = state["seconds"]

    def restore_random_states(self, state) -> None:
        """Restore the data order and this rank's random states. A state from a run with
        as many ranks (one, or ``rng_by_rank``) continues exactly; otherwise ranks the
        state has no streams for are seeded afresh from (seed, rank, step), with a warning:
        data order, weights and schedules continue exactly, the particle draws do not."""
        self.order.set_state(state["data_order"])
        rank = 0 if self.parallel is None else self.parallel.rank
        world_size = 1 if self.parallel is None else self.parallel.world_size
        saved = state.get("rng_by_rank") or [state["rng"]]
        if len(saved) != world_size and rank == 0:
            warnings.warn(f"resuming a run of {len(saved)} process(es) with {world_size}: the "
                          "data order, weights, optimizer and schedules continue exactly, but "
                          "the random draws of the particles (and of random batches) differ "
                          "from the uninterrupted run's. Resume with the same number of "
                          "processes to continue bit for bit.", stacklevel=3)
        if rank < len(saved):
            restore_rng_state(saved[rank])
        else:
            seed = self.settings["seed"]
            pyro.set_rng_seed(particle_seed(0 if seed is None else seed, rank,
                                            step=state["step"]))

    # -- training ------------------------------------------------------------------------
    def _fail(self, description: str, epoch: int, batch_number: int, *, site=None,
              parameters=(), cause=None) -> None:
        """Count a non-finite step under the 'skip' policy, or raise."""
        where = f"at epoch {epoch}, step {batch_number} (global step {self.step + 1})"
        if self.nonfinite == "skip" and self.skipped_steps < self.max_skipped_steps:
            self.skipped_steps += 1
            self.skipped_in_epoch += 1
            self.optimizer.zero_grad(set_to_none=True)
            return
        if self.nonfinite == "skip":
            limit = (f", after {self.skipped_steps} skipped steps (max_skipped_steps="
                     f"{self.max_skipped_steps})")
            remedy = "raise max_skipped_steps"
        else:
            limit, remedy = "", "pass nonfinite='skip' to skip such steps"
        raise NonFiniteLossError(
            f"non-finite values {where}: {description}{limit}. Lower the learning rate, set "
            f"clip_norm, check the data and the likelihood's parameters, or {remedy}. The "
            "parameters were not updated with this step and no checkpoint was "
            "written after the last good one.",
            epoch=epoch, step=batch_number, global_step=self.step + 1, site=site,
            parameters=parameters) from cause

    def _diagnose(self, batch, beta, rng_before_step
                  ) -> tuple[tuple[str | None, str] | None, list[str]]:
        """What went non-finite in a failed step: ``(site name or None, description)`` for
        non-finite data or the first non-finite sample site (redrawn from the random state
        the step started with), or None; and the parameters with non-finite values."""
        named = dict(self.model.named_parameters())
        parameters = [name for name, p in named.items() if not bool(torch.isfinite(p).all())]
        for position, tensor in enumerate(batch):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return (None, f"batch tensor {position} holds non-finite data "
                        f"({_non_finite_summary(tensor)})"), parameters
        if not len(batch[0]):
            return None, parameters
        rng_after = torch.get_rng_state()
        torch.set_rng_state(rng_before_step)
        try:
            finding = find_non_finite_site(self.model, batch, self.step_kwargs, beta)
        finally:
            torch.set_rng_state(rng_after)
        return finding, parameters

    def train_step(self, batch, epoch: int, batch_number: int, global_size: int) -> None:
        """One optimizer step on ``batch`` (this rank's shard of a global batch of
        ``global_size`` points; the whole batch in one process).

        With an estimator that leaves the loss on the device the step reads one value to
        the host, the flag "loss and gradient norm are finite" that decides whether the
        optimizer may step; the running loss stays on the device until the epoch's record.
        """
        model, optimizer = self.model, self.optimizer
        beta = beta_schedule(self.beta, self.warmup_steps, self.step)
        self.current_beta = beta
        rng_before = torch.get_rng_state()
        optimizer.zero_grad(set_to_none=True)
        invalid, loss = None, 0.0
        if len(batch[0]):   # a rank's shard of a small last batch can be empty
            try:
                with scale_latent_sites(beta):
                    if self.device_loss:
                        # while beta ramps up every step has its own KL weight: a compiled
                        # estimator would compile each one, so those steps run eagerly
                        loss = self.elbo.device_loss_and_grads(
                            self.model_fn, self.guide_fn, *batch,
                            compiled=None if self.step >= self.warmup_steps else False,
                            **self.step_kwargs)
                    else:
                        loss = self.elbo.loss_and_grads(self.model_fn, self.guide_fn, *batch,
                                                        **self.step_kwargs)
            except ValueError as error:
                # distribution validation rejects NaN parameters before any loss exists
                if "found invalid values" not in str(error):
                    raise
                invalid, loss = error, float("nan")
        if self.parallel is not None:
            # the loss and gradient of the global batch, identical on every rank
            weight = len(batch[0]) / global_size if self.scaled else 1.0
            loss = self.parallel.combine_gradients(model.parameters(), loss, weight)
        params = [p for p in self.parameters if p.grad is not None]
        grad_norm = (torch.nn.utils.get_total_norm([p.grad for p in params]) if params
                     else None)
        if isinstance(loss, torch.Tensor):
            checks = [torch.isfinite(loss)] + ([] if grad_norm is None else [
                torch.isfinite(grad_norm).to(loss.device)])
            finite = torch.stack(checks).tolist()   # the step's one host synchronisation
            loss_finite, grads_finite = finite[0], all(finite[1:])
        else:
            loss_finite = math.isfinite(loss)
            grads_finite = grad_norm is None or bool(torch.isfinite(grad_norm))
        if invalid is not None or not loss_finite:
            self._fail_non_finite(batch, beta, rng_before, float(loss), invalid, epoch,
                                  batch_number)
            return
        if not grads_finite:
            bad = [name for name, p in model.named_parameters()
                   if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            if bad:
                what = f"the gradient of parameter(s) {bad[:5]} became non-finite"
            else:   # every element finite, yet the total norm overflowed its dtype
                name, p = max(((n, p) for n, p in model.named_parameters()
                               if p.grad is not None),
                              key=lambda item: float(item[1].grad.abs().max()))
                what = (f"every gradient element is finite but their total norm overflows "
                        f"{str(grad_norm.dtype).removeprefix('torch.')} (largest |gradient| "
                        f"{float(p.grad.abs().max()):.3g}, in {name}); the gradients are far "
                        "too large: lower the learning rate or rescale the data (e.g. log1p "
                        "of counts)")
                bad = [name]
            self._fail(f"{what} (loss {float(loss):.6g})", epoch, batch_number, parameters=bad)
            return
        if self.clip_norm is not None and params:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_norm, grad_norm)
        optimizer.step()
        # a scaled batch loss estimates the full-data sum: weight it by its share b/N
        self.loss_sum = self.loss_sum + loss * (global_size / self.n if self.scaled else 1.0)
        self.seen += global_size

    def _fail_non_finite(self, batch, beta, rng_before, loss: float, invalid, epoch: int,
                         batch_number: int) -> None:
        """A step whose loss is NaN/inf, or whose distributions rejected NaN parameters
        (``invalid``, this rank's ValueError): diagnose it and skip or raise. In a
        distributed fit every rank arrives here together (the loss is all-reduced) and
        takes the same decision with the same message, built from every rank's diagnosis."""
        finding, parameters = self._diagnose(batch, beta, rng_before)
        error_text = None if invalid is None else str(invalid)
        reports = [(self.parallel.rank if self.parallel else 0, finding, parameters, error_text)]
        if self.parallel is not None:
            reports = self.parallel.gather(reports[0])
        failed_rank = next((rank for rank, *_, text in reports if text is not None), None)
        found = next(((rank, f, p) for rank, f, p, _ in reports if f is not None or p), None)
        if failed_rank is not None and found is None:
            # a validation error that no NaN explains: a genuine error, raised on every rank
            if invalid is not None:
                raise invalid
            raise ValueError(f"rank {failed_rank} failed at epoch {epoch}, step "
                             f"{batch_number}: {reports[failed_rank][3]}")
        where = ""
        if found is not None and self.parallel is not None:
            where = f" (on rank {found[0]})"
        finding, parameters = (found[1], found[2]) if found is not None else (None, [])
        what = ("a distribution was given NaN parameters" if failed_rank is not None
                else f"the loss became {loss}")
        self._fail(what + _found(finding, parameters) + where, epoch, batch_number,
                   site=finding and finding[0], parameters=parameters, cause=invalid)

    def step_on(self, indices: torch.Tensor, epoch: int, batch_number: int) -> None:
        """Fetch the global batch of rows ``indices`` (this rank's share of it) and take
        one training step on it: all that a fit does per step."""
        if self.parallel is not None:
            batch = self.source.get(self.parallel.shard(indices))
        else:
            batch = self.source.get(indices)
        self.train_step(batch, epoch, batch_number, global_size=len(indices))
        self.step += 1
        self.batch_in_epoch = batch_number

    def run_epoch(self, epoch: int, out_of_time: Callable[[], bool]) -> bool:
        """Train the rest of ``epoch``; True when a step crossed the time budget."""
        self.model.train()
        if self.batch_in_epoch == 0:
            self.permutation = torch.randperm(self.n, generator=self.order)
        permutation = self.permutation.to(self.device)
        self.current_beta = beta_schedule(self.beta, self.warmup_steps, self.step)
        starts = range(self.batch_in_epoch * self.batch_size, self.n, self.batch_size)
        for batch_number, start in enumerate(starts, self.batch_in_epoch + 1):
            self.step_on(permutation[start:start + self.batch_size], epoch, batch_number)
            if out_of_time():
                if self.batch_in_epoch < self.steps_per_epoch:
                    self.rng_at_stop = capture_rng_state()
                return True
        return False

    def _monitor_terms(self, rows: Callable[[torch.Tensor], tuple], count: int,
                       prefix: str) -> dict:
        """Beta-free ``elbo``, ``recon`` and ``kl`` per datapoint, averaged over ``count``
        monitor points (``rows(positions)`` fetches some of them). A distributed fit splits
        the points among the ranks and sums the ranks' totals, so every point weighs the
        same."""
        positions = torch.arange(count, device=self.device)
        if self.parallel is None:
            terms = elbo_terms(self.model, rows(positions), max_plate_nesting=self.nesting)
            return {prefix + key: value.mean().item() for key, value in terms.items()}
        mine = self.parallel.shard(positions)
        # a rank without points evaluates one (for the names) and contributes nothing
        terms = elbo_terms(self.model, rows(mine if len(mine) else positions[:1]),
                           max_plate_nesting=self.nesting)
        keys = sorted(terms)
        totals = torch.stack([terms[key].sum(dtype=torch.float64) for key in keys]).cpu()
        if not len(mine):
            totals = torch.zeros_like(totals)
        totals = self.parallel.sum(totals)
        return {prefix + key: float(total) / count for key, total in zip(
            keys, totals, strict=True)}

    def finish_epoch(self, epoch: int, validation, epoch_start: float) -> dict:
        partial = self.batch_in_epoch < self.steps_per_epoch
        lr = float(self.optimizer.param_groups[0].get("lr", float("nan")))
        record = {"epoch": epoch, "step": self.step,
                  "loss": float(self.loss_sum) / self.seen if self.seen else float("nan"),
                  "beta": self.current_beta, "lr": lr, "skipped_steps": self.skipped_in_epoch}
        if partial:
            record["partial_epoch"] = True
        else:
            self.epoch = epoch
            self.permutation, self.batch_in_epoch = None, 0
            self.loss_sum, self.seen, self.skipped_in_epoch = 0.0, 0, 0
            if self.lr_scheduler is not None:
                if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.lr_scheduler.step(record["loss"])
                else:
                    self.lr_scheduler.step()
        self.model.eval()
        record.update(self._monitor_terms(lambda at: self.source.get(self.monitor_index[at]),
                                          len(self.monitor_index), prefix=""))
        if validation is not None:
            record.update(self._monitor_terms(lambda at: tuple(t[at] for t in validation),
                                              len(validation[0]), prefix="val_"))
        record["seconds"] = time.perf_counter() - epoch_start
        self.history.append(record)
        return record


def _prepare_fit(model, data, *, estimator, epochs, batch_size, lr, optimizer, seed, device,
                 beta, beta_warmup_epochs, clip_norm, validation_data, monitor_size,
                 vectorize_particles, max_seconds, callbacks, lr_schedule, schedules,
                 checkpoint, checkpoint_every, resume, nonfinite, max_skipped_steps,
                 distributed) -> _Fit:
    """Check fit's arguments and build its moving parts (resumed from ``resume`` when
    given): everything :func:`fit` does before its first step."""
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True or False; got {distributed!r}")
    parallel = DataParallel() if distributed else None
    device = resolve_device(device)
    if parallel is not None and parallel.backend == "nccl" and device.type != "cuda":
        raise ValueError(f"the process group uses NCCL, which reduces CUDA tensors only, but "
                         f"device={str(device)!r}; train on the rank's GPU (device='cuda:"
                         "LOCAL_RANK') or set the group up with backend='gloo'.")
    source = as_source(data)
    n = len(source)
    if n == 0:
        raise ValueError("the training data is empty; expected at least one datapoint")
    check = getattr(model, "check_data", None)
    if callable(check):
        check(first_tensor(source), what="training data")
    batch_size = min(128, n) if batch_size is None else batch_size
    _check_fit_arguments(epochs, batch_size, lr, n, beta, beta_warmup_epochs, clip_norm,
                         max_seconds, checkpoint_every, nonfinite, max_skipped_steps)
    spec = str(parse_estimator(estimator)) if isinstance(estimator, str) else type(
        estimator).__name__
    schedules = dict(schedules or {})
    for name, obj in schedules.items():
        if not _stateful(obj):
            raise TypeError(f"schedules[{name!r}] must have state_dict() and "
                            f"load_state_dict(); got {type(obj).__name__}")
    if validation_data is not None:
        validation_data = as_source(validation_data)
        if callable(check):
            check(first_tensor(validation_data), what="validation data")
        validation_data = validation_data.to(device)
    if seed is not None:
        pyro.set_rng_seed(seed if parallel is None else particle_seed(seed, parallel.rank))
    elif parallel is not None and parallel.rank > 0:
        # unseeded processes start from the same default state: part the other ranks' ways
        base = int(torch.randint(2 ** 62, (), generator=torch.default_generator))
        pyro.set_rng_seed(particle_seed(base, parallel.rank))
    model.to(device)
    source = source.to(device)
    order = torch.Generator().manual_seed(0 if seed is None else seed)
    monitor_index = torch.randperm(n, generator=order)[:monitor_size].to(device)
    validation = (None if validation_data is None else validation_data.get(
        torch.arange(min(monitor_size, len(validation_data)), device=device)))

    nesting = guess_max_plate_nesting(model, source.get(monitor_index[:2]))
    elbo = make_estimator(estimator, vectorize_particles=vectorize_particles,
                          max_plate_nesting=nesting)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    lr_scheduler = lr_schedule(opt) if lr_schedule is not None else None
    if _stateful(elbo):
        schedules.setdefault("estimator", elbo)
    for index, callback in enumerate(callbacks):
        if _stateful(callback):
            schedules.setdefault(f"callback_{index}", callback)
    scaled = accepts_num_data(model)
    settings = {"estimator": spec, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "optimizer": optimizer if isinstance(optimizer, str) else getattr(
                    optimizer, "__name__", type(optimizer).__name__),
                "lr_schedule": None if lr_scheduler is None else type(lr_scheduler).__name__,
                "seed": seed, "device": str(device), "beta": beta,
                "beta_warmup_epochs": beta_warmup_epochs, "clip_norm": clip_norm,
                "num_data": n, "minibatch_scaled": scaled, "max_seconds": max_seconds,
                "monitor_size": monitor_size, "vectorize_particles": vectorize_particles,
                "nonfinite": nonfinite, "max_skipped_steps": max_skipped_steps,
                "world_size": 1 if parallel is None else parallel.world_size}
    if parallel is not None:
        _check_ranks_agree(parallel, model, source, settings, validation, checkpoint,
                           checkpoint_every, resume)
        parallel.broadcast_module(model)
    run = _Fit(model, source, elbo=elbo, optimizer=opt, lr_scheduler=lr_scheduler,
               schedules=schedules, settings=settings, monitor_index=monitor_index,
               order=order, nesting=nesting, batch_size=batch_size, beta=beta,
               warmup_steps=int(round(beta_warmup_epochs * math.ceil(n / batch_size))),
               clip_norm=clip_norm, scaled=scaled,
               nonfinite=nonfinite, max_skipped_steps=max_skipped_steps, device=device,
               parallel=parallel, validation=validation)
    if resume is not None:
        run.check_compatible(resume)
        if resume["epoch"] > epochs:
            raise ResumeError(f"the checkpoint has already completed {resume['epoch']} epochs "
                              f"but epochs={epochs}; pass epochs >= {resume['epoch']}.")
        run.load_state_dict(resume)
        run.restore_random_states(resume)
    elif checkpoint is not None:
        run.state_dict()   # fail now, not after an epoch, if some state cannot be stored
    return run


def fit(model, data, *, estimator="elbo", epochs: int = 10, batch_size: int | None = None,
        lr: float = 1e-3, optimizer="adam", seed: int | None = 0, device="cpu",
        beta: float = 1.0, beta_warmup_epochs: float = 0, clip_norm: float | None = None,
        validation_data=None, monitor_size: int = 1000, vectorize_particles: bool = True,
        max_seconds: float | None = None, quiet: bool = False,
        callbacks: Sequence[Callable[[dict], None]] = (), lr_schedule=None,
        schedules: Mapping[str, object] | None = None,
        checkpoint: Callable[[dict], None] | None = None, checkpoint_every: int = 1,
        resume: Mapping | None = None, nonfinite: str = "raise",
        max_skipped_steps: int = 10, distributed: bool = False) -> FitResult:
    """Fit ``model`` (anything with Pyro ``model``/``guide`` methods and torch parameters).

    ``data`` is a tensor (N, features), a tuple of tensors (model(*batch)) or a batch source;
    ``batch_size`` defaults to min(128, N).
    ``estimator`` is a spec (``'elbo'``, ``'meanfield'``, ``'iwae:k=5'``,
    ``'renyi:alpha=0.5,k=5'``) or a Pyro ELBO. ``beta`` multiplies the latent sites' log-
    densities (KL weight), ramped linearly from 0 over ``beta_warmup_epochs``.
    ``lr_schedule`` is a callable ``optimizer -> torch.optim.lr_scheduler`` stepped after
    every epoch (``ReduceLROnPlateau`` is given the epoch's loss).

    Each epoch records ``loss`` (the training objective per datapoint, averaged over the
    epoch), and, on up to ``monitor_size`` fixed training points (and validation points),
    the beta-free ``elbo``, ``recon`` = E_q log p(x|z) and ``kl`` per datapoint, plus
    ``beta``, ``lr``, ``skipped_steps`` and ``seconds``. ``max_seconds`` is a wall-clock
    budget (over all resumes): the fit stops after the first step that exceeds it (the last,
    partial epoch is recorded with ``partial_epoch=True``). Each callback receives every
    epoch record.

    Non-finite values: a NaN or infinite loss or gradient raises
    :class:`NonFiniteLossError` naming the epoch, the step and, where it can be found, the
    sample site whose log-probability went non-finite (or the parameters). With
    ``nonfinite='skip'`` such steps are skipped (no update) up to ``max_skipped_steps`` in
    all; ``FitResult.skipped_steps`` and each record's ``skipped_steps`` count them.

    Checkpoints and resume: ``checkpoint(state)`` is called every ``checkpoint_every``
    epochs and at the end with the complete training state (a dict of tensors and plain
    values, see the module docstring); a state whose weights or optimizer buffers are not
    finite is never handed over. ``resume=state`` continues from such a state; a fit
    interrupted and resumed ends bit-identical (CPU) to the same fit run in one go. Pass the
    same arguments as the interrupted run (``epochs`` may grow). Schedule state: besides the
    beta warm-up and ``lr_schedule``, every object in ``schedules`` (name -> object), the
    estimator and each callback that has ``state_dict()`` and ``load_state_dict()`` is saved
    and restored with the fit; a model keeps its own schedule state (e.g. a temperature) in
    buffers, which its ``state_dict`` holds.

    Data parallelism: ``distributed=True`` trains one model with every rank of the
    initialised default ``torch.distributed`` process group (see
    :mod:`pyro_vae.inference.data_parallel`; :mod:`pyro_vae.distributed` sets the group up
    under ``torchrun``). Every rank calls ``fit`` with the same arguments and data;
    ``batch_size`` is the *global* batch, split among the ranks. Rank 0's initial weights
    are broadcast; each step the ranks' gradients and losses are combined into those of the
    global batch (correct minibatch scaling, every estimator) before the non-finite check,
    clipping and the optimizer step, so the ranks stay identical and skip or raise together.
    Particle noise is drawn from per-rank seeds; records are reduced over the ranks.
    Callbacks and ``checkpoint`` run on every rank (the checkpoint state, identical on every
    rank, holds every rank's random state); write files from rank 0 only.
    """
    run = _prepare_fit(
        model, data, estimator=estimator, epochs=epochs, batch_size=batch_size, lr=lr,
        optimizer=optimizer, seed=seed, device=device, beta=beta,
        beta_warmup_epochs=beta_warmup_epochs, clip_norm=clip_norm,
        validation_data=validation_data, monitor_size=monitor_size,
        vectorize_particles=vectorize_particles, max_seconds=max_seconds, callbacks=callbacks,
        lr_schedule=lr_schedule, schedules=schedules, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, resume=resume, nonfinite=nonfinite,
        max_skipped_steps=max_skipped_steps, distributed=distributed)
    parallel, settings, validation = run.parallel, run.settings, run.validation
    spec = settings["estimator"]
    result = FitResult(settings=settings, resumed_from_epoch=None if resume is None
                       else resume["epoch"])

    started = time.perf_counter() - run.seconds

    def out_of_time() -> bool:
        if max_seconds is None:
            return False
        late = time.perf_counter() - started > max_seconds
        return late if parallel is None else parallel.any(late)   # every rank stops together

    first = run.epoch + 1
    bar = tqdm(range(first, epochs + 1), disable=quiet or bool(parallel and parallel.rank),
               desc=f"fit {spec}", unit="epoch", initial=first - 1, total=epochs)
    for epoch in bar:
        epoch_start = time.perf_counter()
        ran_out_of_time = run.run_epoch(epoch, out_of_time)
        record = run.finish_epoch(epoch, validation, epoch_start)
        bar.set_postfix(loss=f"{record['loss']:.2f}", elbo=f"{record['elbo']:.2f}")
        for callback in callbacks:
            callback(record)
        stopping = ran_out_of_time or epoch == epochs
        run.seconds = time.perf_counter() - started
        if checkpoint is not None and (stopping or epoch % checkpoint_every == 0):
            _hand_over(run, checkpoint, epoch)
        if stopping:
            break
    result.history = run.history
    result.skipped_steps = run.skipped_steps
    result.seconds = time.perf_counter() - started
    return result


def _check_ranks_agree(parallel: DataParallel, model, source, settings: dict, validation,
                       checkpoint, checkpoint_every: int, resume) -> None:
    """Raise on every rank unless all ranks run the same fit: ranks that differ in settings,
    data, model, validation data, checkpointing or the state they resume from would train
    different models or wait forever for each other."""
    resumed = None
    if isinstance(resume, Mapping) and isinstance(resume.get("model"), Mapping):
        weights = sum(float(t.sum(dtype=torch.float64)) for t in resume["model"].values()
                      if isinstance(t, torch.Tensor) and t.is_floating_point())
        resumed = (resume.get("epoch"), resume.get("step"), f"{weights:.10g}")
    parallel.check_same({
        **{key: value for key, value in settings.items() if key != "device"},
        # to 10 digits: GPUs of different kinds may sum the same data in another order
        "data": {key: f"{value:.10g}" if isinstance(value, float) else value
                 for key, value in _data_fingerprint(source).items()},
        "parameters": [(name, tuple(p.shape)) for name, p in model.named_parameters()],
        "validation points": None if validation is None else len(validation[0]),
        "checkpoint hook": checkpoint is not None, "checkpoint_every": checkpoint_every,
        "resume (epoch, step, weight sum)": resumed,
    }, "the fit")


def _hand_over(run: _Fit, checkpoint: Callable[[dict], None], epoch: int) -> None:
    """Give the checkpoint hook the current state, unless it holds non-finite values."""
    state = run.state_dict()
    bad = non_finite_entries({"model": state["model"], "optimizer": state["optimizer"]})
    if bad:
        raise NonFiniteLossError(
            f"after epoch {epoch} the training state holds non-finite values ({bad[:5]}); "
            "this state was not checkpointed, the last good checkpoint stands. Lower the "
            "learning rate or set clip_norm.", epoch=epoch,
            parameters=[name.removeprefix("model.") for name in bad
                        if name.startswith("model.")])
    checkpoint(state)
