"""scikit-learn's bundled 8x8 handwritten digits: no download needed."""

from __future__ import annotations

import numpy as np
import torch

from pyro_vae.data.base import Dataset, binarize_splits, check_binarize, split_indices


def load_digits(binarize="none", seed: int = 0, validation_fraction: float = 0.1,
                test_fraction: float = 0.2) -> Dataset:
    """The 1797 8x8 digits of scikit-learn, grey levels 0..16 scaled to [0, 1].

    ``binarize`` is 'none', 'threshold' (x > 0.5; ``True`` means this), 'static' or
    'dynamic' (see :mod:`pyro_vae.data.base`). Train / validation / test come from a
    permutation seeded by ``seed`` (default fractions 0.7 / 0.1 / 0.2).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    mode = check_binarize(binarize)
    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.data.astype(np.float32) / 16.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train, val, test = (torch.from_numpy(i) for i in split_indices(
        len(x), validation_fraction, test_fraction, seed))
    splits = binarize_splits({"train": x[train], "validation": x[val] if len(val) else None,
                              "test": x[test]}, mode, seed)
    return Dataset("digits", splits["train"], splits["validation"], splits["test"], y[train],
                   y[val] if len(val) else None, y[test], feature_shape=(1, 8, 8), kind="image",
                   suggested_likelihood="continuous_bernoulli" if mode == "none" else "bernoulli",
                   info={"num_classes": 10, "label_names": [str(i) for i in range(10)],
                         "binarize": mode, "seed": seed})
