"""Saving and loading: weights plus configuration, loadable with weights_only=True."""

import pytest
import torch

import pyro_vae as pv
from pyro_vae.io import with_digest


@pytest.mark.parametrize("prior,guide", [("vamp", "flow"), ("mixture", "full_rank")])
def test_round_trip(tmp_path, binary_digits, prior, guide):
    model = pv.VAE(64, 3, prior=prior, guide=guide, hidden=(16,), beta=2.0)
    pv.fit(model, binary_digits.train[:128], epochs=1, quiet=True)
    path = pv.save_model(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["prior"] == prior and payload["config"]["beta"] == 2.0
    loaded = pv.load_model(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    x = binary_digits.test[:5]
    outputs = []
    for m in (model, loaded):
        torch.manual_seed(1)   # a flow guide's mean is a Monte Carlo average
        outputs.append(m.reconstruct(x))
    torch.testing.assert_close(*outputs)


def test_custom_components_cannot_be_saved_by_config(tmp_path):
    model = pv.VAE(4, 2, decoder=torch.nn.Linear(2, 4))
    with pytest.raises(ValueError, match="no reconstructable configuration"):
        pv.save_model(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_corrupted_and_foreign_files(tmp_path):
    good = pv.save_model(pv.VAE(4, 2, hidden=(4,)), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(pv.CheckpointError, match="truncated or corrupted"):
        pv.load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(pv.CheckpointError, match="not a pyro-vae model file"):
        pv.load_model(foreign)
    with pytest.raises(FileNotFoundError, match="no saved model"):
        pv.load_model(tmp_path / "missing.pt")


def test_weights_from_another_configuration(tmp_path):
    path = pv.save_model(pv.VAE(4, 2, hidden=(4,)), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["z_dim"] = 3
    torch.save(with_digest(payload), tmp_path / "other.pt")   # a consistent file, other config
    with pytest.raises(pv.CheckpointError, match="do not fit the model"):
        pv.load_model(tmp_path / "other.pt")
    torch.save(payload, tmp_path / "edited.pt")   # edited after saving: the digest catches it
    with pytest.raises(pv.CheckpointError, match="corrupted: its contents do not match"):
        pv.load_model(tmp_path / "edited.pt")
