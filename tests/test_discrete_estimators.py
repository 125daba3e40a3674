"""The enum, score and relaxed estimators: baselines, schedules, state, errors, dtypes."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method

from pyro_vae.inference import (
    GumbelSoftmax,
    RelaxedELBO,
    ScoreELBO,
    evaluate,
    fit,
    make_estimator,
    parse_estimator,
    score_gradient_variance,
    train_baseline_network,
)
from pyro_vae.models import CategoricalVAE, GaussianMixtureVAE, SemiSupervisedVAE, data_plate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def test_each_baseline_lowers_the_score_gradient_variance(binary_digits):
    """At fixed parameters on one minibatch: the running average and the neural baseline
    (trained alone at these parameters) each lower the variance of the guide's gradient."""
    torch.manual_seed(0)
    model = GaussianMixtureVAE(64, 10, z_dim=4, hidden=[32])
    batch = binary_digits.train[:64]
    before = [p.detach().clone() for p in model.parameters()]
    losses = train_baseline_network(model, binary_digits.train, steps=40, batch_size=64)
    assert all(math.isfinite(loss) for loss in losses)
    trained = {id(p) for p in model.baseline_network.parameters()}
    moved = {id(p) for p, old in zip(model.parameters(), before, strict=True)
             if not torch.equal(p, old)}
    assert moved and moved <= trained            # only the baseline network was trained
    result = score_gradient_variance(model, batch, num_draws=20, warmup_draws=10)
    none, avg, nn = (result.get(f"score:baseline={b},k=1", "classifier").variance_mean
                     for b in ("none", "avg", "nn"))
    assert avg < 0.5 * none
    assert nn < 0.5 * none
    enum = result.get("enum", "classifier").variance_mean
    assert enum < avg     # y summed exactly: only the draws of z vary


def test_specs_parse_and_bad_options_are_clear_errors():
    assert str(parse_estimator("score:baseline=nn")) == "score:baseline=nn,decay=0.9,k=1"
    assert str(parse_estimator("relaxed")) == "relaxed:t0=1.0,tmin=0.5,rate=0.001,k=1"
    assert str(parse_estimator("enum:k=3")) == "enum:k=3"
    with pytest.raises(ValueError, match=r"baseline.*one of \['none', 'avg', 'nn'\]"):
        parse_estimator("score:baseline=mean")
    with pytest.raises(ValueError, match=r"decay must lie in \(0, 1\)"):
        parse_estimator("score:decay=1.5")
    with pytest.raises(ValueError, match="anneal downwards"):
        parse_estimator("relaxed:t0=0.5,tmin=1.0")
    with pytest.raises(ValueError, match="must be > 0"):
        parse_estimator("relaxed:tmin=0")


def test_enum_refuses_too_many_joint_configurations_with_advice():
    model = CategoricalVAE(8, num_latents=20, num_classes=10, hidden=[8])
    x = torch.bernoulli(torch.full((4, 8), 0.5))
    with pytest.raises(ValueError, match=r"100000000000000000000 configurations.*'score' or "
                       r"'relaxed'"):
        make_estimator("enum").loss_and_grads(model.model, model.guide, x)
    # evaluation falls back to importance sampling of the discrete sites and says so
    result = evaluate(model, x, num_samples=20, elbo_particles=2)
    assert set(result.discrete_sites.values()) == {
        "importance-sampled (100000000000000000000 joint configurations exceed the "
        "enumeration limit)"}
    assert math.isfinite(result.log_likelihood) and result.elbo <= result.log_likelihood + 1.0


def test_score_nn_needs_a_baseline_network():
    class Coin(PyroModule):
        def __init__(self):
            super().__init__()
            self.logit = torch.nn.Parameter(torch.zeros(1))

        @pyro_method
        def model(self, x):
            with data_plate(x):
                pyro.sample("y", dist.Bernoulli(logits=torch.zeros_like(x[:, 0])))

        @pyro_method
        def guide(self, x):
            with data_plate(x):
                pyro.sample("y", dist.Bernoulli(logits=self.logit.expand(len(x))))

    coin = Coin()
    x = torch.zeros(5, 1)
    with pytest.raises(ValueError, match="baseline_network"):
        make_estimator("score:baseline=nn").loss_and_grads(coin.model, coin.guide, x)
    make_estimator("score:baseline=avg").loss_and_grads(coin.model, coin.guide, x)
    with pytest.raises(ValueError, match="OneHotCategorical"):
        make_estimator("relaxed").loss_and_grads(coin.model, coin.guide, x)


def test_relaxed_temperature_schedule_and_state():
    estimator = RelaxedELBO(initial_temperature=1.0, final_temperature=0.5, rate=0.1)
    assert estimator.temperature == 1.0
    model = CategoricalVAE(6, num_latents=2, num_classes=3, hidden=[8])
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    for _ in range(3):
        estimator.loss_and_grads(model.model, model.guide, x)
    assert estimator.temperature == pytest.approx(math.exp(-0.3))
    estimator.loss(model.model, model.guide, x)               # evaluating does not anneal
    assert estimator.steps == 3
    for _ in range(20):
        estimator.loss_and_grads(model.model, model.guide, x)
    assert estimator.temperature == 0.5
    fresh = RelaxedELBO(rate=0.1)
    fresh.load_state_dict(estimator.state_dict())
    assert fresh.temperature == estimator.temperature


def test_gumbel_softmax_samples_the_simplex_and_its_kl_is_the_categorical_kl():
    torch.manual_seed(0)
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.0, float("-inf"), 1.0]])
    relaxed = GumbelSoftmax(0.1, logits)
    draws = relaxed.rsample((20000,))
    assert torch.allclose(draws.sum(-1), torch.ones(()), atol=1e-5)
    assert bool((draws[..., 1, 1] == 0).all())          # probability-zero class never drawn
    # at a low temperature the draws are nearly one-hot with the categorical's frequencies
    hits = torch.nn.functional.one_hot(draws.argmax(-1), 3).float().mean(0)
    torch.testing.assert_close(hits, torch.softmax(logits, -1), atol=0.015, rtol=0)
    prior = GumbelSoftmax(0.1, torch.zeros(2, 3))
    expected = torch.distributions.kl_divergence(dist.Categorical(logits=logits),
                                                 dist.Categorical(logits=torch.zeros(2, 3)))
    torch.testing.assert_close(torch.distributions.kl_divergence(relaxed, prior), expected)
    # the Concrete density agrees with torch's RelaxedOneHotCategorical
    warm = GumbelSoftmax(0.7, logits[:1])
    values = warm.rsample((50,))
    reference = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.7),
                                                             logits=logits[:1])
    torch.testing.assert_close(warm.log_prob(values), reference.log_prob(values),
                               rtol=1e-4, atol=1e-4)


def test_score_baseline_state_is_saved_and_restored():
    model = CategoricalVAE(6, num_latents=2, num_classes=3, hidden=[8])
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    estimator = ScoreELBO(baseline="avg", decay=0.5)
    for _ in range(3):
        estimator.loss_and_grads(model.model, model.guide, x)
    state = estimator.state_dict()
    assert set(state["averages"]) == {"y0", "y1"}
    assert state["averages"]["y0"]["steps"] == 3
    restored = ScoreELBO(baseline="avg", decay=0.5)
    restored.load_state_dict(state)
    assert restored.averages == estimator.averages
    with pytest.raises(ValueError, match="belongs to score:baseline=avg"):
        ScoreELBO(baseline="nn").load_state_dict(state)


@pytest.mark.parametrize("spec", ["enum", "score:baseline=nn", "relaxed"])
def test_fit_resumes_bit_for_bit_with_every_discrete_estimator(spec, binary_digits):
    """The running averages and the temperature live in the estimator's state, so a fit
    interrupted and resumed ends where the uninterrupted fit does."""
    x = binary_digits.train[:96]

    def run(epochs, resume=None, states=None):
        pyro.set_rng_seed(0)
        model = GaussianMixtureVAE(64, 4, z_dim=2, hidden=[16])
        fit(model, x, estimator=spec, epochs=epochs, batch_size=32, quiet=True,
            resume=resume, checkpoint=None if states is None else states.append,
            monitor_size=16)
        return model

    states = []
    run(1, states=states)
    resumed = run(2, resume=states[-1])
    straight = run(2)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spec", ["enum", "score:baseline=avg", "relaxed"])
def test_discrete_models_are_device_clean_in_float64(spec, binary_digits):
    """Model and data in float64 while the default dtype stays float32: any tensor built
    from defaults would fail, as a CPU tensor meeting a CUDA one would."""
    x = binary_digits.train[:40].double()
    labels = torch.where(torch.arange(40) < 10, binary_digits.train_labels[:40], -1)
    for model, data in ((GaussianMixtureVAE(64, 3, z_dim=2, hidden=[8]), x),
                        (SemiSupervisedVAE(64, 10, z_dim=2, hidden=[8], num_labelled=10),
                         (x, labels)),
                        (CategoricalVAE(64, num_latents=2, num_classes=3, hidden=[8]), x)):
        model = model.double()
        fit(model, data, estimator=spec, epochs=1, batch_size=20, quiet=True, monitor_size=8)
        result = evaluate(model, x[:10], num_samples=8, elbo_particles=2)
        assert math.isfinite(result.log_likelihood) and math.isfinite(result.elbo)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", ["enum", "score:baseline=nn", "relaxed"])
def test_discrete_estimators_on_cuda(spec, binary_digits):
    x = binary_digits.train[:64]
    labels = torch.where(torch.arange(64) < 10, binary_digits.train_labels[:64], -1)
    model = SemiSupervisedVAE(64, 10, z_dim=2, hidden=[16], num_labelled=10)
    fit(model, (x, labels), estimator=spec, epochs=1, batch_size=32, quiet=True,
        device="cuda")
    result = evaluate(model, x.cuda(), num_samples=16,
                      labels=binary_digits.train_labels[:64].cuda())
    assert math.isfinite(result.log_likelihood) and result.accuracy is not None
