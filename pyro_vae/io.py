"""Saving and loading fitted models: weights plus the configuration that rebuilds them.

A saved file is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(path, weights_only=True)``. Files are written atomically (temporary file,
flush, fsync, rename): an interrupted save never leaves a half-written file in place. Each
file carries a SHA-256 digest of its contents (``"sha256"``), checked on loading: torch
itself loads a file whose tensor bytes were damaged without complaint.
:func:`load_model` also rebuilds the model of a training checkpoint
(:mod:`pyro_vae.checkpoints`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch

from pyro_vae.inference.devices import resolve_device
from pyro_vae.inference.fitting.state import STATE_FORMAT
from pyro_vae.models import (
    VAE,
    BayesianDecoderVAE,
    CategoricalVAE,
    ConditionalVAE,
    GaussianMixtureVAE,
    HierarchicalVAE,
    SemiSupervisedVAE,
)

FORMAT = "pyro-vae-model"
FORMAT_VERSION = 1
DIGEST_KEY = "sha256"

#: model class name (``config["class"]``) -> builder taking the config's other keys
MODEL_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "VAE": VAE, "ConditionalVAE": ConditionalVAE, "GaussianMixtureVAE": GaussianMixtureVAE,
    "SemiSupervisedVAE": SemiSupervisedVAE, "CategoricalVAE": CategoricalVAE,
    "HierarchicalVAE": HierarchicalVAE, "BayesianDecoderVAE": BayesianDecoderVAE}


class CheckpointError(ValueError):
    """A file that is not a loadable pyro-vae model (truncated, corrupted or foreign)."""


def content_digest(obj) -> str:
    """SHA-256 over a canonical walk of dicts, lists, tensors (dtype, shape, bytes) and
    plain values: equal for a saved object and the object loaded back."""
    digest = hashlib.sha256()

    def visit(value):
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{tensor.dtype}{tuple(value.shape)}:".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            digest.update(b"{")
            for key, item in sorted(value.items(), key=lambda pair: repr(pair[0])):
                digest.update(repr(key).encode() + b":")
                visit(item)
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[" if isinstance(value, list) else b"(")
            for item in value:
                visit(item)
            digest.update(b"]")
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    visit(obj)
    return digest.hexdigest()


def with_digest(payload: Mapping) -> dict:
    """``payload`` plus its :func:`content_digest` under ``"sha256"``."""
    payload = {key: value for key, value in payload.items() if key != DIGEST_KEY}
    return {**payload, DIGEST_KEY: content_digest(payload)}


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (0o666 less the umask); mkstemp's
    temporary files are 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary file name in path's folder to write by name (netCDF, savefig); when the
    block completes the file is fsynced and renamed over ``path`` (and the rename made
    durable), so readers see the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fchmod(handle.fileno(), _file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


@contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file handle whose contents replace ``path`` only when the block completes
    (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files that writers of ``path`` killed mid-write left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f"{_temporary_prefix(path)}*.tmp"))


def load_weights_only(path: str | os.PathLike, what: str, how_made: str):
    """``torch.load(path, weights_only=True)`` on the CPU, with clear errors for a missing,
    truncated or corrupted file (``what``: "saved model"; ``how_made``: what writes it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {str(path)!r}; expected a file written by "
                                f"{how_made}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated/corrupt files
        first_line = (str(error).splitlines() or [""])[0][:120]
        raise CheckpointError(f"{str(path)!r} is not a readable {what} ({type(error).__name__}"
                              f": {first_line}); it may be truncated or corrupted. Use another "
                              f"file, or write it again with {how_made}.") from None
    if isinstance(payload, dict) and DIGEST_KEY in payload:
        stored = payload.pop(DIGEST_KEY)
        if content_digest(payload) != stored:
            raise CheckpointError(f"{str(path)!r} is corrupted: its contents do not match the "
                                  f"SHA-256 digest stored when it was written. Use another "
                                  f"file, or write it again with {how_made}.")
    return payload


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` inside :func:`atomic_open`."""
    with atomic_open(path) as handle:
        write(handle)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def save_model(model: torch.nn.Module, path: str | os.PathLike, extra: dict | None = None
               ) -> Path:
    """Save weights and ``model.config`` (required to rebuild) to ``path``."""
    config = getattr(model, "config", None)
    if not config:
        raise ValueError(
            f"{type(model).__name__} has no reconstructable configuration (built from custom "
            "component instances or networks), so save_model cannot rebuild it later. Save "
            "its weights with torch.save(model.state_dict(), path) and rebuild it yourself.")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save(with_digest({"format": FORMAT, "version": FORMAT_VERSION,
                                          "config": config, "state_dict": state,
                                          "extra": extra or {}}), path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a saved model file (``weights_only=True``), checking its format. A training
    checkpoint is read as the model it holds (its configuration and weights)."""
    payload = load_weights_only(
        path, "saved model",
        "save_model (e.g. RUN/model.pt) or fit(checkpoints=CheckpointFiles(RUN))")
    found = payload.get("format") if isinstance(payload, dict) else None
    if found == STATE_FORMAT:
        if not payload.get("model_config"):
            raise CheckpointError(f"the training checkpoint {str(path)!r} holds a model without "
                                  "a reconstructable configuration; rebuild the model yourself "
                                  "and resume with fit(model, data, checkpoints="
                                  "CheckpointFiles(RUN, resume=True)).")
        return {"format": FORMAT, "version": FORMAT_VERSION, "config": payload["model_config"],
                "state_dict": payload["model"], "extra": {"epoch": payload.get("epoch")}}
    if found != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pyro-vae model file (format {found!r}, "
                              f"expected {FORMAT!r}); pass a file written by save_model.")
    return payload


def build_model(config: dict) -> torch.nn.Module:
    """Rebuild an (untrained) model from a saved configuration."""
    config = dict(config)
    name = config.pop("class", "VAE")
    if name not in MODEL_BUILDERS:
        raise CheckpointError(f"unknown model class {name!r} in configuration; known: "
                              f"{sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[name](**config)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a model saved by :func:`save_model` (or held in a training checkpoint) and
    load its weights."""
    device = resolve_device(device)
    payload = read_checkpoint(path)
    model = build_model(payload["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"the weights in {str(path)!r} do not fit the model its "
                              f"configuration builds: {str(error).splitlines()[0][:200]}") from None
    return model.to(device)
