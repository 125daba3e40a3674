"""The training state of a fit, and exact resume.

The state is a plain dict of tensors and primitive values, loadable with
``torch.load(weights_only=True)``: model and optimizer state, the schedules (beta warm-up
position, learning-rate scheduler, and any object taking part in the fit that has
``state_dict``/``load_state_dict``), epoch and step, the data order (the permutation
generator's state, and the unfinished epoch's permutation), every random state (Python,
NumPy, torch CPU and CUDA), the history so far and the settings. A fit interrupted and
resumed from its last state ends with the same parameters, bit for bit on CPU, as the same
fit run in one go. A distributed state also holds every rank's random state
(``rng_by_rank``); resumed with as many ranks it continues bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import pyro
import torch

from pyro_vae.inference.batching import identity_tensor
from pyro_vae.inference.estimators import parse_estimator
from pyro_vae.inference.fitting.data_parallel import particle_seed
from pyro_vae.inference.fitting.nonfinite import non_finite_entries
from pyro_vae.inference.random_state import capture_rng_state, restore_rng_state

STATE_FORMAT = "pyro-vae-training-state"
STATE_VERSION = 1
#: settings that must agree between a saved state and the fit resuming it
RESUME_SETTINGS = ("estimator", "batch_size", "lr", "optimizer", "lr_schedule", "seed", "beta",
                   "beta_warmup_epochs", "clip_norm", "num_data", "minibatch_scaled",
                   "monitor_size", "vectorize_particles", "nonfinite")


class ResumeError(ValueError):
    """A training state this fit cannot continue: malformed, or written by a fit with
    another model configuration, other data or other settings."""


# ---- random states and plain-value state ------------------------------------------------

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


def _data_fingerprint(source) -> dict:
    """Shape and an order-sensitive checksum of the training data (to refuse resuming a fit
    on other data): sum_n w_n sum_d x_nd with weights w_n rising linearly from 1 to 2."""
    x = identity_tensor(source)   # not a draw: a dynamically binarised source's grey levels
    rows = x.reshape(len(x), -1).sum(1, dtype=torch.float64)
    weights = torch.linspace(1.0, 2.0, len(rows), dtype=torch.float64, device=rows.device)
    return {"shape": list(x.shape), "checksum": float((rows * weights).sum())}


def _stateful(obj) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None))


def _objective_settings(settings: Mapping) -> Mapping:
    """``settings`` with the estimator spec stripped of ``jit`` (states written before jit
    became automatic say ``elbo:k=1,jit=1``): compiled and eager steps give the same numbers."""
    spec = settings.get("estimator")
    try:
        return {**settings, "estimator": parse_estimator(spec).objective}
    except (ValueError, TypeError):
        return settings


def _describe_differences(saved: Mapping, current: Mapping, keys) -> list[str]:
    return [f"{key}: checkpoint {saved.get(key)!r}, this fit {current.get(key)!r}"
            for key in keys if saved.get(key) != current.get(key)]


_STATE_KEYS = ("epoch", "step", "skipped_steps", "epoch_progress", "model", "optimizer",
               "schedules", "rng", "data_order", "monitor_index", "data", "settings", "history",
               "seconds")


class ResumableFit:
    """The state methods of a fit (mixed into the loop's fit object): capture, check and
    restore everything a resumed fit needs."""

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
        differences = _describe_differences(_objective_settings(state["settings"]),
                                            self.settings, RESUME_SETTINGS)
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
