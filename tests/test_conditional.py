"""The conditional VAE: batches (x, c), per-class generation, honest evaluation."""

import pytest
import torch

import pyro_vae as pv
from pyro_vae.models import ConditionalVAE


@pytest.fixture(scope="module")
def fitted(binary_digits):
    torch.manual_seed(0)
    model = ConditionalVAE(64, 10, 2, hidden=(64,))
    result = pv.fit(model, (binary_digits.train, binary_digits.train_labels), epochs=25,
                    lr=3e-3, quiet=True)
    return model, result


def test_samples_look_like_their_class(fitted, binary_digits):
    model, result = fitted
    assert result.settings["minibatch_scaled"] is True
    x, y = binary_digits.train, binary_digits.train_labels
    class_means = torch.stack([x[y == c].mean(0) for c in range(10)])
    nearest = [int(torch.cdist(model.sample(100, c).mean(0, keepdim=True), class_means).argmin())
               for c in range(10)]
    assert sum(n == c for c, n in enumerate(nearest)) >= 9, nearest


def test_evaluation_with_label_batches(fitted, binary_digits):
    model, _ = fitted
    data = (binary_digits.test, binary_digits.test_labels)
    metrics = pv.evaluate(model, data, num_samples=200)
    assert metrics.elbo <= metrics.log_likelihood + 0.05
    assert len(metrics.kl_per_dimension) == 2
    # the label helps: the unconditional ELBO of the same data is worse than log p(x | c)
    wrong = (binary_digits.test, (binary_digits.test_labels + 3) % 10)
    assert pv.evaluate(model, wrong, num_samples=200).log_likelihood < metrics.log_likelihood


def test_variants_and_generation_shapes():
    for prior, decoder in ((True, False), (False, True)):
        model = ConditionalVAE(6, 3, 2, likelihood="normal", hidden=(8,),
                               condition_prior=prior, condition_decoder=decoder)
        x, c = torch.randn(12, 6), torch.arange(12) % 3
        pv.fit(model, (x, c), epochs=1, quiet=True)
        assert model.sample(4, 2).shape == (4, 6)
        assert model.sample(3, torch.tensor([0, 1, 2])).shape == (3, 6)
        assert model.encode(x, c).shape == (12, 2)


def test_bad_labels_and_options():
    model = ConditionalVAE(6, 3, 2, likelihood="normal", hidden=(8,))
    x = torch.randn(4, 6)
    with pytest.raises(TypeError, match="integer"):
        pv.fit(model, (x, torch.zeros(4)), epochs=1, quiet=True)
    with pytest.raises(ValueError, match="lie in 0..2"):
        pv.fit(model, (x, torch.tensor([0, 1, 2, 3])), epochs=1, quiet=True)
    with pytest.raises(ValueError, match="condition_prior=True or"):
        ConditionalVAE(6, 3, condition_prior=False, condition_decoder=False)
    with pytest.raises(ValueError, match="one label or 5 labels"):
        model.sample(5, torch.tensor([0, 1]))


def test_float64_and_saving(tmp_path):
    model = ConditionalVAE(6, 3, 2, likelihood="normal", hidden=(8,)).double()
    x, c = torch.randn(10, 6, dtype=torch.float64), torch.arange(10) % 3
    pv.fit(model, (x, c), epochs=2, quiet=True)
    assert pv.evaluate(model, (x, c), num_samples=20).log_likelihood < 0
    path = pv.save_model(model, tmp_path / "cvae.pt")
    loaded = pv.load_model(path)   # rebuilt in the default dtype (float32)
    z = torch.randn(4, 2)
    assert loaded.config["class"] == "ConditionalVAE"
    assert torch.allclose(loaded.decode(z, 1), model.float().decode(z, 1))
