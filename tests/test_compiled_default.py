"""The compiled step is fit's default wherever the fit qualifies (``jit=auto``), with the eager
step's numbers bit for bit, and an eager step with its reason where it does not."""

from __future__ import annotations

import copy
import logging

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

import pyro_vae as pv
from pyro_vae.inference import make_estimator
from pyro_vae.inference.estimators.compiled import compilation_obstacle
from pyro_vae.models.registry import GUIDES, LIKELIHOODS, PRIORS

N, X_DIM = 60, 10
FIT = dict(epochs=2, batch_size=16, seed=3, quiet=True)   # batches of 16 and a last one of 12


def data_for(likelihood: str) -> torch.Tensor:
    x = torch.rand(N, X_DIM, generator=torch.Generator().manual_seed(0))
    if likelihood == "bernoulli":
        return (x > 0.5).float()
    if likelihood in ("poisson", "negative_binomial"):
        return (5 * x).round()
    if likelihood == "continuous_bernoulli":
        return x
    return 2 * x - 1


def build(prior="normal", likelihood="bernoulli", guide="diagonal", **options):
    torch.manual_seed(0)
    return pv.VAE(X_DIM, 2, prior=prior, likelihood=likelihood, guide=guide, hidden=(8,),
                  **options)


def fit_both(model, data, estimator="elbo", **settings):
    """The default fit and the jit=0 fit from the same initial weights."""
    eager_model = copy.deepcopy(model)
    auto = pv.fit(model, data, estimator=estimator, **{**FIT, **settings})
    spec = f"{estimator}{',' if ':' in estimator else ':'}jit=0"
    eager = pv.fit(eager_model, data, estimator=spec, **{**FIT, **settings})
    return (model, auto), (eager_model, eager)


def assert_bit_for_bit(auto_pair, eager_pair):
    (model, auto), (eager_model, eager) = auto_pair, eager_pair
    assert auto.settings["compiled"] and not eager.settings["compiled"]
    assert eager.settings["eager_reason"] == "jit=0"
    for key, value in eager_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    for column in ("loss", "elbo", "recon", "kl"):
        assert auto.column(column) == eager.column(column), column


COMPONENTS = ([("prior", name) for name in PRIORS] + [("likelihood", name) for name in LIKELIHOODS]
              + [("guide", name) for name in GUIDES])


@pytest.mark.parametrize("kind, name", COMPONENTS)
def test_every_component_compiles_by_default_with_the_eager_numbers(kind, name):
    model = build(**{kind: name})
    data = data_for(name if kind == "likelihood" else "bernoulli")
    assert_bit_for_bit(*fit_both(model, data))


@pytest.mark.parametrize("estimator, guide", [("meanfield", "diagonal"), ("iwae:k=3", "flow"),
                                              ("renyi:alpha=0.5,k=3", "full_rank"),
                                              ("elbo:k=2", "full_rank")])
def test_every_compilable_estimator_compiles_by_default(estimator, guide):
    model = build(guide=guide, prior="learned_normal")
    assert_bit_for_bit(*fit_both(model, data_for("bernoulli"), estimator))


def test_warm_up_validation_data_and_resume_compile_by_default():
    data = data_for("bernoulli")
    settings = dict(beta=pv.KLSchedule(2.0, warmup_epochs=1), validation_data=data[:20],
                    optimizer=pv.Optimization("adam", clip_norm=5.0))
    auto_pair, eager_pair = fit_both(build(), data, "iwae:k=2", **settings)
    assert_bit_for_bit(auto_pair, eager_pair)
    assert auto_pair[1].column("val_elbo") == eager_pair[1].column("val_elbo")
    # an eager run's state resumes compiled, and ends where the run done in one go ends
    states = []
    first = build()
    pv.fit(first, data, estimator="iwae:k=2,jit=0", **{**FIT, **settings, "epochs": 1},
           checkpoints=pv.Checkpointing(save_state=states.append))
    resumed_model = build(prior="normal")
    resumed = pv.fit(resumed_model, data, estimator="iwae:k=2", **FIT, **settings,
                     checkpoints=pv.Checkpointing(resume=states[-1]))
    assert resumed.settings["compiled"]
    for key, value in auto_pair[0].state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    assert resumed.column("loss") == auto_pair[1].column("loss")


def test_conditional_vae_and_autoencoder_compile_by_default():
    data = data_for("bernoulli")
    labels = torch.arange(N) % 3
    torch.manual_seed(0)
    conditional = pv.ConditionalVAE(X_DIM, 3, z_dim=2, hidden=(8,))
    assert_bit_for_bit(*fit_both(conditional, (data, labels)))
    torch.manual_seed(0)
    assert_bit_for_bit(*fit_both(pv.autoencoder(X_DIM, 2, hidden=(8,)), data))


def test_compile_time_is_reported():
    result = pv.fit(build(), data_for("bernoulli"), **FIT)
    assert result.settings["compile_seconds"] > 0
    eager = pv.fit(build(), data_for("bernoulli"), estimator="elbo:jit=0", **FIT)
    assert "compile_seconds" not in eager.settings


def test_a_changed_model_attribute_gets_its_own_graph():
    """A callback that changes the VAE's beta between epochs: the compiled step must not
    replay the graph recorded with the old beta."""
    def anneal(model):
        def callback(record):
            model.beta = 0.5 * record["epoch"]
        return callback

    auto_model, eager_model = build(beta=0.0), build(beta=0.0)
    data = data_for("bernoulli")
    auto = pv.fit(auto_model, data, monitor=pv.Monitoring(callbacks=[anneal(auto_model)]),
                  **{**FIT, "epochs": 3})
    eager = pv.fit(eager_model, data, estimator="elbo:jit=0",
                   monitor=pv.Monitoring(callbacks=[anneal(eager_model)]), **{**FIT, "epochs": 3})
    assert auto.column("loss") == eager.column("loss")


# ---- where the default steps eagerly, and says why ------------------------------------------

class UserModel(PyroModule):
    """A model of the user's own (defined outside the library)."""

    random_subsample = False

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, X_DIM)
        self.encoder = nn.Linear(X_DIM, 2)

    def plate(self, x, num_data):
        indices = None if self.random_subsample else torch.arange(len(x))
        return pyro.plate("data", num_data or len(x), subsample_size=len(x), subsample=indices)

    @pyro_method
    def model(self, x, num_data=None):
        with self.plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.net(z)).to_event(1), obs=x)

    @pyro_method
    def guide(self, x, num_data=None):
        with self.plate(x, num_data):
            pyro.sample("z", dist.Normal(self.encoder(x), 1.0).to_event(1))


class DeclaredUserModel(UserModel):
    static_structure = True


def test_a_user_model_steps_eagerly_unless_it_declares_a_static_structure(caplog):
    data = data_for("bernoulli")
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="pyro_vae"):
        result = pv.fit(UserModel(), data, **FIT)
    assert not result.settings["compiled"]
    reason = result.settings["eager_reason"]
    assert "UserModel" in reason and "static_structure = True" in reason
    assert any("eager steps" in r.message and "UserModel" in r.message for r in caplog.records)
    torch.manual_seed(0)
    declared, eager = DeclaredUserModel(), DeclaredUserModel()
    eager.load_state_dict(declared.state_dict())
    assert_bit_for_bit((declared, pv.fit(declared, data, **FIT)),
                       (eager, pv.fit(eager, data, estimator="elbo:jit=0", **FIT)))
    # jit=1: the author vouches for the structure
    assert pv.fit(UserModel(), data, estimator="elbo:jit=1", **FIT).settings["compiled"]


def test_a_plate_subsampled_at_random_is_never_compiled():
    model = DeclaredUserModel()
    model.random_subsample = True
    result = pv.fit(model, data_for("bernoulli"), **FIT)
    assert not result.settings["compiled"]
    assert "draws its subsample at random" in result.settings["eager_reason"]
    with pytest.raises(ValueError, match="jit=1 asks for a compiled step, but the plate 'data' "
                       "draws its subsample at random"):
        pv.fit(model, data_for("bernoulli"), estimator="elbo:jit=1", **FIT)


def test_a_library_model_holding_a_users_module_steps_eagerly():
    class MyEncoder(nn.Module):
        out_features = 8

        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(X_DIM, 8)

        def forward(self, x):
            return self.layer(x)

    model = pv.VAE(X_DIM, 2, hidden=(8,), encoder=MyEncoder())
    result = pv.fit(model, data_for("bernoulli"), **FIT)
    assert not result.settings["compiled"]
    assert "MyEncoder" in result.settings["eager_reason"]


def test_discrete_sites_and_other_estimators_step_eagerly():
    data = data_for("bernoulli")
    gmvae = pv.GaussianMixtureVAE(X_DIM, z_dim=2, num_components=3, hidden=(8,))
    batch = (data[:2],)
    reason = compilation_obstacle(make_estimator("elbo"), gmvae, batch, {})
    assert "not reparameterised" in reason and "'y'" in reason
    with pytest.raises(ValueError, match="jit=1 asks for a compiled step, but .*'y'"):
        compilation_obstacle(make_estimator("elbo:jit=1"), gmvae, batch, {})
    enum = make_estimator("enum", max_plate_nesting=1)
    assert "has no compiled form" in compilation_obstacle(enum, gmvae, batch, {})
    assert "has no compiled form" in compilation_obstacle(
        make_estimator("freebits:lambda=0.5"), build(), batch, {})
    result = pv.fit(gmvae, data, estimator="enum", **FIT)
    assert not result.settings["compiled"]


def test_a_distributed_fit_steps_eagerly_unless_asked():
    batch = (data_for("bernoulli")[:2],)
    assert "distributed" in compilation_obstacle(make_estimator("elbo"), build(), batch, {},
                                                 distributed=True)
    assert compilation_obstacle(make_estimator("elbo:jit=1"), build(), batch, {},
                                distributed=True) is None


def test_a_model_method_replaced_on_the_instance_steps_eagerly():
    model = build()
    calls = []
    original = model.model

    def recording(x, num_data=None):
        calls.append(len(x))
        return original(x, num_data=num_data)

    model.model = recording
    result = pv.fit(model, data_for("bernoulli"), **FIT)
    assert not result.settings["compiled"]
    assert "model.model is not a method of VAE" in result.settings["eager_reason"]
    assert calls.count(16) == 6   # every step ran the Python function (3 batches of 16 a pass)
