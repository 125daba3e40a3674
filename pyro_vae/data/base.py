"""The :class:`Dataset` every loader returns, its errors, splitting and binarisation.

Binarisation modes for data in [0, 1] (``binarize=``):

* ``"none"``: keep grey levels;
* ``"threshold"``: x > 0.5, deterministic;
* ``"static"``: one Bernoulli draw x_b ~ Bernoulli(x) per split, fixed by ``seed``;
* ``"dynamic"``: the training split is a :class:`DynamicBinarization` source that draws a
  fresh x_b ~ Bernoulli(x) every time a batch is taken (Burda et al. 2015); validation and
  test are the *same* fixed draws as ``"static"`` with that seed, so reported numbers are
  reproducible and equal for the two modes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pyro_vae.models._validation import unknown_name_error

BINARIZATIONS = ("none", "threshold", "static", "dynamic")
SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
    """A dataset that cannot be loaded as asked: a bad file, option or value."""


class MissingDataError(DatasetError, FileNotFoundError):
    """Data files that are not where they were looked for."""


class DynamicBinarization:
    """A batch source of grey levels p in [0, 1] that returns a fresh draw Bernoulli(p) for
    every batch, using torch's global RNG on the data's device (so ``pyro.set_rng_seed`` and a
    saved RNG state make it reproducible).

    It follows the batch-source protocol of :mod:`pyro_vae.inference.batching`
    (``__len__``, ``get(index)``, ``to(device)``, ``device``); indexing ``source[rows]`` also
    returns a fresh draw, and ``probs`` holds the grey levels.
    """

    def __init__(self, probs: torch.Tensor):
        if not isinstance(probs, torch.Tensor) or probs.dim() != 2:
            raise TypeError("DynamicBinarization needs a 2-D tensor of probabilities (N, "
                            f"features); got {type(probs).__name__}")
        self.probs = probs

    def __len__(self) -> int:
        return len(self.probs)

    def __getitem__(self, index) -> torch.Tensor:
        return torch.bernoulli(self.probs[index])

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.bernoulli(self.probs[index]),)

    def first(self) -> torch.Tensor:
        """One draw of every row (what input checks look at)."""
        return torch.bernoulli(self.probs)

    def identity(self) -> torch.Tensor:
        """The grey levels: what identifies the data (see
        :func:`~pyro_vae.inference.batching.identity_tensor`)."""
        return self.probs

    def to(self, device=None, dtype=None) -> DynamicBinarization:
        return DynamicBinarization(self.probs.to(device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        return self.probs.device

    @property
    def dtype(self) -> torch.dtype:
        return self.probs.dtype

    @property
    def shape(self) -> torch.Size:
        return self.probs.shape

    def __repr__(self) -> str:
        return f"DynamicBinarization(probs of shape {tuple(self.probs.shape)})"


@dataclass
class Dataset:
    """Train / validation / test splits of one dataset, flat rows of float32 features.

    ``train`` is a tensor, or a :class:`DynamicBinarization` source under dynamic
    binarisation; ``validation`` is None when the dataset has no validation split.
    ``feature_shape`` is (channels, height, width) for images, (features,) for tables;
    ``kind`` is "image" or "tabular"; ``info`` holds loader metadata (feature names, label
    names, how the data were made).
    """

    name: str
    train: torch.Tensor | DynamicBinarization
    validation: torch.Tensor | None
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    validation_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    feature_shape: tuple[int, ...] = ()
    kind: str = "tabular"
    suggested_likelihood: str = "normal"
    info: dict = field(default_factory=dict)

    @property
    def x_dim(self) -> int:
        return int(self.train.shape[1])

    def split(self, name: str) -> torch.Tensor | DynamicBinarization:
        """The data of split ``name`` ('train', 'validation' or 'test')."""
        if name not in SPLITS:
            raise unknown_name_error("split", name, SPLITS)
        data = getattr(self, name)
        if data is None:
            raise DatasetError(f"the {self.name!r} dataset has no {name} split; use one of "
                               f"{[s for s in SPLITS if getattr(self, s) is not None]}")
        return data

    def labels(self, name: str) -> torch.Tensor | None:
        """The labels of split ``name``, or None."""
        self.split(name)
        return getattr(self, f"{name}_labels")

    def tensor(self, name: str) -> torch.Tensor:
        """Split ``name`` as a tensor (grey levels for a dynamically binarised split)."""
        data = self.split(name)
        return data.probs if isinstance(data, DynamicBinarization) else data

    def sizes(self) -> dict[str, int]:
        return {s: (0 if getattr(self, s) is None else len(getattr(self, s))) for s in SPLITS}

    def describe(self) -> str:
        """One line: name, split sizes, features and binarisation."""
        sizes = self.sizes()
        parts = [f"{sizes[s]} {s}" for s in SPLITS if sizes[s]]
        text = f"{self.name} ({' / '.join(parts)}; {self.x_dim} features, {self.kind}"
        if self.info.get("binarize", "none") != "none":
            text += f", binarize={self.info['binarize']}"
        return text + ")"


def split_indices(n: int, validation_fraction: float, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) row indices from a seeded permutation of ``n`` rows."""
    for name, value in (("validation_fraction", validation_fraction),
                        ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise DatasetError(f"{name} must be a number in [0, 1); got {value!r}. Pass e.g. "
                               f"{name}=0.1.")
    if validation_fraction + test_fraction >= 1:
        raise DatasetError(f"validation_fraction + test_fraction = "
                           f"{validation_fraction + test_fraction:g} leaves no training data; "
                           "expected a sum below 1 (e.g. 0.1 and 0.2).")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = (int(round(f * n)) for f in (validation_fraction, test_fraction))
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def check_binarize(binarize) -> str:
    """Normalise a binarisation option: True -> 'threshold', False/None -> 'none'."""
    if binarize is True:
        return "threshold"
    if binarize is False or binarize is None:
        return "none"
    if binarize not in BINARIZATIONS:
        raise unknown_name_error("binarization", binarize, BINARIZATIONS)
    return binarize


def _split_generator(seed: int, split: str) -> torch.Generator:
    """An independent, seeded generator per split (SeedSequence spawning)."""
    state = np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def binarize_splits(splits: dict[str, torch.Tensor | None], mode: str, seed: int
                    ) -> dict[str, torch.Tensor | DynamicBinarization | None]:
    """Apply binarisation ``mode`` (see the module docstring) to split tensors in [0, 1]."""
    mode = check_binarize(mode)
    out = {}
    for name, x in splits.items():
        if x is None or mode == "none":
            out[name] = x
            continue
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise DatasetError(f"binarize={mode!r} needs values in [0, 1]; the {name} split "
                               f"spans [{float(x.min()):.3g}, {float(x.max()):.3g}]. Scale the "
                               "data to [0, 1] or use binarize='none'.")
        if mode == "threshold":
            out[name] = (x > 0.5).to(x.dtype)
        elif mode == "dynamic" and name == "train":
            out[name] = DynamicBinarization(x)
        else:
            out[name] = torch.bernoulli(x, generator=_split_generator(seed, name))
    return out
