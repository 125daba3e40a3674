"""Exact resume: a fit interrupted and resumed ends bit-identical to the same fit run in one go."""

from __future__ import annotations

import random

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import pyro_vae as pv
from pyro_vae.inference import fit as inference_fit


class Interrupted(Exception):
    pass


def stop_at(epoch: int):
    """A callback that interrupts the fit at the end of ``epoch`` (before its checkpoint)."""
    def callback(record):
        if record["epoch"] == epoch and not record.get("partial_epoch"):
            raise Interrupted(epoch)
    return callback


class RandomlyBinarised:
    """Grey digits binarised afresh for every batch with NumPy's global RNG, and one pixel
    column (picked by Python's ``random``) blanked: training draws from every random state."""

    def __init__(self, grey: torch.Tensor):
        self.grey = grey

    def __len__(self):
        return len(self.grey)

    def get(self, index):
        x = self.grey[index]
        uniform = torch.from_numpy(np.random.rand(*x.shape)).to(x.dtype)
        binary = (uniform < x).to(x.dtype)
        binary[:, random.randrange(x.shape[1])] = 0.0
        return (binary,)

    def to(self, device):
        return RandomlyBinarised(self.grey.to(device))

    @property
    def device(self):
        return self.grey.device

    def first(self):
        return (self.grey > 0.5).to(self.grey.dtype)


@pytest.fixture(scope="module")
def grey_digits():
    return pv.load_dataset("digits").train[:192]


SETTINGS = dict(epochs=6, batch_size=40, lr=3e-3, beta_warmup_epochs=2, clip_norm=20.0,
                seed=3, quiet=True, monitor_size=50,
                lr_schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5))


def new_model(init_seed: int):
    torch.manual_seed(init_seed)
    return pv.VAE(64, 3, hidden=(16,), prior="mixture")


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def same_history(a, b, keys=("epoch", "step", "loss", "elbo", "kl", "beta", "lr",
                             "val_elbo")):
    return [[r.get(k) for k in keys] for r in a] == [[r.get(k) for k in keys] for r in b]


@pytest.mark.parametrize("estimator", ["elbo", "iwae:k=3"])
def test_interrupted_and_resumed_fit_is_bit_identical(grey_digits, estimator):
    source, validation = RandomlyBinarised(grey_digits), (grey_digits[:20] > 0.5).float()
    settings = dict(SETTINGS, estimator=estimator, validation_data=validation)
    reference = new_model(0)
    whole = inference_fit(reference, source, **settings)

    states = []
    interrupted = new_model(0)
    with pytest.raises(Interrupted):
        inference_fit(interrupted, source, checkpoint=states.append, callbacks=[stop_at(4)],
                      **settings)
    assert [s["epoch"] for s in states] == [1, 2, 3]
    assert not any(torch.equal(p, q) for p, q in zip(
        interrupted.parameters(), reference.parameters(), strict=True))

    resumed = new_model(1)   # other initial weights: everything must come from the state
    result = inference_fit(resumed, source, resume=states[-1], **settings)
    assert_same_parameters(resumed, reference)
    assert result.resumed_from_epoch == 3
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert same_history(result.history, whole.history)
    assert result.column("lr") == [3e-3, 3e-3, 1.5e-3, 1.5e-3, 7.5e-4, 7.5e-4]


def test_the_test_detects_a_missing_random_state(grey_digits):
    """Negative control: resuming without NumPy's random state diverges."""
    source = RandomlyBinarised(grey_digits)
    settings = dict(SETTINGS, epochs=3)
    reference = new_model(0)
    inference_fit(reference, source, **settings)
    states = []
    with pytest.raises(Interrupted):
        inference_fit(new_model(0), source, checkpoint=states.append, callbacks=[stop_at(2)],
                      **settings)
    state = states[-1]
    np.random.seed(12345)
    state["rng"] = dict(state["rng"], numpy=pv.inference.capture_rng_state()["numpy"])
    resumed = new_model(0)
    inference_fit(resumed, source, resume=state, **settings)
    assert not all(torch.equal(p, q) for p, q in zip(
        resumed.parameters(), reference.parameters(), strict=True))


def test_resume_from_run_directory(tmp_path, binary_digits):
    x = binary_digits.train[:160]
    settings = dict(SETTINGS, epochs=5, estimator="meanfield")
    reference = new_model(0)
    pv.fit(reference, x, **settings)

    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        pv.fit(new_model(0), x, checkpoint_dir=run, checkpoint_every=2,
               callbacks=[stop_at(3)], **settings)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2 * 4
    assert {"model", "optimizer", "schedules", "rng", "data_order", "history"} <= set(state)
    assert set(state["schedules"]) == {"beta", "lr"}
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}

    resumed = new_model(1)
    result = pv.fit(resumed, x, checkpoint_dir=run, checkpoint_every=2, resume=run, **settings)
    assert_same_parameters(resumed, reference)
    assert len(result.history) == 5
    final = pv.load_checkpoint(run)
    assert final["epoch"] == 5
    assert_same_parameters(pv.load_model(run / "checkpoint.pt"), reference)


def test_a_finished_run_continues_as_if_it_had_been_longer(binary_digits):
    x = binary_digits.train[:160]
    reference = new_model(0)
    pv.fit(reference, x, **dict(SETTINGS, epochs=4))
    states = []
    pv.fit(new_model(0), x, checkpoint=states.append, checkpoint_every=100,
           **dict(SETTINGS, epochs=2))
    assert [s["epoch"] for s in states] == [2]   # only at the end
    longer = new_model(0)
    pv.fit(longer, x, resume=states[0], **dict(SETTINGS, epochs=4))
    assert_same_parameters(longer, reference)


def test_resume_inside_an_epoch_cut_short_by_the_time_budget(binary_digits):
    """A budget so small that the fit stops after its first step: the final state sits
    inside epoch 1 and resuming finishes that epoch exactly."""
    x = binary_digits.train[:160]
    settings = dict(SETTINGS, epochs=3)
    reference = new_model(0)
    pv.fit(reference, x, **settings)
    states = []
    cut = pv.fit(new_model(0), x, checkpoint=states.append, max_seconds=1e-9, **settings)
    assert cut.history[-1]["partial_epoch"] and cut.history[-1]["step"] == 1
    assert states[-1]["epoch_progress"]["batch"] == 1 and states[-1]["epoch"] == 0
    resumed = new_model(1)
    result = pv.fit(resumed, x, resume=states[-1], **settings)
    assert_same_parameters(resumed, reference)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert not any(r.get("partial_epoch") for r in result.history)


class AnnealedELBO(pyro.infer.Trace_ELBO):
    """An estimator with its own schedule: the objective's weight decays with every step,
    as a temperature would; its position is state that a checkpoint must carry."""

    def __init__(self):
        super().__init__(max_plate_nesting=1)
        self.calls = 0

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.calls += 1
        with poutine.scale(scale=1.0 / (1.0 + 0.5 * self.calls)):
            return super().loss_and_grads(model, guide, *args, **kwargs)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_objects_with_state_dict_are_checkpointed_as_schedules(binary_digits):
    x = binary_digits.train[:160]
    settings = dict(SETTINGS, epochs=4, lr_schedule=None)
    reference = new_model(0)
    pv.fit(reference, x, estimator=AnnealedELBO(), **settings)
    states = []
    with pytest.raises(Interrupted):
        pv.fit(new_model(0), x, estimator=AnnealedELBO(), checkpoint=states.append,
               callbacks=[stop_at(3)], **settings)
    assert states[-1]["schedules"]["estimator"] == {"calls": 2 * 4}

    resumed = new_model(0)
    pv.fit(resumed, x, estimator=AnnealedELBO(), resume=states[-1], **settings)
    assert_same_parameters(resumed, reference)

    forgetful = dict(states[-1], schedules=dict(states[-1]["schedules"],
                                                estimator={"calls": 0}))
    restarted = new_model(0)
    pv.fit(restarted, x, estimator=AnnealedELBO(), resume=forgetful, **settings)
    assert not torch.equal(restarted.decoder[0].weight, reference.decoder[0].weight)

    with pytest.raises(pv.ResumeError, match="estimator: checkpoint 'AnnealedELBO', this fit"):
        pv.fit(new_model(0), x, resume=states[-1], **dict(settings, estimator="elbo"))
    with pytest.raises(pv.ResumeError, match=r"schedule states \['beta', 'estimator'\] but "
                                             r"this fit has .*'temperature'.*pass the same"):
        pv.fit(new_model(0), x, estimator=AnnealedELBO(), resume=states[-1],
               schedules={"temperature": AnnealedELBO()}, **settings)


def test_fresh_fit_refuses_to_overwrite_a_checkpoint(tmp_path, binary_digits):
    x = binary_digits.train[:80]
    pv.fit(new_model(0), x, checkpoint_dir=tmp_path, **dict(SETTINGS, epochs=1))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a checkpoint.*resume="):
        pv.fit(new_model(0), x, checkpoint_dir=tmp_path, **dict(SETTINGS, epochs=1))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_restores_the_cuda_random_state(binary_digits):
    x = binary_digits.train[:160].cuda()
    settings = dict(SETTINGS, epochs=3, device="cuda")
    reference = new_model(0)
    pv.fit(reference, x, **settings)
    states = []
    with pytest.raises(Interrupted):
        pv.fit(new_model(0), x, checkpoint=states.append, callbacks=[stop_at(2)], **settings)
    assert len(states[-1]["rng"]["cuda"]) == torch.cuda.device_count()
    resumed = new_model(1)
    pv.fit(resumed, x, resume=states[-1], **settings)
    for p, q in zip(resumed.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)   # CUDA kernels need not be bit-reproducible


def test_a_dynamically_binarised_fit_resumes_on_its_grey_levels(tmp_path):
    """The data check of a resumed fit looks at the grey levels, not at a fresh draw (a draw
    differs with the random state, and the resume was refused)."""
    grey = pv.load_dataset("digits").train[:96]
    source = pv.data.DynamicBinarization(grey)

    def run(epochs, **checkpoint_options):
        torch.manual_seed(0)
        model = pv.VAE(64, 2, hidden=(8,))
        result = pv.fit(model, source, epochs=epochs, batch_size=32, quiet=True,
                        checkpoints=pv.CheckpointFiles(tmp_path / "run", **checkpoint_options))
        return model, result

    run(1)
    resumed_model, resumed = run(3, resume=True)
    (tmp_path / "run" / "checkpoint.pt").unlink()
    whole_model, whole = run(3)
    assert resumed.column("loss") == whole.column("loss")
    for key, value in whole_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    other = pv.data.DynamicBinarization(grey.flip(0))
    with pytest.raises(pv.CheckpointError, match="training data differ"):
        pv.fit(pv.VAE(64, 2, hidden=(8,)), other, epochs=4, batch_size=32, quiet=True,
               checkpoints=pv.CheckpointFiles(tmp_path / "run", resume=True))
