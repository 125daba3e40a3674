"""Crash-safe checkpoints and the non-finite guard: a write killed half-way, or a NaN during
training, never costs the last good checkpoint."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import pyro_vae as pv
import pyro_vae.checkpoints as checkpoints
from pyro_vae.io import stale_temporaries

SETTINGS = dict(epochs=4, batch_size=40, lr=3e-3, seed=3, beta_warmup_epochs=1,
                clip_norm=20.0, monitor_size=50, quiet=True)


def new_model(likelihood="bernoulli", init_seed=0):
    torch.manual_seed(init_seed)
    return pv.VAE(64, 3, hidden=(16,), likelihood=likelihood)


@pytest.fixture
def x(binary_digits):
    return binary_digits.train[:160]


@pytest.fixture
def saved_bytes(monkeypatch):
    """Record the checkpoint file's bytes after every save made by pyro_vae.fit."""
    record = []
    real = checkpoints.save_checkpoint

    def recording(state, location):
        path = real(state, location)
        record.append((state["epoch"], path.read_bytes()))
        return path

    monkeypatch.setattr(checkpoints, "save_checkpoint", recording)
    return record


# ---- a write interrupted half-way --------------------------------------------------------

def half_writing_save(real_save, interrupt, failing_call: int = 3):
    """A ``torch.save`` whose ``failing_call``-th call writes half the bytes, flushes them
    and calls ``interrupt()`` (which raises, or waits to be killed)."""
    calls = []

    def save(obj, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) < failing_call:
            return real_save(obj, handle, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        interrupt()

    save.calls = calls
    return save


def assert_resumes_exactly(run, x):
    """Resuming ``run`` ends bit-identical to the same fit done in one go."""
    reference = new_model()
    pv.fit(reference, x, **SETTINGS)
    resumed = new_model(init_seed=1)
    pv.fit(resumed, x, resume=run, **SETTINGS)
    for p, q in zip(resumed.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_write_interrupted_half_way_leaves_the_previous_checkpoint(tmp_path, x, monkeypatch):
    def stop():
        raise KeyboardInterrupt   # as if the process were stopped mid-write

    save = half_writing_save(torch.save, stop)
    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pv.fit(new_model(), x, checkpoint_dir=run, **SETTINGS)
    monkeypatch.undo()
    assert len(save.calls) == 3
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]   # temp file removed
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert_resumes_exactly(run, x)


CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    import pyro_vae as pv

    sys.path.insert(0, sys.argv[3])
    from test_checkpoints import half_writing_save

    def wait_for_the_kill():
        print("WRITING", flush=True)
        time.sleep(300)

    run, settings = sys.argv[1], json.loads(sys.argv[2])
    torch.save = half_writing_save(torch.save, wait_for_the_kill)
    x = pv.load_dataset("digits", binarize=True).train[:160]
    torch.manual_seed(0)
    model = pv.VAE(64, 3, hidden=(16,))
    pv.fit(model, x, checkpoint_dir=run, **settings)
""")


def test_a_process_killed_while_writing_leaves_a_loadable_checkpoint(tmp_path, x):
    """A real SIGKILL in the middle of the third checkpoint write."""
    run = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    tests = str(Path(__file__).parent)
    child = subprocess.Popen([sys.executable, str(script), str(run), json.dumps(SETTINGS),
                              tests], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, child.kill)
    watchdog.start()
    try:
        line = child.stdout.readline().strip()
        assert line == "WRITING", child.stderr.read()
        partial = stale_temporaries(run / "checkpoint.pt")
        assert len(partial) == 1 and partial[0].stat().st_size > 0
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        watchdog.cancel()
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert stale_temporaries(run / "checkpoint.pt") == partial   # the kill left it behind
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert_resumes_exactly(run, x)
    assert stale_temporaries(run / "checkpoint.pt") == []   # cleaned by the next write


# ---- the non-finite guard ----------------------------------------------------------------

def at_epoch(epoch, action):
    def callback(record):
        if record["epoch"] == epoch:
            action()
    return callback


def test_planted_nan_names_the_site_and_keeps_the_last_good_checkpoint(tmp_path, x,
                                                                       saved_bytes):
    model = new_model("normal")

    def plant():   # not a parameter: the epoch-2 state is finite and gets saved
        model.likelihood.sigma = float("nan")

    run = tmp_path / "run"
    with pytest.raises(pv.NonFiniteLossError, match=r"at epoch 3, step 1 \(global step 9\): "
                       r"a distribution was given NaN parameters; the log-probability of sample "
                       r"site 'x' in the model is non-finite.*nonfinite='skip'") as info:
        pv.fit(model, x, checkpoint_dir=run, callbacks=[at_epoch(2, plant)], **SETTINGS)
    assert (info.value.epoch, info.value.step, info.value.site) == (3, 1, "x")
    assert [epoch for epoch, _ in saved_bytes] == [1, 2]
    assert (run / "checkpoint.pt").read_bytes() == saved_bytes[-1][1]
    assert pv.load_checkpoint(run)["epoch"] == 2


def test_infinite_loss_names_the_site(x):
    model = new_model("normal")

    def plant():
        with torch.no_grad():
            model.decoder[-1].bias.fill_(float("inf"))

    with pytest.raises(pv.NonFiniteLossError, match=r"epoch 2, step 1 .*: the loss became "
                       r"(nan|inf); .*site 'x'.*non-finite parameters \['decoder.2.bias'\]"):
        pv.fit(model, x, callbacks=[at_epoch(1, plant)], checkpoint_every=5, **SETTINGS)


def test_non_finite_gradient_names_the_parameter(tmp_path, x, saved_bytes):
    model = new_model()

    def plant():
        model.decoder[0].weight.register_hook(lambda grad: grad * float("nan"))

    run = tmp_path / "run"
    with pytest.raises(pv.NonFiniteLossError, match=r"epoch 2, step 1 .*: the gradient of "
                       r"parameter\(s\) \['decoder.0.weight'\] became non-finite") as info:
        pv.fit(model, x, checkpoint_dir=run, callbacks=[at_epoch(1, plant)], **SETTINGS)
    assert info.value.parameters == ["decoder.0.weight"]
    assert torch.isfinite(model.decoder[0].weight).all()   # the bad step was not applied
    assert (run / "checkpoint.pt").read_bytes() == saved_bytes[-1][1]


def test_finite_gradients_whose_norm_overflows_are_named_as_such(tmp_path, x):
    """Every gradient element finite, their float32 total norm inf: the error says so and
    names the parameter with the largest gradient (not an empty list)."""
    model = new_model()
    model.decoder[0].weight.register_hook(lambda grad: torch.full_like(grad, 1e30))
    with pytest.raises(pv.NonFiniteLossError, match=r"every gradient element is finite but "
                       r"their total norm overflows float32 \(largest \|gradient\| 1e\+30, "
                       r"in decoder.0.weight\)") as info:
        pv.fit(model, x, **SETTINGS)
    assert info.value.parameters == ["decoder.0.weight"]


def test_a_non_finite_state_is_never_checkpointed(tmp_path, x, saved_bytes):
    model = new_model()

    def plant():
        with torch.no_grad():
            model.decoder[0].weight[0, 0] = float("nan")

    run = tmp_path / "run"
    with pytest.raises(pv.NonFiniteLossError, match=r"after epoch 2 .*model.decoder.0.weight"
                       r".*not checkpointed, the last good checkpoint stands"):
        pv.fit(model, x, checkpoint_dir=run, callbacks=[at_epoch(2, plant)], **SETTINGS)
    assert [epoch for epoch, _ in saved_bytes] == [1]
    assert pv.load_checkpoint(run)["epoch"] == 1

    state = pv.load_checkpoint(run)
    state["model"]["decoder.0.weight"][0, 0] = float("inf")
    with pytest.raises(pv.NonFiniteLossError, match="refusing to write"):
        pv.save_checkpoint(state, run / "checkpoint.pt")
    assert (run / "checkpoint.pt").read_bytes() == saved_bytes[-1][1]


class PoisonedSource:
    """Training batches number ``poisoned`` (1-based) come back with a NaN in them."""

    def __init__(self, x, poisoned, batch_size):
        self.x, self.poisoned, self.batch_size, self.count = x, set(poisoned), batch_size, 0

    def __len__(self):
        return len(self.x)

    def get(self, index):
        batch = self.x[index].clone()
        if len(index) == self.batch_size:
            self.count += 1
            if self.count in self.poisoned:
                batch[0, 0] = float("nan")
        return (batch,)

    def to(self, device):
        return self

    device = torch.device("cpu")

    def first(self):
        return self.x


def test_skip_policy_skips_and_counts_up_to_its_limit(x):
    poisoned = (2, 6)   # epoch 1 step 2, epoch 2 step 2
    with pytest.raises(pv.NonFiniteLossError, match=r"at epoch 1, step 2 .*: a distribution "
                       r"was given NaN parameters; batch tensor 0 holds non-finite data"):
        pv.fit(new_model(), PoisonedSource(x, poisoned, 40), **SETTINGS)

    model = new_model()
    result = pv.fit(model, PoisonedSource(x, poisoned, 40), nonfinite="skip", **SETTINGS)
    assert result.skipped_steps == 2
    assert result.column("skipped_steps") == [1, 1, 0, 0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(result.column("loss"))))

    with pytest.raises(pv.NonFiniteLossError, match=r"epoch 2, step 2 .*data.*, after 1 skipped "
                       r"steps \(max_skipped_steps=1\).*raise max_skipped_steps"):
        pv.fit(new_model(), PoisonedSource(x, poisoned, 40), nonfinite="skip",
               max_skipped_steps=1, **SETTINGS)
