"""fit's budget and bookkeeping."""

import pytest

import pyro_vae as pv


def test_wall_clock_budget_stops_the_fit(binary_digits):
    result = pv.fit(pv.VAE(64, 2, hidden=(16,)), binary_digits.train, epochs=10_000,
                    batch_size=8, max_seconds=0.5, quiet=True)
    assert 1 <= len(result.history) < 10_000
    assert result.seconds < 0.5 + 5.0   # stops after the step that crossed the budget
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        pv.fit(pv.VAE(64, 2), binary_digits.train, max_seconds=0, quiet=True)


def test_loss_is_per_datapoint_whatever_the_batch_size(ppca):
    """The scaled loss divided by N equals the unscaled per-datapoint loss in expectation."""
    x = ppca.sample(256)
    losses = {}
    for batch_size in (16, 256):
        model = ppca.mean_field_vae(inflate=1.5)
        for p in model.parameters():
            p.requires_grad_(False)
        result = pv.fit(model, x, epochs=20, batch_size=batch_size, lr=1e-9, quiet=True,
                        optimizer="sgd")
        losses[batch_size] = sum(result.column("loss")) / 20
    exact = -ppca.exact_log_prob(x).mean().item()
    assert losses[16] == pytest.approx(losses[256], abs=0.05)
    assert losses[16] > exact - 0.05   # a bound on -log p(x)
