"""Test 7: bad input gets an error saying what was expected, what came, and the fix."""

import pytest
import torch

import pyro_vae as pv


def test_bernoulli_rejects_non_binary_data():
    model = pv.VAE(4, 2, likelihood="bernoulli")
    with pytest.raises(pv.DataSupportError,
                       match=r"binary values in \{0, 1\}.*Binarize.*continuous_bernoulli"):
        pv.fit(model, torch.full((8, 4), 0.3), quiet=True)


@pytest.mark.parametrize("likelihood,bad,fix", [
    ("continuous_bernoulli", 2.0, "Rescale the data to"),
    ("poisson", 0.5, "counts"),
    ("negative_binomial", -1.0, "counts"),
])
def test_likelihoods_state_their_support(likelihood, bad, fix):
    model = pv.VAE(4, 2, likelihood=likelihood)
    with pytest.raises(pv.DataSupportError, match=fix):
        pv.evaluate(model, torch.full((8, 4), bad), num_samples=2)


def test_nan_in_data():
    x = torch.zeros(8, 4)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite.*first rows: \[3\].*impute"):
        pv.fit(pv.VAE(4, 2), x, quiet=True)


def test_wrong_feature_size():
    with pytest.raises(ValueError, match="6 features but the model was built for x_dim=4"):
        pv.fit(pv.VAE(4, 2), torch.zeros(8, 6), quiet=True)
    with pytest.raises(ValueError, match=r"shape \(N, features\).*Flatten"):
        pv.fit(pv.VAE(4, 2), torch.zeros(8, 2, 2), quiet=True)


@pytest.mark.parametrize("kind,kwargs", [
    ("prior", {"prior": "gaussian"}), ("likelihood", {"likelihood": "bernouli"}),
    ("guide", {"guide": "diag"}), ("network", {"network": "cnn"}),
])
def test_unknown_component_names(kind, kwargs):
    with pytest.raises(ValueError, match=f"unknown {kind} .*expected one of"):
        pv.VAE(4, 2, **kwargs)


def test_unknown_estimator_and_optimizer():
    with pytest.raises(ValueError, match="unknown estimator 'vi'"):
        pv.fit(pv.VAE(4, 2), torch.zeros(8, 4), estimator="vi", quiet=True)
    with pytest.raises(ValueError, match="unknown optimizer"):
        pv.fit(pv.VAE(4, 2), torch.zeros(8, 4), optimizer="adamax2", quiet=True)


@pytest.mark.parametrize("z_dim", [0, -3, 2.5])
def test_non_positive_latent_size(z_dim):
    with pytest.raises(ValueError, match="z_dim must be a positive integer"):
        pv.VAE(4, z_dim)


def test_fit_argument_checks():
    model, x = pv.VAE(4, 2), torch.zeros(8, 4)
    with pytest.raises(ValueError, match="batch_size=16 exceeds the 8 training datapoints"):
        pv.fit(model, x, batch_size=16, quiet=True)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        pv.fit(model, x, lr=0, quiet=True, batch_size=4)
    with pytest.raises(ValueError, match="empty"):
        pv.fit(model, torch.zeros(0, 4), quiet=True)
    with pytest.raises(TypeError, match="torch.as_tensor"):
        pv.fit(model, [[0.0] * 4] * 8, quiet=True)


def test_non_finite_loss_names_epoch_and_step():
    model = pv.VAE(4, 2, likelihood="normal")
    with torch.no_grad():
        model.decoder[-1].bias.fill_(float("inf"))
    with pytest.raises(pv.NonFiniteLossError, match="epoch 1, step 1"):
        pv.fit(model, torch.zeros(8, 4), batch_size=4, quiet=True)


def test_bernoulli_grey_levels_is_the_cross_entropy_and_an_explicit_choice():
    """Grey levels are refused by the Bernoulli unless asked for; with ``grey_levels`` the
    score is sum_d x_d log mu_d + (1 - x_d) log(1 - mu_d), Pyro's examples' objective."""
    grey = pv.load_dataset("digits", binarize="none").train[:20]
    with pytest.raises(pv.DataSupportError, match="grey_levels=true"):
        pv.VAE(64, 2, hidden=(8,)).check_data(grey)
    model = pv.VAE(64, 2, hidden=(8,), likelihood_options={"grey_levels": True})
    model.check_data(grey)
    logits = torch.randn(20, 64)
    mu = torch.sigmoid(logits)
    expected = (grey * mu.log() + (1 - grey) * (1 - mu).log()).sum(-1)
    torch.testing.assert_close(model.likelihood.distribution(logits).log_prob(grey), expected)
    with pytest.raises(pv.DataSupportError, match=r"values in the interval \[0, 1\]"):
        model.check_data(grey * 2)
