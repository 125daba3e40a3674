"""Fitting: :func:`fit` (:mod:`.svi`) over a small loop (:mod:`.loop`), with its options
(:mod:`.options`), the non-finite guard (:mod:`.nonfinite`), the training state and exact
resume (:mod:`.state`), and data parallelism (:mod:`.data_parallel`, :mod:`.process_group`)."""

from pyro_vae.inference.fitting.data_parallel import DataParallel, particle_seed
from pyro_vae.inference.fitting.nonfinite import (
    NonFiniteLossError,
    find_non_finite_site,
    non_finite_entries,
)
from pyro_vae.inference.fitting.options import (
    OPTIMIZERS,
    Checkpointing,
    KLSchedule,
    Monitoring,
    NonFinitePolicy,
    Optimization,
    beta_schedule,
    make_optimizer,
)
from pyro_vae.inference.fitting.state import (
    STATE_FORMAT,
    ResumeError,
    capture_rng_state,
    restore_rng_state,
)
from pyro_vae.inference.fitting.svi import FitResult, accepts_num_data, fit

__all__ = [
    # fit and its options
    "fit", "FitResult", "Optimization", "KLSchedule", "Monitoring", "Checkpointing",
    "NonFinitePolicy", "OPTIMIZERS", "make_optimizer", "beta_schedule", "accepts_num_data",
    # the non-finite guard
    "NonFiniteLossError", "find_non_finite_site", "non_finite_entries",
    # training state and resume
    "ResumeError", "STATE_FORMAT", "capture_rng_state", "restore_rng_state",
    # data parallelism
    "DataParallel", "particle_seed",
]
