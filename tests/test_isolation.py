"""Test 4: two models in one process share no parameters (the notebook re-run case)."""

import pyro
import torch

import pyro_vae as pv


def test_two_models_share_no_parameters(binary_digits):
    a = pv.VAE(64, 2, prior="mixture", hidden=(16,))
    b = pv.VAE(64, 2, prior="mixture", hidden=(16,))
    storage = {p.data_ptr() for p in a.parameters()}
    assert storage.isdisjoint(p.data_ptr() for p in b.parameters())
    before = [p.detach().clone() for p in b.parameters()]
    pv.fit(a, binary_digits.train[:256], epochs=2, quiet=True)
    assert all(torch.equal(p, q) for p, q in zip(before, b.parameters(), strict=True))
    assert len(pyro.get_param_store()) == 0   # parameters live in the modules


def test_rebuilding_a_model_starts_fresh(binary_digits):
    """Re-running a notebook cell builds a new model; nothing carries over by name."""
    torch.manual_seed(0)
    first = pv.VAE(64, 2, hidden=(16,))
    pv.fit(first, binary_digits.train[:256], epochs=1, quiet=True)
    torch.manual_seed(0)
    second = pv.VAE(64, 2, hidden=(16,))
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert p.data_ptr() != q.data_ptr()
    torch.manual_seed(0)
    untrained = pv.VAE(64, 2, hidden=(16,))
    for p, q in zip(second.parameters(), untrained.parameters(), strict=True):
        assert torch.equal(p, q)   # the fitted first model did not leak into the second
