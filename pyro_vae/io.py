"""Saving and loading fitted models: weights plus the configuration that rebuilds them.

A saved file is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(path, weights_only=True)``. Files are written atomically (temporary file,
flush, fsync, rename): an interrupted save never leaves a half-written file in place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from pyro_vae.models import VAE, ConditionalVAE

FORMAT = "pyro-vae-model"
FORMAT_VERSION = 1

#: model class name (``config["class"]``) -> builder taking the config's other keys
MODEL_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "VAE": VAE, "ConditionalVAE": ConditionalVAE}


class CheckpointError(ValueError):
    """A file that is not a loadable pyro-vae model (truncated, corrupted or foreign)."""


@contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file handle whose contents replace ``path`` only when the block completes:
    written to a temporary file in the same folder, flushed, fsynced, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over path."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)
    return Path(path)


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
    return atomic_torch_save({"format": FORMAT, "version": FORMAT_VERSION, "config": config,
                              "state_dict": state, "extra": extra or {}}, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a saved model file (``weights_only=True``), checking its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {str(path)!r}; expected a file written "
                                "by save_model (e.g. RUN/model.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(f"{str(path)!r} is not a readable model file ({type(error).__name__}"
                              f": {str(error).splitlines()[0][:120]}); it may be truncated or "
                              "corrupted. Re-save the model or use another checkpoint.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pyro-vae model file (format "
                              f"{payload.get('format') if isinstance(payload, dict) else None!r}"
                              f", expected {FORMAT!r}).")
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
    """Rebuild a model saved by :func:`save_model` and load its weights."""
    payload = read_checkpoint(path)
    model = build_model(payload["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"the weights in {str(path)!r} do not fit the model its "
                              f"configuration builds: {str(error).splitlines()[0][:200]}") from None
    return model.to(device)
