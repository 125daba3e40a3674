"""compare(): one model, one budget, several estimators and seeds, identical starts."""

import math

import pytest
import torch

import pyro_vae as pv
import pyro_vae.inference.comparison as compare_module
from pyro_vae.inference import ESTIMATORS, compare, make_estimator, register_estimator
from pyro_vae.inference.comparison import METRICS, state_digest

TINY = {"z_dim": 2, "hidden": [16]}
CHEAP = {"eval_samples": 20, "elbo_particles": 2, "khat_samples": 50, "khat_points": 20,
         "batch_size": 128}


def test_compare_runs_end_to_end_on_digits(binary_digits):
    d = binary_digits
    result = compare(TINY, d.train[:256], d.test[:100], ["elbo", "meanfield", "iwae:k=5"],
                     epochs=1, validation_data=d.validation[:100], **CHEAP)
    assert result.seeds == [0, 1, 2]                      # three seeds by default
    assert result.estimators == ["elbo", "meanfield", "iwae:k=5"]
    assert len(result.runs) == 9
    summary = result.summary()
    assert [row["estimator"] for row in summary] == result.estimators
    for row in summary:
        assert row["seeds"] == 3
        for metric in ("log_likelihood", "elbo", "kl", "seconds_per_epoch", "epochs"):
            assert math.isfinite(row[f"{metric}_mean"]) and row[f"{metric}_std"] >= 0, metric
        assert row["elbo_mean"] <= row["log_likelihood_mean"] + 0.5
        assert row["epochs_mean"] == 1.0
    for run in result.runs:
        assert set(METRICS) <= set(run.metrics)
        assert run.evaluation["num_samples"] == 20 and run.evaluation["num_datapoints"] == 100
        assert len(run.khat) == 20
        assert run.memory["measure"] != ""
        assert run.model is None                          # not kept unless asked
    curves = result.curves()
    assert len(curves) == 9 and {"val_elbo", "wall_seconds", "epochs_done"} <= set(curves[0])
    # the same seed gives the same start for every estimator; different seeds differ
    for seed in result.seeds:
        assert len({run.initial_digest for run in result.runs if run.seed == seed}) == 1
    assert len({run.initial_digest for run in result.runs}) == 3
    assert result.run("elbo:k=1", 2).estimator == "elbo"  # equivalent specs find the run


def test_every_estimator_sees_identical_initial_parameters_and_batches(monkeypatch,
                                                                      binary_digits):
    """Spy on fit: the parameters it receives and the first minibatches it draws."""
    seen = []
    real_fit = compare_module.fit

    def spying_fit(model, data, **kwargs):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        batches = []
        original = model.model

        def recording_model(x, num_data=None):
            if model.training and len(batches) < 5:
                batches.append(x.clone())
            return original(x, num_data=num_data)

        model.model = recording_model
        result = real_fit(model, data, **kwargs)
        del model.model
        seen.append((kwargs["estimator"], kwargs["seed"], state, batches))
        return result

    monkeypatch.setattr(compare_module, "fit", spying_fit)
    # a factory that ignores its seed: compare seeds the global RNG before building
    result = compare(lambda seed: pv.VAE(64, 2, hidden=(8,)), binary_digits.train[:320],
                     binary_digits.test[:20], ["elbo", "iwae:k=3", "renyi:alpha=0.5,k=3"],
                     seeds=[5, 6], epochs=1, **{**CHEAP, "batch_size": 64})
    assert len(seen) == 6 and len(result.runs) == 6
    for seed in (5, 6):
        runs = [(state, batches) for _, s, state, batches in seen if s == seed]
        reference_state, reference_batches = runs[0]
        for state, batches in runs[1:]:
            assert state.keys() == reference_state.keys()
            for key in state:
                assert torch.equal(state[key], reference_state[key]), key
            assert len(batches) == len(reference_batches) == 5
            for batch, reference in zip(batches, reference_batches, strict=True):
                assert torch.equal(batch, reference)
    first = {s: state for _, s, state, _ in seen}
    assert any(not torch.equal(first[5][k], first[6][k]) for k in first[5])


def test_wall_clock_budget_and_kept_models(binary_digits):
    result = compare(TINY, binary_digits.train, binary_digits.test[:30], ["elbo", "iwae:k=5"],
                     seeds=[0], max_seconds=0.3, keep_models=True,
                     **{**CHEAP, "batch_size": 16, "khat_samples": None})
    for run in result.runs:
        assert run.train_seconds < 0.3 + 5.0
        assert run.metrics["epochs"] > 0 and run.metrics["khat_above_0.7"] is None
        assert run.khat is None
        assert state_digest(run.model) != run.initial_digest    # it was trained
    assert result.settings["max_seconds"] == 0.3 and result.settings["epochs"] is None


def test_compare_accepts_any_registered_estimator(monkeypatch, binary_digits):
    monkeypatch.setitem(ESTIMATORS, "toy", None)   # so that it is removed after the test
    register_estimator("toy", lambda k, vectorize_particles, max_plate_nesting:
                       make_estimator("elbo"), {"k": (int, 1)}, "a registered test estimator")
    result = compare(TINY, binary_digits.train[:256], binary_digits.test[:20], ["toy", "elbo"],
                     seeds=[0], epochs=1, **CHEAP)
    assert result.estimators == ["toy", "elbo"]


def test_compare_checks_everything_before_training(monkeypatch, binary_digits):
    def no_fit(*args, **kwargs):
        raise AssertionError("fit must not run when the arguments are wrong")

    monkeypatch.setattr(compare_module, "fit", no_fit)
    d = binary_digits
    with pytest.raises(ValueError, match="unknown estimator 'iwea'"):
        compare(TINY, d.train, d.test, ["elbo", "iwea:k=5"], epochs=1)
    with pytest.raises(ValueError, match="same estimator more than once"):
        compare(TINY, d.train, d.test, ["iwae", "iwae:k=5"], epochs=1)
    with pytest.raises(ValueError, match="give a budget"):
        compare(TINY, d.train, d.test, ["elbo"])
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        compare(TINY, d.train, d.test, ["elbo"], epochs=0)
    with pytest.raises(TypeError, match="factory"):
        compare(pv.VAE(64, 2), d.train, d.test, ["elbo"], epochs=1)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        compare(TINY, d.train, d.test, ["elbo"], seeds=[1, 1], epochs=1)
    with pytest.raises(ValueError, match="fit_options may not set"):
        compare(TINY, d.train, d.test, ["elbo"], epochs=1, fit_options={"seed": 3})
    with pytest.raises(ValueError, match="non-empty list"):
        compare(TINY, d.train, d.test, "elbo", epochs=1)


class DynamicBinarized:
    """A batch source drawing x ~ Bernoulli(grey) afresh on every get."""

    def __init__(self, grey):
        self.grey = grey

    def __len__(self):
        return len(self.grey)

    def get(self, index):
        return (torch.bernoulli(self.grey[index]),)

    def to(self, device):
        return DynamicBinarized(self.grey.to(device))

    @property
    def device(self):
        return self.grey.device


def test_a_dynamic_test_source_is_drawn_once_for_every_run(monkeypatch):
    grey = pv.load_dataset("digits").train[:200]
    judged = []
    real_evaluate = compare_module.evaluate

    def spying_evaluate(model, data, **kwargs):
        judged.append(data.get(torch.arange(len(data)))[0].clone())
        return real_evaluate(model, data, **kwargs)

    monkeypatch.setattr(compare_module, "evaluate", spying_evaluate)
    compare(TINY, DynamicBinarized(grey[:100]), DynamicBinarized(grey[100:]),
            ["elbo", "iwae:k=2"], seeds=[0, 1], epochs=1,
            **{**CHEAP, "khat_samples": None, "batch_size": 50})
    assert len(judged) == 4
    assert all(torch.equal(x, judged[0]) for x in judged[1:])
    assert set(judged[0].unique().tolist()) == {0.0, 1.0}
