"""Training checkpoints on disk: the :class:`CheckpointFiles` policy for ``fit(...,
checkpoints=...)``, and :func:`save_checkpoint` / :func:`load_checkpoint`.

A checkpoint is the training state that :func:`pyro_vae.inference.fit` hands to its
checkpointing policy (model and optimizer state, schedules, epoch and step, data order, every
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
from pyro_vae.inference.fitting import options
from pyro_vae.inference.fitting.nonfinite import NonFiniteLossError, non_finite_entries
from pyro_vae.inference.fitting.options import Checkpointing
from pyro_vae.inference.fitting.state import STATE_FORMAT
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
_HOW_MADE = "fit(model, data, checkpoints=CheckpointFiles(RUN)), as RUN/checkpoint.pt"


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


class CheckpointFiles(Checkpointing):
    """Keep a fit's checkpoints in a run directory: ``fit(model, data,
    checkpoints=CheckpointFiles("runs/x"))`` writes ``runs/x/checkpoint.pt`` every ``every``
    epochs and at the end (atomically; see the module docstring).

    ``CheckpointFiles(RUN, resume=True)`` continues the run whose checkpoint is in ``RUN`` (a
    run directory or a checkpoint file; checkpoints then keep going to that file); pass the
    arguments of the interrupted run (``epochs`` may grow) and the result is bit-identical on
    CPU to the run done in one go. ``resume=OTHER`` continues from the checkpoint in
    ``OTHER`` and writes to ``RUN``; ``resume=state`` continues from a training state in
    memory and writes to ``RUN``. A fresh fit never overwrites an existing checkpoint:
    resume it or choose another directory. In a distributed fit only rank 0 touches the
    files: it checks and reads the checkpoint to resume from and sends it to the other ranks,
    and writes every checkpoint; a failure there is raised on every rank.
    """

    def __init__(self, directory: str | os.PathLike | None, *, every: int = 1,
                 resume: bool | str | os.PathLike | Mapping = False,
                 extra_state: Mapping[str, object] | None = None):
        in_memory = isinstance(resume, Mapping)
        super().__init__(every=every, resume=resume if in_memory else None,
                         extra_state=dict(extra_state or {}))
        if directory is None and (in_memory or resume in (False, None, True)):
            raise ValueError("CheckpointFiles needs a run directory to write to, or resume= a "
                             "run directory or checkpoint file to continue")
        self.directory = None if directory is None else Path(directory)
        if resume is True:
            self.resume_from = self.directory
            self.directory = None   # keep writing to the file resumed from
        elif in_memory or resume in (False, None):
            self.resume_from = None
        else:
            self.resume_from = Path(resume)
        self.share = distributed_setup.file_work_runner(False)
        self.resumed_path: Path | None = None
        self.target: Path | None = None

    def load(self, distributed: bool = False):
        """Read the state to resume from (rank 0 in a distributed fit) and decide, refusing to
        replace another run's checkpoint, which file this fit writes."""
        self.share = distributed_setup.file_work_runner(distributed)
        state = self.resume
        if self.resume_from is not None:
            self.resumed_path, state = self.share(_read_resume_state, self.resume_from)
        self.target = self.share(_checkpoint_target, self.directory, self.resumed_path)
        return state

    @property
    def saves(self) -> bool:
        return True

    def save(self, state: dict) -> None:
        self.share(save_checkpoint, state, self.target)

    def resume_error(self, error: Exception) -> Exception:
        if self.resumed_path is None:
            return error
        return CheckpointError(f"cannot resume from {str(self.resumed_path)!r}: {error}")


def _policy_from_file_keywords(checkpoint_dir, checkpoint_every: int, resume) -> Checkpointing:
    """0.1's ``pyro_vae.fit(..., checkpoint_dir=RUN, resume=PATH or state)`` as a policy."""
    if isinstance(resume, Mapping):
        if checkpoint_dir is None:
            return Checkpointing(every=checkpoint_every, resume=resume)
        return CheckpointFiles(checkpoint_dir, every=checkpoint_every, resume=resume)
    if checkpoint_dir is None:
        return CheckpointFiles(resume, every=checkpoint_every, resume=True)
    return CheckpointFiles(checkpoint_dir, every=checkpoint_every,
                           resume=resume if resume is not None else False)


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


options.FILE_KEYWORD_POLICIES.append(_policy_from_file_keywords)
