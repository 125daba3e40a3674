"""The options of a fit that users set together, as small objects.

``fit(model, data, estimator="iwae:k=5", epochs=100)`` needs none of them; each groups what
belongs together when a fit needs more:

* :class:`Optimization` -- the optimiser, its learning-rate schedule and gradient clipping;
* :class:`KLSchedule` -- the KL weight beta and its linear warm-up;
* :class:`Checkpointing` -- handing the training state to a hook, and resuming from one
  (:class:`pyro_vae.CheckpointFiles` is the policy that keeps it in a run directory);
* :class:`NonFinitePolicy` -- what a NaN/inf step does: raise, or skip up to a limit;
* :class:`Monitoring` -- the points monitored each epoch and the per-epoch callbacks.

The 0.1 keyword arguments (``lr_schedule``, ``clip_norm``, ``beta_warmup_epochs``,
``checkpoint``, ``checkpoint_every``, ``resume``, ``schedules``, ``max_skipped_steps``,
``monitor_size``, ``callbacks``) still work for one release, with a ``DeprecationWarning``
naming the new spelling (:func:`options_from_deprecated`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}
NONFINITE_ACTIONS = ("raise", "skip")


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_optimizer(optimizer) -> None:
    if not (callable(optimizer) and not isinstance(optimizer, str)) and (
            optimizer not in OPTIMIZERS):
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}"
                         " or a callable params -> torch.optim.Optimizer")


@dataclass(frozen=True)
class Optimization:
    """The optimiser and its schedule.

    ``optimizer``: a name in :data:`OPTIMIZERS` (built with fit's ``lr``) or a callable
    ``params -> torch.optim.Optimizer``; ``lr_schedule``: a callable ``optimizer ->
    torch.optim.lr_scheduler`` stepped after every epoch (``ReduceLROnPlateau`` is given the
    epoch's loss); ``clip_norm``: the total gradient norm is clipped to it (None: off).
    """

    optimizer: str | Callable = "adam"
    lr_schedule: Callable | None = None
    clip_norm: float | None = None

    def __post_init__(self):
        _check_optimizer(self.optimizer)
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None; got {self.clip_norm!r}")

    @property
    def name(self) -> str:
        """How the settings and checkpoints name the optimiser."""
        if isinstance(self.optimizer, str):
            return self.optimizer
        return getattr(self.optimizer, "__name__", type(self.optimizer).__name__)

    def build(self, parameters, lr: float) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, parameters, lr)


@dataclass(frozen=True)
class KLSchedule:
    """The KL weight: the latent sites' log-densities are multiplied by
    beta_t = beta * min(1, (t + 1) / (warmup_epochs * steps per epoch)) at step t.

    Reported numbers (monitored ELBO, evaluation) are always beta-free.
    """

    beta: float = 1.0
    warmup_epochs: float = 0

    def __post_init__(self):
        if not (isinstance(self.beta, (int, float)) and self.beta >= 0
                and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number >= 0; got {self.beta!r}")
        if not (isinstance(self.warmup_epochs, (int, float)) and self.warmup_epochs >= 0):
            raise ValueError(f"beta warm-up epochs must be >= 0; got {self.warmup_epochs!r}")


@dataclass
class Checkpointing:
    """Hand the training state to ``save(state)`` every ``every`` epochs and at the end, and
    continue from ``resume`` (a state such a hook received) when given.

    ``extra_state`` names further objects with ``state_dict()``/``load_state_dict()`` saved
    and restored with the fit (the estimator's, the learning-rate schedule's and every
    callback's state are saved without being named). A policy that keeps states somewhere
    (:class:`pyro_vae.CheckpointFiles`: files in a run directory) subclasses this and
    overrides :meth:`load` and :meth:`save`; :meth:`resume_error` lets it say where a state
    that cannot be resumed came from.
    """

    save_state: Callable[[dict], None] | None = None
    every: int = 1
    resume: Mapping | None = None
    extra_state: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if not _is_count(self.every, 1):
            raise ValueError(f"checkpoint_every must be a positive integer (epochs between "
                             f"checkpoints, Checkpointing.every); got {self.every!r}")

    def load(self, distributed: bool = False) -> Mapping | None:
        """The state to resume from, or None for a fresh fit."""
        return self.resume

    @property
    def saves(self) -> bool:
        """Whether :meth:`save` writes anything (states are built only then)."""
        return self.save_state is not None

    def save(self, state: dict) -> None:
        if self.save_state is not None:
            self.save_state(state)

    def resume_error(self, error: Exception) -> Exception:
        return error


@dataclass(frozen=True)
class NonFinitePolicy:
    """What a step with a NaN or infinite loss or gradient does: ``'raise'`` a
    :class:`~pyro_vae.inference.NonFiniteLossError` naming the step and the site, or
    ``'skip'`` it (no update) up to ``max_skipped_steps`` times in all, then raise."""

    action: str = "raise"
    max_skipped_steps: int = 10

    def __post_init__(self):
        if self.action not in NONFINITE_ACTIONS:
            raise ValueError(f"nonfinite must be one of {list(NONFINITE_ACTIONS)}; got "
                             f"{self.action!r}. Use 'skip' to skip non-finite steps.")
        if not _is_count(self.max_skipped_steps, 0):
            raise ValueError(f"max_skipped_steps must be a non-negative integer; got "
                             f"{self.max_skipped_steps!r}")


@dataclass(frozen=True)
class Monitoring:
    """Each epoch's record gets the beta-free ``elbo``, ``recon`` and ``kl`` per datapoint on
    ``size`` fixed training points (and validation points); every callback receives every
    epoch record."""

    size: int = 1000
    callbacks: Sequence[Callable[[dict], None]] = ()

    def __post_init__(self):
        if not _is_count(self.size, 1):
            raise ValueError(f"the monitor size must be a positive integer; got {self.size!r}")


def make_optimizer(optimizer, parameters, lr: float) -> torch.optim.Optimizer:
    """``optimizer``: a name in :data:`OPTIMIZERS` or a callable params -> optimizer."""
    _check_optimizer(optimizer)
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(parameters)
    return OPTIMIZERS[optimizer](parameters, lr=lr)


def beta_schedule(beta: float, warmup_steps: int, step: int) -> float:
    """Linear KL warm-up: beta * min(1, (step + 1) / warmup_steps)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


# ---- the 0.1 keyword arguments --------------------------------------------------------------

#: old keyword -> the new spelling, for the warning
DEPRECATED_KEYWORDS = {
    "checkpoint_dir": "checkpoints=pyro_vae.CheckpointFiles(RUN)",
    "lr_schedule": "optimizer=Optimization(..., lr_schedule=...)",
    "clip_norm": "optimizer=Optimization(..., clip_norm=...)",
    "beta_warmup_epochs": "beta=KLSchedule(beta, warmup_epochs=...)",
    "checkpoint": "checkpoints=Checkpointing(save_state=...)",
    "checkpoint_every": "checkpoints=Checkpointing(..., every=...) (or CheckpointFiles)",
    "resume": "checkpoints=Checkpointing(resume=state) or pyro_vae.CheckpointFiles(RUN, "
              "resume=True)",
    "schedules": "checkpoints=Checkpointing(..., extra_state=...)",
    "max_skipped_steps": "nonfinite=NonFinitePolicy('skip', max_skipped_steps=...)",
    "monitor_size": "monitor=Monitoring(size=...)",
    "callbacks": "monitor=Monitoring(callbacks=...)",
}


#: the policies a layer that knows files offers for 0.1's ``checkpoint_dir=RUN`` and
#: ``resume=PATH``: ``policy(checkpoint_dir, checkpoint_every, resume) -> Checkpointing``
#: (:mod:`pyro_vae.checkpoints` registers :class:`pyro_vae.CheckpointFiles`)
FILE_KEYWORD_POLICIES: list[Callable[..., Checkpointing]] = []


def _file_keywords(old: dict) -> bool:
    resume = old.get("resume")
    return "checkpoint_dir" in old or not (resume is None or isinstance(resume, Mapping))


def _warn(keyword: str, stacklevel: int) -> None:
    warnings.warn(f"fit(..., {keyword}=...) is deprecated; use "
                  f"{DEPRECATED_KEYWORDS[keyword]} (the old keyword is removed in pyro-vae 0.3).",
                  DeprecationWarning, stacklevel=stacklevel)


def options_from_deprecated(old: dict, *, optimizer, beta, checkpoints, nonfinite, monitor,
                            stacklevel: int = 4):
    """Fold the 0.1 keyword arguments in ``old`` into the option objects, warning once for
    each; returns ``(optimization, kl_schedule, checkpointing, nonfinite_policy,
    monitoring)`` with every option normalised to its object."""
    unknown = sorted(set(old) - set(DEPRECATED_KEYWORDS))
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s) {unknown}; see "
                        "help(pyro_vae.fit) for its arguments.")
    for keyword in old:
        _warn(keyword, stacklevel)
    old = dict(old)
    if _file_keywords(old):
        if checkpoints is not None:
            raise ValueError("pass either checkpoints= or the old checkpoint_dir=/resume= "
                             "keywords, not both")
        if not FILE_KEYWORD_POLICIES:
            raise TypeError("checkpoint_dir= and resume=PATH need checkpoint files: use "
                            "checkpoints=pyro_vae.CheckpointFiles(RUN)")
        checkpoints = FILE_KEYWORD_POLICIES[-1](old.pop("checkpoint_dir", None),
                                                old.pop("checkpoint_every", 1),
                                                old.pop("resume", None))
    optimization = optimizer if isinstance(optimizer, Optimization) else Optimization(optimizer)
    if "lr_schedule" in old or "clip_norm" in old:
        optimization = replace(optimization, **{k: old[k] for k in ("lr_schedule", "clip_norm")
                                                if k in old})
    kl = beta if isinstance(beta, KLSchedule) else KLSchedule(beta)
    if "beta_warmup_epochs" in old:
        kl = replace(kl, warmup_epochs=old["beta_warmup_epochs"])
    if checkpoints is not None and not isinstance(checkpoints, Checkpointing):
        raise TypeError(f"checkpoints must be a Checkpointing policy (e.g. "
                        f"pyro_vae.CheckpointFiles('runs/x')); got {type(checkpoints).__name__}")
    given = {k: old[k] for k in ("checkpoint", "checkpoint_every", "resume", "schedules")
             if k in old}
    if given:
        if checkpoints is None:
            checkpoints = Checkpointing()
        if "checkpoint" in given:
            if checkpoints.saves and given["checkpoint"] is not None:
                raise ValueError("pass either a checkpoints policy that saves or a checkpoint "
                                 "callable, not both")
            checkpoints.save_state = given["checkpoint"]
        if "checkpoint_every" in given:
            checkpoints.every = given["checkpoint_every"]
            checkpoints.__post_init__()
        if "resume" in given:
            checkpoints.resume = given["resume"]
        if "schedules" in given:
            checkpoints.extra_state = dict(given["schedules"] or {})
    policy = nonfinite if isinstance(nonfinite, NonFinitePolicy) else NonFinitePolicy(nonfinite)
    if "max_skipped_steps" in old:
        policy = replace(policy, max_skipped_steps=old["max_skipped_steps"])
    monitoring = monitor if monitor is not None else Monitoring()
    if not isinstance(monitoring, Monitoring):
        raise TypeError(f"monitor must be a Monitoring(...); got {type(monitoring).__name__}")
    if "monitor_size" in old or "callbacks" in old:
        monitoring = replace(monitoring, **{
            key: old[old_key] for old_key, key in (("monitor_size", "size"),
                                                   ("callbacks", "callbacks"))
            if old_key in old})
    return optimization, kl, checkpoints, policy, monitoring
