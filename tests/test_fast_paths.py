"""The fast paths give the slow paths' numbers: the sync-free estimators against Pyro's own,
the compiled (jit=1) estimators against the eager ones, fit's step against a stock Pyro ELBO,
and the benchmarks' plain-PyTorch reference against pyro-vae."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

import pyro_vae as pv
from pyro_vae.inference import MinibatchRenyiELBO, make_estimator, parse_estimator
from pyro_vae.inference import fit as inference_fit

X = (torch.rand(48, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
NUM_DATA = 200   # scale 200/48 is not exact in float32: a strict test of the compiled graph


def stock(spec: str, vectorize: bool):
    """Pyro's own estimator for a spec (the slow path the sync-free one must match)."""
    parsed = parse_estimator(spec)
    k = parsed.options.get("k", 1)
    common = dict(num_particles=k, vectorize_particles=vectorize and k > 1, max_plate_nesting=1)
    if parsed.name == "elbo":
        return pyro.infer.Trace_ELBO(**common)
    if parsed.name == "meanfield":
        return pyro.infer.TraceMeanField_ELBO(**common)
    return MinibatchRenyiELBO(alpha=parsed.options.get("alpha", 0.0), **common)


def step(estimator, model, seed: int, method: str = "loss_and_grads"):
    """One loss_and_grads from a fixed random state: (loss as float, gradients)."""
    model.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    loss = getattr(estimator, method)(model.model, model.guide, X, num_data=NUM_DATA)
    return float(loss), [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_same(a, b):
    assert a[0] == b[0]
    for ga, gb in zip(a[1], b[1], strict=True):
        assert (ga is None and gb is None) or torch.equal(ga, gb)


def new_vae(guide="diagonal", seed=0):
    torch.manual_seed(seed)
    return pv.VAE(12, 3, prior="learned_normal", guide=guide, hidden=(8,), activation="tanh")


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("spec", ["elbo", "elbo:k=3", "meanfield", "iwae:k=3",
                                  "renyi:alpha=0.5,k=3"])
def test_sync_free_estimators_match_pyro_bit_for_bit(spec, vectorize):
    model = new_vae("flow")
    ours = make_estimator(spec, max_plate_nesting=1, vectorize_particles=vectorize)
    reference = step(stock(spec, vectorize), model, seed=1)
    assert_same(step(ours, model, seed=1, method="device_loss_and_grads"), reference)
    loss = ours.device_loss_and_grads(model.model, model.guide, X, num_data=NUM_DATA)
    assert loss.dtype == torch.float64 and loss.dim() == 0


class DiscreteLatent(PyroModule):
    """z_n ~ Bernoulli(sigmoid(a)), x_n ~ N(w z_n, 1); guide z_n ~ Bernoulli(sigmoid(u x_n + c)):
    a non-reparameterised guide site, so the ELBO gradient has score-function terms."""

    def __init__(self):
        super().__init__()
        self.a, self.w = nn.Parameter(torch.tensor(0.3)), nn.Parameter(torch.tensor(1.5))
        self.u, self.c = nn.Parameter(torch.tensor(0.7)), nn.Parameter(torch.tensor(-0.2))

    @pyro_method
    def model(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            z = pyro.sample("z", dist.Bernoulli(logits=self.a.expand(len(x))))
            pyro.sample("x", dist.Normal(self.w * z, 1.0), obs=x)

    @pyro_method
    def guide(self, x, num_data=None):
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            pyro.sample("z", dist.Bernoulli(logits=self.u * x + self.c))


def test_sync_free_trace_elbo_keeps_the_score_function_terms():
    model, x = DiscreteLatent(), torch.linspace(-2, 3, 10)
    results = []
    for estimator, method in ((pyro.infer.Trace_ELBO(num_particles=2), "loss_and_grads"),
                              (make_estimator("elbo:k=2", vectorize_particles=False),
                               "device_loss_and_grads")):
        model.zero_grad(set_to_none=True)
        pyro.set_rng_seed(4)
        loss = getattr(estimator, method)(model.model, model.guide, x, num_data=30)
        results.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    assert_same(results[0], results[1])
    assert results[0][1][2].abs() > 0   # the guide's u gets its score-function gradient


@pytest.mark.parametrize("spec, guide", [("elbo", "diagonal"), ("meanfield", "diagonal"),
                                         ("iwae:k=3", "diagonal"), ("elbo", "flow")])
def test_compiled_estimator_gives_the_eager_numbers(spec, guide):
    eager_model = new_vae(guide)
    compiled_model = copy.deepcopy(eager_model)
    eager = make_estimator(spec, max_plate_nesting=1)
    compiled = make_estimator(f"{spec}{',' if ':' in spec else ':'}jit=1", max_plate_nesting=1)
    assert compiled.jit and not eager.jit
    for seed in (1, 2, 3):   # the first call compiles, the others replay the graph
        assert_same(step(compiled, compiled_model, seed), step(eager, eager_model, seed))
    assert len(compiled._compiled) == 1


def test_compiling_consumes_no_random_numbers():
    model, estimator = new_vae(), make_estimator("elbo:jit=1", max_plate_nesting=1)
    pyro.set_rng_seed(5)
    estimator.loss_and_grads(model.model, model.guide, X, num_data=NUM_DATA)
    after_compiled = torch.rand(3)
    pyro.set_rng_seed(5)
    make_estimator("elbo", max_plate_nesting=1).loss_and_grads(model.model, model.guide, X,
                                                                num_data=NUM_DATA)
    assert torch.equal(torch.rand(3), after_compiled)


def test_jit_flag_in_specs():
    assert str(parse_estimator("elbo:jit=1")) == "elbo:k=1,jit=1"
    assert str(parse_estimator("iwae:k=5,jit=0")) == "iwae:k=5,jit=0"
    assert str(parse_estimator("iwae:k=5,jit=auto")) == "iwae:k=5"
    assert parse_estimator("iwae:k=5,jit=0").objective == "iwae:k=5"
    assert parse_estimator("iwae:k=5").options == {"k": 5}
    assert make_estimator("elbo").jit is None and make_estimator("elbo:jit=0").jit is False
    with pytest.raises(ValueError, match="jit in estimator spec 'elbo:jit=maybe' must be 1, "
                       "0 or auto"):
        parse_estimator("elbo:jit=maybe")


# ---- fit: the fast step against a stock Pyro ELBO, and the compiled estimator in fit --------

FIT = dict(epochs=2, batch_size=48, seed=2, quiet=True, monitor_size=40)


def fitted(estimator, **settings):
    model = new_vae()
    result = inference_fit(model, X.repeat(5, 1)[:NUM_DATA], estimator=estimator,
                           **{**FIT, **settings})
    return model, result


@pytest.mark.parametrize("spec", ["elbo", "meanfield", "iwae:k=3"])
def test_fit_fast_step_gives_the_stock_pyro_numbers(spec):
    settings = dict(beta_warmup_epochs=1, clip_norm=50.0)
    reference, reference_result = fitted(stock(spec, vectorize=True), **settings)
    for fast in (spec, f"{spec}{',' if ':' in spec else ':'}jit=1"):
        model, result = fitted(fast, **settings)
        for key, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (fast, key)
        assert result.column("loss") == reference_result.column("loss")
        assert result.column("elbo") == reference_result.column("elbo")


def test_fit_compiles_once_per_batch_shape_and_not_during_warm_up():
    model = new_vae()
    estimator = make_estimator("elbo:jit=1", max_plate_nesting=1)
    inference_fit(model, X.repeat(5, 1)[:NUM_DATA], estimator=estimator, beta_warmup_epochs=1,
                  **FIT)
    assert len(estimator._compiled) == 2   # batches of 48 and the last one of 8, beta = 1


def test_compiled_fit_resumes_bit_for_bit():
    data = X.repeat(5, 1)[:NUM_DATA]
    whole_model = new_vae()
    whole = inference_fit(whole_model, data, estimator="iwae:k=3,jit=1", **FIT)
    states = []
    first_model = new_vae()
    inference_fit(first_model, data, estimator="iwae:k=3,jit=1", checkpoint=states.append,
                  **{**FIT, "epochs": 1})
    resumed_model = new_vae(seed=9)
    resumed = inference_fit(resumed_model, data, estimator="iwae:k=3,jit=1", resume=states[-1],
                            **FIT)
    for key, value in whole_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    assert resumed.column("loss") == whole.column("loss")


def test_compiled_fit_keeps_the_non_finite_guard():
    model = new_vae()

    def plant(record):
        if record["epoch"] == 1:
            with torch.no_grad():
                model.decoder[-1].bias.fill_(float("inf"))

    with pytest.raises(pv.NonFiniteLossError, match=r"epoch 2, step 1 .*the loss became "
                       r"(nan|inf).*site 'x'"):
        inference_fit(model, X.repeat(5, 1)[:NUM_DATA], estimator="elbo:jit=1",
                      callbacks=[plant], **FIT)


# ---- the benchmarks' plain-PyTorch reference does the same work -----------------------------

def test_plain_reference_computes_the_pyro_vae_objective():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from plain_vae import PlainVAE
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    model = pv.VAE(12, 3, hidden=(8, 6), activation="tanh")
    plain = PlainVAE.from_vae(model, (8, 6), "tanh")
    for spec, name, k in (("elbo", "elbo", 1), ("meanfield", "meanfield", 1),
                          ("iwae:k=5", "iwae", 5), ("elbo:k=4", "elbo", 4)):
        estimator = make_estimator(spec, max_plate_nesting=1)
        pyro.set_rng_seed(3)
        ours = estimator.loss_and_grads(model.model, model.guide, X, num_data=NUM_DATA)
        pyro.set_rng_seed(3)
        theirs = plain.loss(X, name, k)
        assert ours / NUM_DATA == pytest.approx(theirs.item(), rel=1e-6), spec


def test_compiled_fit_in_float64_matches_eager():
    """The float64 proxy for device-cleanliness: a tensor the fast paths built from torch's
    defaults (float32) would meet the float64 model and fail, or change the numbers."""
    data = X.repeat(5, 1)[:NUM_DATA].double()
    fits = []
    for spec in ("iwae:k=3", "iwae:k=3,jit=1"):
        model = new_vae().double()
        result = inference_fit(model, data, estimator=spec, **FIT)
        fits.append((model, result))
    (eager, eager_result), (compiled, compiled_result) = fits
    assert all(p.dtype == torch.float64 for p in compiled.parameters())
    for key, value in eager.state_dict().items():
        assert torch.equal(compiled.state_dict()[key], value), key
    assert compiled_result.column("loss") == eager_result.column("loss")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_fit_on_cuda_matches_eager():
    data = X.repeat(5, 1)[:NUM_DATA]
    fits = []
    for spec in ("elbo", "elbo:jit=1"):
        model = new_vae()
        result = inference_fit(model, data, estimator=spec, device="cuda", **FIT)
        fits.append((model, result))
    (eager, eager_result), (compiled, compiled_result) = fits
    assert all(p.device.type == "cuda" for p in compiled.parameters())
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert compiled_result.column("loss") == pytest.approx(eager_result.column("loss"),
                                                           rel=1e-6)
