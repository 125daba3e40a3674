"""Small helpers shared by the study runners (holes, collapse, anomaly)."""

from __future__ import annotations

import os
from pathlib import Path

from pyro_vae.data import Dataset, load_dataset
from pyro_vae.io import atomic_open

BINARY_IMAGE_DATASETS = ("digits", "mnist")


def as_dataset(dataset: Dataset | str, options: dict | None = None) -> Dataset:
    """A :class:`Dataset` as it is, or loaded by name (digits/MNIST binarised unless
    ``options`` says otherwise)."""
    if isinstance(dataset, str):
        options = dict(options or {})
        if dataset in BINARY_IMAGE_DATASETS:
            options.setdefault("binarize", True)
        dataset = load_dataset(dataset, **options)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a pyro_vae.Dataset or a dataset name such as "
                        f"'digits'; got {type(dataset).__name__}")
    return dataset


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`pyro_vae.io.atomic_open`)."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)
