"""Training checkpoints on disk, and :func:`fit` with ``checkpoint_dir=`` and ``resume=``.

A checkpoint is the training state that :func:`pyro_vae.inference.fit` hands to its
``checkpoint`` hook (model and optimizer state, schedules, epoch and step, data order, every
random state, history and settings), stored as ``RUN/checkpoint.pt``: a plain dict of
tensors and primitive values that loads with ``torch.load(path, weights_only=True)``, plus
a SHA-256 digest of its contents (``"sha256"``) that :func:`load_checkpoint` verifies.

Crash safety: each checkpoint is written to a temporary file in the same folder, flushed,
fsynced and renamed over the previous one, so a process killed at any moment leaves either
the previous checkpoint or the new one, never a partial file. A state holding NaN or inf
weights is refused, so the last good checkpoint is never replaced by a bad one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pyro_vae import distributed as distributed_setup
from pyro_vae.inference import training
from pyro_vae.inference.training import (
    STATE_FORMAT,
    FitResult,
    NonFiniteLossError,
    ResumeError,
    non_finite_entries,
)
from pyro_vae.io import (
    FORMAT as MODEL_FORMAT,
)
from pyro_vae.io import (
    CheckpointError,
    atomic_torch_save,
    load_weights_only,
    stale_temporaries,
    with_digest,
)

CHECKPOINT_FILE = "checkpoint.pt"
_HOW_MADE = "fit(model, data, checkpoint_dir=RUN), as RUN/checkpoint.pt"


def checkpoint_path(location: str | os.PathLike) -> Path:
    """``RUN/checkpoint.pt`` for an existing directory ``RUN``; any other path as is."""
    location = Path(location)
    return location / CHECKPOINT_FILE if location.is_dir() else location


def save_checkpoint(state: Mapping, location: str | os.PathLike) -> Path:
    """Write a training state atomically to ``location`` (an existing run directory, which
    gets ``checkpoint.pt``, or a file path).

    Raises :class:`NonFiniteLossError`, writing nothing, when the state's weights or
    optimizer buffers hold NaN or inf; removes temporary files that killed writers left.
    """
    path = checkpoint_path(location)
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise TypeError(f"save_checkpoint expects a training state from fit's checkpoint hook "
                        f"(format {STATE_FORMAT!r}); got {type(state).__name__}.")
    bad = non_finite_entries({"model": state["model"], "optimizer": state["optimizer"]})
    if bad:
        raise NonFiniteLossError(f"refusing to write a training state with non-finite values "
                                 f"({bad[:5]}) over {str(path)!r}; the last good checkpoint is "
                                 "kept.", epoch=state.get("epoch"))
    atomic_torch_save(with_digest(state), path)
    for leftover in stale_temporaries(path):
        leftover.unlink(missing_ok=True)
    return path


def load_checkpoint(location: str | os.PathLike) -> dict:
    """Read the training state in ``location`` (``RUN`` or ``RUN/checkpoint.pt``) with
    ``torch.load(weights_only=True)``, with clear errors for missing, truncated, corrupted
    or foreign files."""
    path = checkpoint_path(location)
    state = load_weights_only(path, "training checkpoint", _HOW_MADE)
    found = state.get("format") if isinstance(state, dict) else None
    if found == MODEL_FORMAT:
        raise CheckpointError(f"{str(path)!r} is a saved model (save_model), not a training "
                              "checkpoint, so there is no optimizer, schedule or random state "
                              "to resume. Resume from the RUN directory that fit(..., "
                              "checkpoint_dir=RUN) wrote, or start a new fit from these "
                              "weights: model = load_model(path); fit(model, data).")
    if found != STATE_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pyro-vae training checkpoint (format "
                              f"{found!r}, expected {STATE_FORMAT!r}); pass the RUN directory "
                              f"written by {_HOW_MADE}.")
    return state


def fit(model, data, *, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1, resume=None, distributed: bool = False,
        **options) -> FitResult:
    """:func:`pyro_vae.inference.fit` with checkpoints on disk (all its arguments apply).

    ``checkpoint_dir=RUN`` writes ``RUN/checkpoint.pt`` every ``checkpoint_every`` epochs
    and at the end (atomically; see the module docstring). ``resume`` continues a run: a run
    directory or checkpoint file (checkpoints then keep going to that file unless
    ``checkpoint_dir`` says otherwise), or a training state dict. Pass the arguments of the
    interrupted run (``epochs`` may grow); the result is bit-identical on CPU to the run
    done in one go. A fresh fit never overwrites an existing checkpoint: pass ``resume=`` or
    choose another ``checkpoint_dir``.

    ``distributed=True`` (every process launched by torchrun runs the same call) joins the
    process group (:func:`pyro_vae.distributed.init_distributed`; ``device='auto'`` or
    ``'cuda'`` means each process's own GPU) and trains one model with all processes.
    Only rank 0 touches the files: it checks and reads the checkpoint to resume from and
    sends it to the other ranks, and writes every checkpoint; a failure there is raised on
    every rank.
    """
    if distributed is True:
        context = distributed_setup.init_distributed(device=options.get("device", "cpu"))
        options["device"] = context.device
    elif distributed is not False:
        raise TypeError(f"distributed must be True or False; got {distributed!r}")
    share = distributed_setup.file_work_runner(distributed)
    resumed_path, state = None, resume
    if resume is not None and not isinstance(resume, Mapping):
        resumed_path = Path(resume)
        resumed_path, state = share(_read_resume_state, resumed_path)
    if checkpoint_dir is not None or resumed_path is not None:
        if options.get("checkpoint") is not None:
            raise ValueError("pass either checkpoint_dir (files written for you) or a "
                             "checkpoint callable, not both")
        target = share(_checkpoint_target, checkpoint_dir, resumed_path)
        options["checkpoint"] = lambda training_state: share(save_checkpoint, training_state,
                                                             target)
    try:
        return training.fit(model, data, checkpoint_every=checkpoint_every, resume=state,
                            distributed=distributed, **options)
    except ResumeError as error:
        if resumed_path is None:
            raise
        raise CheckpointError(f"cannot resume from {str(resumed_path)!r}: {error}") from None


def _read_resume_state(location: Path) -> tuple[Path, dict]:
    path = checkpoint_path(location)
    return path, load_checkpoint(path)


def _checkpoint_target(checkpoint_dir, resumed_path: Path | None) -> Path:
    """The file this fit writes its checkpoints to, refusing to replace another run's."""
    if checkpoint_dir is None:
        target = resumed_path
    else:
        if Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
            raise NotADirectoryError(f"checkpoint_dir {str(checkpoint_dir)!r} is a file; "
                                     "pass a directory (it is created if missing).")
        target = Path(checkpoint_dir) / CHECKPOINT_FILE
    _refuse_to_overwrite(target, resumed_path)
    return target


def _refuse_to_overwrite(target: Path, resumed_path: Path | None) -> None:
    """A fresh fit (or one resumed from elsewhere) must not replace another run's checkpoint."""
    if not target.exists():
        return
    if resumed_path is not None and target.resolve() == resumed_path.resolve():
        return
    raise FileExistsError(f"{str(target)!r} already holds a checkpoint of another run; pass "
                          f"resume={str(target.parent)!r} to continue that run, or choose a new "
                          "checkpoint_dir (or delete the old one).")
