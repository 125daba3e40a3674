"""Your own data from ``.npy``, ``.npz`` or ``.csv`` files.

* ``.npy``: one array, (N, features) or images (N, H, W) / (N, C, H, W) (flattened).
* ``.npz``: either arrays ``x`` (or ``X``, ``data``, ``features``) and optional labels ``y``
  (or ``labels``, ``targets``), split by a seeded permutation; or pre-split ``train``,
  ``test`` and optional ``validation`` with optional ``train_labels`` and so on. An archive
  holding one array uses it as ``x``.
* ``.csv``: numbers separated by commas, with or without a header row; ``label_column``
  (a header name or a 0-based index) is taken out as labels (strings are mapped to integers).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.base import (
    Dataset,
    DatasetError,
    MissingDataError,
    binarize_splits,
    check_binarize,
    split_indices,
)

SUFFIXES = (".npy", ".npz", ".csv")
_X_KEYS = ("x", "X", "data", "features")
_Y_KEYS = ("y", "labels", "targets")


def _check_features(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DatasetError(f"{what} must hold numbers; got an array of dtype {x.dtype}")
    if x.ndim < 2 or len(x) == 0:
        raise DatasetError(f"{what} must have shape (N, features) or (N, [C,] H, W) with N >= "
                           f"1; got shape {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        rows = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[:5].tolist()
        raise DatasetError(f"{what} contains NaN or infinite values (first rows: {rows}); "
                           "remove or impute them")
    return x


def _encode_labels(labels: np.ndarray, n: int, what: str) -> tuple[np.ndarray, list[str]]:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DatasetError(f"{what} must have one label per row, shape ({n},); got "
                           f"{labels.shape}")
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64), [str(v) for v in np.unique(labels)]
    names, codes = np.unique(labels.astype(str), return_inverse=True)
    return codes.astype(np.int64), names.tolist()


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if "train" in arrays:
        if "test" not in arrays:
            raise DatasetError(f"{str(path)!r} has a 'train' array but no 'test' array; "
                               "pre-split archives need both (and optionally 'validation')")
        splits = {s: arrays.get(s) for s in ("train", "validation", "test")}
        labels = {s: arrays.get(f"{s}_labels", arrays.get(f"y_{s}")) for s in splits}
        return splits, labels
    x_key = next((k for k in _X_KEYS if k in arrays), None)
    if x_key is None and len(arrays) == 1:
        x_key = next(iter(arrays))
    if x_key is None:
        raise DatasetError(f"{str(path)!r} holds arrays {sorted(arrays)}; expected one named "
                           f"{' / '.join(_X_KEYS)} (optionally with labels {' / '.join(_Y_KEYS)}"
                           "), or pre-split 'train' and 'test'")
    y_key = next((k for k in _Y_KEYS if k in arrays), None)
    return arrays[x_key], None if y_key is None else arrays[y_key]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, label_column) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DatasetError(f"{str(path)!r} has no rows")
    header = None if all(_is_number(c) for c in rows[0]) else [c.strip() for c in rows[0]]
    body = rows[1:] if header else rows
    width = len(rows[0])
    names = header or [f"column_{i}" for i in range(width)]
    label_index = None
    if label_column is not None:
        if isinstance(label_column, int) and not isinstance(label_column, bool):
            label_index = label_column if label_column >= 0 else width + label_column
        elif str(label_column) in names:
            label_index = names.index(str(label_column))
        if label_index is None or not 0 <= label_index < width:
            raise DatasetError(f"label_column {label_column!r} is not a column of "
                               f"{str(path)!r}; columns are {names}")
    features, labels = [], []
    for number, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise DatasetError(f"line {number} of {str(path)!r} has {len(row)} fields; "
                               f"expected {width}")
        try:
            features.append([float(c) for i, c in enumerate(row) if i != label_index])
        except ValueError:
            bad = next(c for i, c in enumerate(row) if i != label_index and not _is_number(c))
            raise DatasetError(f"line {number} of {str(path)!r} has the non-numeric value "
                               f"{bad!r}; every feature must be a number (name the label column "
                               "with label_column=...)") from None
        if label_index is not None:
            labels.append(row[label_index].strip())
    feature_names = [n for i, n in enumerate(names) if i != label_index]
    if label_index is None:
        return np.asarray(features, dtype=np.float64), None, feature_names
    labels_array = np.asarray(labels)
    if all(_is_number(v) and float(v).is_integer() for v in labels):
        labels_array = labels_array.astype(float).astype(np.int64)
    return np.asarray(features, dtype=np.float64), labels_array, feature_names


def suggest_likelihood(x: torch.Tensor) -> str:
    """A likelihood whose support holds ``x``: 0/1 -> bernoulli, [0, 1] ->
    continuous_bernoulli, non-negative integers -> poisson, else normal_per_feature."""
    if bool(((x == 0) | (x == 1)).all()):
        return "bernoulli"
    if float(x.min()) >= 0 and float(x.max()) <= 1:
        return "continuous_bernoulli"
    if float(x.min()) >= 0 and bool((x == x.round()).all()):
        return "poisson"
    return "normal_per_feature"


def load_array_file(path: str | os.PathLike, *, label_column=None, seed: int = 0,
                    validation_fraction: float = 0.1, test_fraction: float = 0.2,
                    standardize: bool = False, binarize="none") -> Dataset:
    """Load a ``.npy``, ``.npz`` or ``.csv`` file (see the module docstring) as a Dataset.

    Without pre-split arrays, rows are split by a permutation seeded by ``seed``.
    ``standardize`` rescales each feature to mean 0, sd 1 with training-split statistics
    (kept in ``info``); ``binarize`` works as for the image datasets (data in [0, 1]).
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise DatasetError(f"cannot read {str(path)!r}: expected a file ending in "
                           f"{', '.join(SUFFIXES)}")
    if not path.is_file():
        raise MissingDataError(f"data file {str(path)!r} does not exist")
    mode = check_binarize(binarize)
    feature_names = None
    try:
        if path.suffix.lower() == ".csv":
            x, y, feature_names = _read_csv(path, label_column)
        elif path.suffix.lower() == ".npz":
            x, y = _read_npz(path)
        else:
            x, y = np.load(path, allow_pickle=False), None
    except (ValueError, OSError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"cannot read {str(path)!r}: {error}") from None

    if isinstance(x, dict):                       # a pre-split .npz archive
        arrays = {s: None if a is None else _check_features(a, f"the {s!r} array of {path.name}")
                  for s, a in x.items()}
        labels = {s: None if y[s] is None or arrays[s] is None else _encode_labels(
            y[s], len(arrays[s]), f"the {s} labels")[0] for s in arrays}
        label_names = None
    else:
        x = _check_features(x, f"the data in {path.name}")
        train, val, test = split_indices(len(x), validation_fraction, test_fraction, seed)
        if len(train) == 0 or len(test) == 0:
            raise DatasetError(f"{path.name} has {len(x)} rows, too few to split into train and "
                               "test sets; give more rows or pre-split train/test arrays (.npz)")
        parts = {"train": train, "validation": val if len(val) else None, "test": test}
        arrays = {s: None if i is None else x[i] for s, i in parts.items()}
        labels, label_names = dict.fromkeys(parts), None
        if y is not None:
            codes, label_names = _encode_labels(y, len(x), f"the labels of {path.name}")
            labels = {s: None if i is None else codes[i] for s, i in parts.items()}
    item_shape = arrays["train"].shape[1:]
    if any(a is not None and a.shape[1:] != item_shape for a in arrays.values()):
        raise DatasetError(f"the splits of {path.name} have different feature shapes: "
                           f"{ {s: a.shape[1:] for s, a in arrays.items() if a is not None} }")
    kind = "image" if len(item_shape) >= 2 else "tabular"
    feature_shape = ((1,) + item_shape if len(item_shape) == 2 else item_shape)
    tensors = {s: None if a is None else torch.from_numpy(a.reshape(len(a), -1))
               for s, a in arrays.items()}
    info = {"path": str(path), "binarize": mode, "seed": seed, "standardized": standardize}
    if standardize:
        mean, std = tensors["train"].mean(0), tensors["train"].std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        tensors = {s: None if t is None else (t - mean) / std for s, t in tensors.items()}
        info.update(mean=mean.tolist(), std=std.tolist())
    tensors = binarize_splits(tensors, mode, seed)
    if feature_names is not None:
        info["feature_names"] = feature_names
    if label_names is not None:
        info.update(label_names=label_names, num_classes=len(label_names))
    as_tensor = {s: None if v is None else torch.from_numpy(v) for s, v in labels.items()}
    return Dataset(path.stem, tensors["train"], tensors["validation"], tensors["test"],
                   as_tensor["train"], as_tensor["validation"], as_tensor["test"],
                   feature_shape=tuple(int(d) for d in feature_shape), kind=kind,
                   suggested_likelihood=suggest_likelihood(
                       tensors["train"] if mode != "dynamic" else tensors["test"]),
                   info=info)
