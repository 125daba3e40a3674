"""The free-bits objective: E_q log p(x|z) - beta sum_j max(lambda, KL_j), minibatch-scaled."""

import pyro
import pytest
import torch

import pyro_vae as pv
from pyro_vae.inference import FreeBitsELBO, kl_per_dimension, make_estimator, scale_latent_sites


def _loss(elbo, model, x, num_data=None, beta=None, seed=7):
    pyro.set_rng_seed(seed)
    kwargs = {} if num_data is None else {"num_data": num_data}
    if beta is None:
        return elbo.loss(model.model, model.guide, x, **kwargs)
    with scale_latent_sites(beta):
        return elbo.loss(model.model, model.guide, x, **kwargs)


@pytest.fixture
def batch(ppca):
    model, x = ppca.mean_field_vae(inflate=1.7), ppca.sample(40)
    kl = kl_per_dimension(model, x)
    assert kl[0].item() != pytest.approx(kl[1].item(), rel=0.05)     # the two dimensions differ
    return model, x, kl


def test_lambda_zero_is_the_mean_field_elbo(batch):
    model, x, _ = batch
    meanfield = make_estimator("meanfield", max_plate_nesting=1)
    free = FreeBitsELBO(0.0, max_plate_nesting=1)
    for num_data in (None, 1000):
        assert _loss(free, model, x, num_data) == pytest.approx(
            _loss(meanfield, model, x, num_data), rel=1e-6)


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_each_dimension_pays_at_least_lambda(batch, beta):
    """loss = -(N/B) sum recon + beta N sum_j max(lambda, KL_j) with KL_j the batch average."""
    model, x, kl = batch
    lam = float(kl.mean())              # between the two dimensions' KL
    num_data = 1000
    free = FreeBitsELBO(lam, max_plate_nesting=1)
    terms = free.kl_terms(model.model, model.guide, x, num_data=num_data)["z"]
    assert torch.allclose(terms["kl"], kl, rtol=1e-5)
    assert bool((terms["objective"] >= lam).all())
    assert torch.allclose(terms["objective"], torch.clamp(kl, min=lam))
    recon_only = _loss(free, model, x, num_data, beta=0.0)
    loss = _loss(free, model, x, num_data, beta=beta)
    charged = (loss - recon_only) / (beta * num_data)
    assert charged == pytest.approx(torch.clamp(kl, min=lam).sum().item(), rel=1e-5)
    assert charged >= len(kl) * lam
    meanfield = _loss(make_estimator("meanfield", max_plate_nesting=1), model, x, num_data,
                      beta=beta)
    assert loss - meanfield == pytest.approx(
        beta * num_data * (lam - kl.min().item()), rel=1e-4)


def test_a_dimension_below_the_floor_feels_no_kl_gradient(batch):
    model, x, kl = batch
    lam = float(kl.mean())
    low, high = int(kl.argmin()), int(kl.argmax())
    free = FreeBitsELBO(lam, max_plate_nesting=1)

    def grad(beta):
        model.zero_grad()
        pyro.set_rng_seed(3)
        with scale_latent_sites(beta):
            free.loss_and_grads(model.model, model.guide, x, num_data=500)
        return model.guide_family.logvar_head.bias.grad.clone()

    with_kl, recon_only = grad(1.0), grad(0.0)
    assert with_kl[low] == pytest.approx(recon_only[low].item(), rel=1e-5, abs=1e-6)
    assert abs(with_kl[high] - recon_only[high]) > 1e-3


def test_spec_and_fit(binary_digits):
    assert "freebits:lambda=0.5,k=1" in pv.inference.valid_specs()
    elbo = make_estimator("freebits:lambda=0.25,k=2")
    assert isinstance(elbo, FreeBitsELBO) and elbo.free_bits == 0.25 and elbo.num_particles == 2
    model = pv.VAE(64, 4, hidden=(16,))
    result = pv.fit(model, binary_digits.train[:256], estimator="freebits:lambda=0.5",
                    epochs=4, batch_size=64, beta=2.0, quiet=True)
    assert result.settings["estimator"] == "freebits:lambda=0.5,k=1"
    assert result.column("loss")[-1] < result.column("loss")[0]


def test_unsuitable_guides_are_refused(binary_digits):
    x = binary_digits.train[:32]
    free = FreeBitsELBO(0.5)
    with pytest.raises(ValueError, match="factorise"):
        free.loss(*(lambda m: (m.model, m.guide))(pv.VAE(64, 2, guide="full_rank")), x)
    with pytest.raises(ValueError, match="point mass"):
        free.loss(*(lambda m: (m.model, m.guide))(pv.models.autoencoder(64, 2)), x)
    with pytest.raises(ValueError, match=">= 0"):
        FreeBitsELBO(-1.0)
