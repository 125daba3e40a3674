"""The MNIST reader: IDX files written here (gzip and raw), checksums, clear errors, and
the real files in ../shared/data/mnist when they are present."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.data import DatasetError, MissingDataError, load_dataset, read_idx
from pyro_vae.data.base import DynamicBinarization
from pyro_vae.data.mnist import MNIST_FILES, parse_idx

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 00 00 08 ndim, big-endian dims, values."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_mnist(directory: Path, n_train=30, n_test=12, size=(6, 4), compress=True, seed=0):
    """Small MNIST-format files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *size), np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *size), np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, np.uint8)}
    for stem, array in arrays.items():
        raw = idx_bytes(array)
        if compress:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    arrays = write_mnist(tmp_path, compress=compress)
    suffix = ".gz" if compress else ""
    for stem, array in arrays.items():
        out = read_idx(tmp_path / f"{stem}{suffix}")
        assert out.dtype == np.uint8 and np.array_equal(out, array)


def test_load_small_mnist(tmp_path):
    arrays = write_mnist(tmp_path / "mnist")
    # the data directory itself, or a parent holding mnist/, both work
    d = load_dataset("mnist", data_dir=tmp_path, verify=False, binarize="none")
    assert d.sizes() == {"train": 30, "validation": 0, "test": 12}
    assert d.feature_shape == (1, 6, 4) and d.x_dim == 24 and d.kind == "image"
    expected = arrays["t10k-images-idx3-ubyte"].reshape(12, -1) / 255.0
    torch.testing.assert_close(d.test, torch.tensor(expected, dtype=torch.float32))
    assert d.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert d.suggested_likelihood == "continuous_bernoulli"

    held = load_dataset("mnist", data_dir=tmp_path / "mnist", verify=False,
                        validation_size=10, binarize="static")
    assert held.sizes() == {"train": 20, "validation": 10, "test": 12}
    together = torch.cat([held.train_labels, held.validation_labels]).sort().values
    assert torch.equal(together, torch.tensor(arrays["train-labels-idx1-ubyte"],
                                              dtype=torch.int64).sort().values)
    assert set(held.test.unique().tolist()) <= {0.0, 1.0}

    dynamic = load_dataset("mnist", data_dir=tmp_path, verify=False)   # default: dynamic
    assert isinstance(dynamic.train, DynamicBinarization)
    assert dynamic.suggested_likelihood == "bernoulli"
    static = load_dataset("mnist", data_dir=tmp_path, verify=False, binarize="static")
    assert torch.equal(dynamic.test, static.test)        # test data: one fixed, seeded draw


def test_environment_variable(tmp_path, monkeypatch):
    write_mnist(tmp_path / "elsewhere", compress=False)
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "elsewhere"))
    assert load_dataset("mnist", verify=False).sizes()["test"] == 12


def test_checksums_are_checked(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(DatasetError, match="does not match the published MNIST checksum"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    with pytest.raises(MissingDataError, match="PYRO_VAE_DATA is not set.*--data-dir"):
        load_dataset("mnist")
    with pytest.raises(MissingDataError, match=f"looked in '{tmp_path}'"):
        load_dataset("mnist", data_dir=tmp_path)


def test_corrupted_files(tmp_path):
    arrays = write_mnist(tmp_path, compress=False)
    raw = idx_bytes(arrays["train-images-idx3-ubyte"])
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(DatasetError, match="truncated or corrupted"):
        load_dataset("mnist", data_dir=tmp_path, verify=False)
    with pytest.raises(DatasetError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04 not idx")
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:50])
    with pytest.raises(DatasetError, match="truncated or corrupted"):
        load_dataset("mnist", data_dir=tmp_path, verify=False)


def test_mismatched_images_and_labels(tmp_path):
    arrays = write_mnist(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        idx_bytes(arrays["t10k-labels-idx1-ubyte"][:5]))
    with pytest.raises(DatasetError, match="do not fit together"):
        load_dataset("mnist", data_dir=tmp_path, verify=False)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no local MNIST copy at ../shared")
def test_shared_mnist_copy():
    for stem, (md5, size) in MNIST_FILES.items():     # the published checksums themselves
        raw = gzip.decompress((SHARED_MNIST / f"{stem}.gz").read_bytes())
        assert (hashlib.md5(raw).hexdigest(), len(raw)) == (md5, size)
    d = load_dataset("mnist", data_dir=os.fspath(SHARED_MNIST), validation_size=10000)
    assert d.sizes() == {"train": 50000, "validation": 10000, "test": 10000}
    assert d.x_dim == 784 and d.feature_shape == (1, 28, 28)
    counts = torch.bincount(d.test_labels, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert d.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(torch.cat([d.train_labels, d.validation_labels])).sum() == 60000
    probs = d.train.probs
    assert float(probs.min()) == 0 and float(probs.max()) == 1
    assert abs(float(probs.mean()) - 0.1307) < 0.001      # the well-known MNIST pixel mean


def test_each_file_is_checksummed_once_until_it_changes(tmp_path, monkeypatch):
    import pyro_vae.data.mnist as mnist
    arrays = write_mnist(tmp_path, compress=False)
    published = {stem: (hashlib.md5(idx_bytes(array)).hexdigest(), len(idx_bytes(array)))
                 for stem, array in arrays.items()}
    monkeypatch.setattr(mnist, "MNIST_FILES", published)
    monkeypatch.setattr(mnist, "_VERIFIED", set())
    digests, md5 = [], hashlib.md5

    def counting_md5(data):
        digests.append(len(data))
        return md5(data)

    monkeypatch.setattr(mnist.hashlib, "md5", counting_md5)
    load_dataset("mnist", data_dir=tmp_path, binarize="none")
    assert len(digests) == 4
    first = load_dataset("mnist", data_dir=tmp_path, binarize="none")
    assert len(digests) == 4                    # remembered: not read for a checksum again
    # a file that changes (size or modification time) is checked again, and fails
    changed = tmp_path / "t10k-images-idx3-ubyte"
    altered = arrays["t10k-images-idx3-ubyte"].copy()
    altered[0, 0, 0] ^= 1
    changed.write_bytes(idx_bytes(altered))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    with pytest.raises(DatasetError, match="does not match the published MNIST checksum"):
        load_dataset("mnist", data_dir=tmp_path, binarize="none")
    assert len(digests) == 5
    torch.testing.assert_close(first.test, torch.tensor(
        arrays["t10k-images-idx3-ubyte"].reshape(12, -1) / 255.0, dtype=torch.float32))


def test_validation_split_last_holds_out_the_end_of_the_training_file(tmp_path):
    arrays = write_mnist(tmp_path)
    last = load_dataset("mnist", data_dir=tmp_path, verify=False, binarize="none",
                        validation_size=10, validation_split="last")
    images = arrays["train-images-idx3-ubyte"].reshape(30, -1) / 255.0
    torch.testing.assert_close(last.validation, torch.tensor(images[-10:], dtype=torch.float32))
    torch.testing.assert_close(last.train, torch.tensor(images[:-10], dtype=torch.float32))
    assert last.validation_labels.tolist() == arrays["train-labels-idx1-ubyte"][-10:].tolist()
    with pytest.raises(DatasetError, match="validation_split must be one of"):
        load_dataset("mnist", data_dir=tmp_path, verify=False, validation_split="first")
