"""Datasets: digits binarisation modes, dynamic binarisation as a batch source, the gw
catalogue, and user arrays from .npy / .npz / .csv."""

import numpy as np
import pyro
import pytest
import torch

import pyro_vae as pv
from pyro_vae.data import DynamicBinarization, load_dataset, make_gw_catalogue
from pyro_vae.data.gw import FEATURES, POPULATIONS


def test_digits_splits_and_metadata():
    d = load_dataset("digits")
    assert d.sizes() == {"train": 1258, "validation": 180, "test": 359}
    assert d.x_dim == 64 and d.feature_shape == (1, 8, 8) and d.kind == "image"
    assert float(d.train.min()) == 0 and float(d.train.max()) == 1
    assert d.suggested_likelihood == "continuous_bernoulli"
    assert len(d.train_labels) == 1258 and set(d.test_labels.tolist()) == set(range(10))
    # the split is a seeded permutation: no overlap, same rows for the same seed
    again = load_dataset("digits")
    assert torch.equal(d.test, again.test)


@pytest.mark.parametrize("mode", ["threshold", "static", "dynamic"])
def test_digits_binarisations_are_binary(mode):
    d = load_dataset("digits", binarize=mode)
    for split in ("validation", "test"):
        x = d.split(split)
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert d.suggested_likelihood == "bernoulli" and d.info["binarize"] == mode


def test_static_draw_is_fixed_by_seed_and_follows_the_grey_levels():
    grey = load_dataset("digits")
    a, b = load_dataset("digits", binarize="static"), load_dataset("digits", binarize="static")
    assert torch.equal(a.train, b.train)
    other = load_dataset("digits", binarize="static", seed=1)
    assert not torch.equal(a.test, load_dataset("digits", binarize="static", seed=1).test[
        :len(a.test)]) or len(other.test) != len(a.test)
    # E[x_b] = p: the mean of the draw matches the grey levels within Monte Carlo error
    p = grey.train
    sd = (p * (1 - p)).sum().sqrt().item()
    assert abs((a.train - p).sum().item()) < 4 * sd


def test_dynamic_evaluation_splits_equal_the_static_ones():
    static, dynamic = (load_dataset("digits", binarize=m, seed=3) for m in ("static", "dynamic"))
    assert torch.equal(static.test, dynamic.test)
    assert torch.equal(static.validation, dynamic.validation)
    assert isinstance(dynamic.train, DynamicBinarization)
    assert torch.equal(dynamic.train.probs, load_dataset("digits", seed=3).train)


def test_dynamic_source_draws_afresh_and_reproducibly():
    source = load_dataset("digits", binarize="dynamic").train
    rows = torch.arange(200)
    pyro.set_rng_seed(5)
    first, second = source.get(rows)[0], source.get(rows)[0]
    assert not torch.equal(first, second)                       # a fresh draw each batch
    pyro.set_rng_seed(5)
    assert torch.equal(source.get(rows)[0], first)              # the global RNG decides
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert source.shape == (1258, 64) and source.to("cpu").device.type == "cpu"
    double = source.to(dtype=torch.float64)
    assert double.get(rows[:3])[0].dtype == torch.float64


def test_fit_draws_dynamic_batches_and_is_reproducible():
    source = DynamicBinarization(load_dataset("digits").train[:256])

    def run(seed):
        pyro.set_rng_seed(seed)
        model = pv.VAE(64, 2, hidden=(16,))
        return pv.fit(model, source, epochs=2, batch_size=64, seed=seed, quiet=True).column(
            "loss")

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_gw_catalogue_is_reproducible_and_documented():
    x, y = make_gw_catalogue(600, seed=2)
    x2, y2 = make_gw_catalogue(600, seed=2)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (600, len(FEATURES)) == (600, 16) and np.isfinite(x).all()
    assert np.bincount(y).tolist() == [300, 180, 120]
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    # physical consistency: m2 <= m1, 0 < q <= 1, eta <= 1/4, BNS light with tidal signal
    assert (col["log_m2"] <= col["log_m1"] + 1e-9).all()
    assert ((col["mass_ratio"] > 0) & (col["mass_ratio"] <= 1)).all()
    assert (col["symmetric_mass_ratio"] <= 0.25 + 1e-12).all()
    bns = y == POPULATIONS.index("bns")
    assert (np.exp(col["log_total_mass"][bns]) < 6).all()
    assert (col["log1p_tidal_deformability"][~bns] == 0).all()
    assert (col["log1p_tidal_deformability"][bns] > 0).all()
    assert (col["log_snr"] > np.log(8)).all()                   # detected: SNR above 8


def test_gw_populations_separable_but_not_trivially():
    from sklearn.linear_model import LogisticRegression

    d = load_dataset("gw")
    assert d.x_dim == 16 and d.kind == "tabular" and d.suggested_likelihood == (
        "normal_per_feature")
    assert torch.allclose(d.train.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(d.train.std(0, unbiased=False), torch.ones(16), atol=1e-3)
    black_holes = d.train_labels < 2
    test_bh = d.test_labels < 2
    clf = LogisticRegression(max_iter=2000).fit(d.train[black_holes], d.train_labels[
        black_holes])
    accuracy = clf.score(d.test[test_bh], d.test_labels[test_bh])
    assert 0.85 < accuracy < 0.995, accuracy                    # overlapping tails
    total_mass = d.train[:, FEATURES.index("log_total_mass")]
    bns = d.train_labels == 2
    assert total_mass[bns].max() < total_mass[~bns].min()      # neutron stars stand apart


def test_user_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    np.save(tmp_path / "a.npy", x)
    d = load_dataset(str(tmp_path / "a.npy"))
    assert d.sizes() == {"train": 35, "validation": 5, "test": 10} and d.x_dim == 3
    assert d.suggested_likelihood == "normal_per_feature" and d.train_labels is None

    images = rng.uniform(size=(40, 4, 4))
    np.savez(tmp_path / "b.npz", x=images, y=np.arange(40) % 2)
    d = load_dataset(tmp_path / "b.npz", binarize="static")
    assert d.kind == "image" and d.feature_shape == (1, 4, 4) and d.x_dim == 16
    assert d.suggested_likelihood == "bernoulli" and d.train_labels is not None

    np.savez(tmp_path / "c.npz", train=x[:30], test=x[30:], train_labels=np.zeros(30, int))
    d = load_dataset(tmp_path / "c.npz", standardize=True)
    assert d.sizes() == {"train": 30, "validation": 0, "test": 20}
    assert torch.allclose(d.train.mean(0), torch.zeros(3), atol=1e-5)

    lines = ["mass,spin,kind"] + [f"{a:.3f},{b:.3f},{'ab'[i % 2]}" for i, (a, b, _) in
                                  enumerate(x)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    d = load_dataset(tmp_path / "d.csv", label_column="kind")
    assert d.x_dim == 2 and d.info["feature_names"] == ["mass", "spin"]
    assert d.info["label_names"] == ["a", "b"]
    (tmp_path / "e.csv").write_text("1,2\n3,4\n5,6\n7,8\n9,10\n")
    assert load_dataset(tmp_path / "e.csv", test_fraction=0.4).sizes()["test"] == 2


@pytest.mark.parametrize("name,options,match", [
    ("digitz", {}, "Did you mean 'digits'"),
    ("digits", {"binarise": True}, r"unknown option 'binarise' for dataset.*'binarize'"),
    ("digits", {"binarize": "sometimes"}, "unknown binarization"),
    ("gw", {"fractions": (1, 2)}, "three non-negative"),
    ("digits", {"test_fraction": 0.95}, "leaves no training data"),
])
def test_bad_dataset_requests(name, options, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(name, **options)


def test_bad_user_files(tmp_path):
    with pytest.raises(pv.MissingDataError, match="does not exist"):
        load_dataset(tmp_path / "missing.npy")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(pv.DatasetError, match="line 3 .* non-numeric value 'oops'"):
        load_dataset(tmp_path / "bad.csv")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]] * 10))
    with pytest.raises(pv.DatasetError, match="NaN or infinite"):
        load_dataset(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    with pytest.raises(pv.DatasetError, match=r"shape \(N, features\)"):
        load_dataset(tmp_path / "flat.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((5, 2)), b=np.zeros(5))
    with pytest.raises(pv.DatasetError, match="expected one named x"):
        load_dataset(tmp_path / "two.npz")
