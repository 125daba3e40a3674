"""Datasets: one loader, one name per dataset.

:func:`load_dataset` returns a :class:`Dataset` holding train / validation / test tensors
(flat, float32), labels when present, and metadata (feature shape, kind, a suggested
likelihood).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from pyro_vae.models._validation import unknown_name_error


@dataclass
class Dataset:
    """Train / validation / test splits of one dataset, flat rows of float32 features."""

    name: str
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    validation_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    feature_shape: tuple[int, ...] = ()
    kind: str = "tabular"  # "image" or "tabular"
    suggested_likelihood: str = "normal"
    info: dict = field(default_factory=dict)

    @property
    def x_dim(self) -> int:
        return int(self.train.shape[1])


def check_split_fractions(validation_fraction: float, test_fraction: float) -> None:
    """Raise ValueError unless both fractions lie in [0, 1) and leave training data."""
    for name, value in (("validation_fraction", validation_fraction),
                        ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1); got {value!r}. Pass e.g. "
                             f"{name}=0.1.")
    if validation_fraction + test_fraction >= 1:
        raise ValueError(f"validation_fraction + test_fraction = "
                         f"{validation_fraction + test_fraction:g} leaves no training data; "
                         "expected a sum below 1 (e.g. 0.1 and 0.2).")


def _split(n: int, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = (int(round(f * n)) for f in fractions)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def load_digits(binarize: bool = False, seed: int = 0, validation_fraction: float = 0.1,
                test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to [0, 1];
    ``binarize`` thresholds at 0.5. Split train/validation/test by a seeded permutation."""
    from sklearn.datasets import load_digits as sklearn_digits

    check_split_fractions(validation_fraction, test_fraction)
    bunch = sklearn_digits()
    x = bunch.data.astype(np.float32) / 16.0
    if binarize:
        x = (x > 0.5).astype(np.float32)
    y = bunch.target.astype(np.int64)
    train, val, test = _split(len(x), (validation_fraction, test_fraction), seed)
    t = torch.from_numpy
    return Dataset("digits", t(x[train]), t(x[val]), t(x[test]), t(y[train]), t(y[val]),
                   t(y[test]), feature_shape=(1, 8, 8), kind="image",
                   suggested_likelihood="bernoulli" if binarize else "continuous_bernoulli",
                   info={"num_classes": 10, "binarize": binarize, "seed": seed})


LOADERS = {"digits": load_digits}


def load_dataset(name: str = "digits", **options) -> Dataset:
    """Load a dataset by name (see ``LOADERS``) with loader-specific options."""
    if name not in LOADERS:
        raise unknown_name_error("dataset", name, LOADERS)
    parameters = inspect.signature(LOADERS[name]).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        for option in options:
            if option not in parameters:
                raise unknown_name_error("option", option, parameters,
                                         where=f" for dataset {name!r}")
    return LOADERS[name](**options)
