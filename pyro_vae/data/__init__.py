"""Datasets: one loader, one name per dataset.

:func:`load_dataset` returns a :class:`Dataset` holding train / validation / test data
(flat float32 rows), labels when present, and metadata (feature shape, image or tabular, a
suggested likelihood). Names: ``digits`` (scikit-learn's bundled 8x8 digits), ``mnist``
(local IDX files), ``gw`` (a synthetic catalogue of compact-binary mergers); any path
ending in ``.npy``, ``.npz`` or ``.csv`` loads your own array.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from pyro_vae.data.arrays import SUFFIXES, load_array_file, suggest_likelihood
from pyro_vae.data.base import (
    BINARIZATIONS,
    Dataset,
    DatasetError,
    DynamicBinarization,
    MissingDataError,
    binarize_splits,
    split_indices,
)
from pyro_vae.data.digits import load_digits
from pyro_vae.data.gw import load_gw, make_gw_catalogue
from pyro_vae.data.mnist import ENVIRONMENT_VARIABLE, load_mnist, read_idx
from pyro_vae.models._validation import unknown_name_error

LOADERS: dict[str, Callable[..., Dataset]] = {"digits": load_digits, "mnist": load_mnist,
                                              "gw": load_gw}


def is_array_path(name) -> bool:
    """Whether ``name`` names a user data file (by its suffix) rather than a dataset."""
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(SUFFIXES)


def loader_options(name) -> list[str]:
    """The keyword options the loader of ``name`` accepts."""
    loader = load_array_file if is_array_path(name) else LOADERS[name]
    return [p.name for p in inspect.signature(loader).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "path"]


def load_dataset(name: str | os.PathLike = "digits", **options) -> Dataset:
    """Load a dataset by name (see ``LOADERS``) or from a ``.npy``/``.npz``/``.csv`` path,
    with loader-specific options (e.g. ``binarize="dynamic"``, ``data_dir=...``)."""
    if not is_array_path(name) and name not in LOADERS:
        raise unknown_name_error("dataset", name, LOADERS,
                                 list(LOADERS) + ["a path ending in " + "/".join(SUFFIXES)])
    valid = loader_options(name)
    for option in sorted(set(options) - set(valid)):
        error = unknown_name_error("option", option, valid, where=f" for dataset {str(name)!r}")
        raise DatasetError(str(error))
    if is_array_path(name):
        return load_array_file(name, **options)
    return LOADERS[name](**options)


__all__ = [
    "Dataset", "DatasetError", "MissingDataError", "DynamicBinarization", "BINARIZATIONS",
    "LOADERS", "load_dataset", "load_digits", "load_mnist", "load_gw", "make_gw_catalogue",
    "load_array_file", "read_idx", "suggest_likelihood", "binarize_splits", "split_indices",
    "is_array_path", "loader_options", "ENVIRONMENT_VARIABLE",
]
