"""MNIST from the standard IDX files in a local directory.

The four files (LeCun, Cortes & Burges) are read gzip-compressed or not, from ``data_dir``
or the ``PYRO_VAE_DATA`` environment variable (the directory itself, or its ``mnist/`` or
``MNIST/raw/`` subdirectory). Each file's *uncompressed* bytes are checked against the
published MD5 sums, so a recompressed copy passes and a truncated or foreign one does not.

IDX format: a 4-byte magic (0, 0, type code, number of dimensions), one big-endian uint32
per dimension, then the values in C order (type 0x08 = unsigned byte).
"""

from __future__ import annotations

import gzip
import hashlib
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
)

ENVIRONMENT_VARIABLE = "PYRO_VAE_DATA"

#: file stem -> (MD5 of the uncompressed file, its size in bytes), as published
MNIST_FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47040016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7840016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10008),
}

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}

_HOW_TO_PROVIDE = (
    "Put the four standard MNIST files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz) in one directory "
    f"and pass it as data_dir=... (CLI: --data-dir DIR) or set {ENVIRONMENT_VARIABLE}=DIR. "
    "torchvision.datasets.MNIST(root, download=True) on a machine with network writes them "
    "to root/MNIST/raw.")


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """The contents of ``path``, decompressed when it is gzip (detected by its magic bytes)."""
    path = Path(path)
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    try:
        if compressed:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as error:
        raise DatasetError(f"cannot read {str(path)!r}: {error}; the file may be truncated "
                           "or corrupted. Replace it with a fresh copy.") from None


def parse_idx(raw: bytes, source: str = "IDX data") -> np.ndarray:
    """Decode the bytes of an IDX file into an array of its stated type and shape."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"{source} is not an IDX file (magic bytes {raw[:4].hex() or 'none'};"
                           " expected 0000 followed by a type code such as 08 and the number "
                           "of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{source} is truncated: its header needs {header} bytes, the file "
                           f"has {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{source} has {len(raw)} bytes but its header (shape {shape}, "
                           f"type {dtype}) implies {expected}; the file is truncated or "
                           "corrupted")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a numpy array."""
    return parse_idx(read_file_bytes(path), repr(str(path)))


def mnist_directories(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for the MNIST files, in order."""
    root = data_dir if data_dir is not None else os.environ.get(ENVIRONMENT_VARIABLE)
    if not root:
        return []
    root = Path(root).expanduser()
    return [root, root / "mnist", root / "MNIST" / "raw"]


def find_mnist_file(stem: str, data_dir=None) -> Path:
    """The path of ``stem`` or ``stem.gz`` in the first directory that has it."""
    directories = mnist_directories(data_dir)
    for directory in directories:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    if not directories:
        where = (f"no data directory was given and {ENVIRONMENT_VARIABLE} is not set")
    else:
        where = "looked in " + ", ".join(repr(str(d)) for d in directories)
    raise MissingDataError(f"MNIST file {stem}(.gz) not found: {where}. {_HOW_TO_PROVIDE}")


#: files whose checksum passed in this process, keyed by (path, size, modification time)
_VERIFIED: set[tuple[str, int, int]] = set()


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def read_mnist_file(stem: str, data_dir=None, verify: bool = True) -> np.ndarray:
    """Find, read and (with ``verify``) checksum one of the four MNIST files. A file is
    checksummed once per process: its path, size and modification time are remembered, and
    a changed file is checked again."""
    path = find_mnist_file(stem, data_dir)
    key = _file_key(path)
    raw = read_file_bytes(path)
    if verify and stem in MNIST_FILES and key not in _VERIFIED:
        md5, size = MNIST_FILES[stem]
        digest = hashlib.md5(raw).hexdigest()
        if digest != md5:
            raise DatasetError(
                f"{str(path)!r} does not match the published MNIST checksum (uncompressed MD5 "
                f"{digest}, {len(raw)} bytes; expected {md5}, {size} bytes). The file is "
                "corrupted or not the standard MNIST; replace it, or pass verify=False "
                "(CLI: --data-option verify=false) to read other IDX files such as "
                "Fashion-MNIST.")
        _VERIFIED.add(key)
    return parse_idx(raw, repr(str(path)))


def _images_and_labels(prefix: str, data_dir, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    images = read_mnist_file(f"{prefix}-images-idx3-ubyte", data_dir, verify)
    labels = read_mnist_file(f"{prefix}-labels-idx1-ubyte", data_dir, verify)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"the {prefix} files do not fit together: images of shape "
                           f"{images.shape} and labels of shape {labels.shape}; expected "
                           "(N, height, width) and (N,)")
    return images, labels


VALIDATION_SPLITS = ("random", "last")


def load_mnist(data_dir: str | os.PathLike | None = None, binarize="dynamic", seed: int = 0,
               validation_size: int = 0, verify: bool = True,
               validation_split: str = "random") -> Dataset:
    """MNIST: 60,000 training and 10,000 test images of 28x28 pixels scaled to [0, 1].

    ``validation_size`` images are held out of the training set: with
    ``validation_split='random'`` the last ones of a permutation seeded by ``seed``, with
    ``'last'`` the last images of the training file in their order (as Pyro's examples hold
    out 10,000); 0 keeps the standard 60k/10k split with no validation.
    ``binarize``: 'dynamic' (default; a fresh Bernoulli draw each time a training batch is
    taken, as in Burda et al. 2015; validation and test are one fixed draw seeded by
    ``seed``), 'static' (one fixed draw of every split), 'threshold' or 'none'.
    ``verify`` checks the published checksums.
    """
    mode = check_binarize(binarize)
    train_images, train_labels = _images_and_labels("train", data_dir, verify)
    test_images, test_labels = _images_and_labels("t10k", data_dir, verify)
    if isinstance(validation_size, bool) or not isinstance(validation_size, int) or not (
            0 <= validation_size < len(train_images)):
        raise DatasetError(f"validation_size must be an integer in [0, {len(train_images)}); "
                           f"got {validation_size!r}")

    def pixels(images):
        # the same float32 quotients as numpy's astype(float32) / 255, in a third of the time
        flat = images.reshape(len(images), -1).copy()
        return torch.from_numpy(flat).to(torch.float32).div_(255.0)

    x, y = pixels(train_images), torch.from_numpy(train_labels.astype(np.int64))
    validation = validation_labels = None
    if validation_split not in VALIDATION_SPLITS:
        raise DatasetError(f"validation_split must be one of {list(VALIDATION_SPLITS)}; got "
                           f"{validation_split!r}")
    if validation_size:
        order = (torch.arange(len(x)) if validation_split == "last" else
                 torch.from_numpy(np.random.default_rng(seed).permutation(len(x))))
        keep, held = order[:-validation_size], order[-validation_size:]
        x, validation, validation_labels, y = x[keep], x[held], y[held], y[keep]
    splits = binarize_splits({"train": x, "validation": validation, "test": pixels(test_images)},
                             mode, seed)
    height, width = train_images.shape[1:]
    return Dataset("mnist", splits["train"], splits["validation"], splits["test"], y,
                   validation_labels, torch.from_numpy(test_labels.astype(np.int64)),
                   feature_shape=(1, int(height), int(width)), kind="image",
                   suggested_likelihood="continuous_bernoulli" if mode == "none" else "bernoulli",
                   info={"num_classes": 10, "label_names": [str(i) for i in range(10)],
                         "binarize": mode, "seed": seed, "verified": verify,
                         "source": str(find_mnist_file("train-images-idx3-ubyte", data_dir))})
