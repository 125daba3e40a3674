"""fit's grouped options: the new spellings train exactly as the 0.1 keywords did, every 0.1
keyword warns and names its replacement, CheckpointFiles resumes bit for bit, and bad option
values are clear errors. The old module paths still import, with a warning."""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings

import pytest
import torch

import pyro_vae as pv
from pyro_vae import _moved
from pyro_vae.inference.fitting.options import DEPRECATED_KEYWORDS


@pytest.fixture(scope="module")
def x():
    return pv.load_dataset("digits", binarize=True).train[:160]


def small_vae(seed=0):
    torch.manual_seed(seed)
    return pv.VAE(64, 3, hidden=[32])


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_pyro_vae_fit_is_the_inference_fit():
    assert pv.fit is pv.inference.fit
    assert len(inspect.signature(pv.fit).parameters) <= 20


def test_new_spellings_train_exactly_like_the_old_keywords(x):
    seen_old, seen_new = [], []
    common = dict(epochs=3, batch_size=32, lr=3e-3, quiet=True)
    old = small_vae()
    with pytest.warns(DeprecationWarning) as caught:
        pv.fit(old, x, clip_norm=2.0, beta_warmup_epochs=1.5, monitor_size=50,
               callbacks=[seen_old.append], max_skipped_steps=3, nonfinite="skip",
               lr_schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), **common)
    named = " ".join(str(w.message) for w in caught)
    for keyword in ("clip_norm", "beta_warmup_epochs", "monitor_size", "callbacks",
                    "max_skipped_steps", "lr_schedule"):
        assert f"{keyword}=..." in named and DEPRECATED_KEYWORDS[keyword] in named
    new = small_vae()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        result = pv.fit(
            new, x, optimizer=pv.Optimization(
                "adam", clip_norm=2.0,
                lr_schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)),
            beta=pv.KLSchedule(1.0, warmup_epochs=1.5),
            monitor=pv.Monitoring(size=50, callbacks=[seen_new.append]),
            nonfinite=pv.NonFinitePolicy("skip", max_skipped_steps=3), **common)
    assert torch.equal(weights(old), weights(new))
    assert [r["loss"] for r in seen_old] == [r["loss"] for r in seen_new]
    assert [r["beta"] for r in seen_new][0] < 1.0 and result.settings["clip_norm"] == 2.0
    assert result.settings["max_skipped_steps"] == 3 and result.settings["monitor_size"] == 50


def test_checkpoint_files_resume_bit_for_bit(x, tmp_path):
    settings = dict(epochs=4, batch_size=32, lr=3e-3, quiet=True)
    whole = small_vae()
    pv.fit(whole, x, **settings)

    class Stop(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Stop

    first = small_vae()
    with pytest.raises(Stop):
        pv.fit(first, x, checkpoints=pv.CheckpointFiles(tmp_path / "run", every=1),
               monitor=pv.Monitoring(callbacks=[stop_after_two]), **settings)
    assert pv.load_checkpoint(tmp_path / "run")["epoch"] == 1
    resumed = small_vae(seed=99)   # other initial weights: the checkpoint's must win
    result = pv.fit(resumed, x, checkpoints=pv.CheckpointFiles(tmp_path / "run", resume=True),
                    monitor=pv.Monitoring(callbacks=[]), **settings)
    assert result.resumed_from_epoch == 1
    assert torch.equal(weights(whole), weights(resumed))
    # a fresh fit never replaces another run's checkpoint
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        pv.fit(small_vae(), x, checkpoints=pv.CheckpointFiles(tmp_path / "run"), **settings)


def test_a_checkpointing_hook_receives_states_that_resume(x):
    states = []
    model = small_vae()
    pv.fit(model, x, epochs=2, batch_size=32, quiet=True,
           checkpoints=pv.Checkpointing(save_state=states.append, every=1))
    assert [s["epoch"] for s in states] == [1, 2]
    again = small_vae()
    pv.fit(again, x, epochs=2, batch_size=32, quiet=True,
           checkpoints=pv.Checkpointing(resume=states[0]))
    assert torch.equal(weights(model), weights(again))


def test_checkpoint_files_resume_from_a_state_in_memory(x, tmp_path):
    states = []
    model = small_vae()
    pv.fit(model, x, epochs=2, batch_size=32, quiet=True,
           checkpoints=pv.Checkpointing(save_state=states.append))
    again = small_vae()
    pv.fit(again, x, epochs=2, batch_size=32, quiet=True,
           checkpoints=pv.CheckpointFiles(tmp_path / "run", resume=states[0]))
    assert torch.equal(weights(model), weights(again))
    assert pv.load_checkpoint(tmp_path / "run")["epoch"] == 2


@pytest.mark.parametrize("make, match", [
    (lambda: pv.Optimization("adamm"), "unknown optimizer 'adamm'.*expected one of"),
    (lambda: pv.Optimization(clip_norm=0), "clip_norm must be positive"),
    (lambda: pv.KLSchedule(-1.0), "beta must be a finite number >= 0; got -1.0"),
    (lambda: pv.KLSchedule(1.0, warmup_epochs=-2), "warm-up epochs must be >= 0"),
    (lambda: pv.NonFinitePolicy("ignore"), "nonfinite must be one of.*'ignore'"),
    (lambda: pv.NonFinitePolicy("skip", max_skipped_steps=-1), "max_skipped_steps"),
    (lambda: pv.Monitoring(size=0), "monitor size must be a positive integer; got 0"),
    (lambda: pv.Checkpointing(every=0), "checkpoint_every must be a positive integer"),
])
def test_bad_option_values_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unknown_keywords_and_mixed_spellings_are_refused(x, tmp_path):
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['lrr'\]"):
        pv.fit(small_vae(), x, epochs=1, lrr=0.1)
    with pytest.raises(TypeError, match="checkpoints must be a Checkpointing policy"):
        pv.fit(small_vae(), x, epochs=1, checkpoints=str(tmp_path))
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not both"):
        pv.fit(small_vae(), x, epochs=1, checkpoint_dir=tmp_path / "a",
               checkpoints=pv.CheckpointFiles(tmp_path / "b"))


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_module_paths_import_with_a_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to"):
        module = importlib.import_module(old)
    homes = [importlib.import_module(home) for home in _moved.MOVED[old]]
    public = [name for home in homes for name in getattr(home, "__all__", dir(home))
              if not name.startswith("_")]
    assert public and all(hasattr(module, name) for name in public)
    with pytest.raises(AttributeError, match="has no attribute"):
        module.no_such_name  # noqa: B018


def test_old_names_are_the_new_objects():
    sys.modules.pop("pyro_vae.inference.training", None)
    with pytest.warns(DeprecationWarning):
        from pyro_vae.inference.training import NonFiniteLossError, fit, resolve_device
    assert fit is pv.fit and NonFiniteLossError is pv.NonFiniteLossError
    assert resolve_device is pv.inference.resolve_device


def test_summary_table_at_its_old_path_is_the_new_one_with_a_warning():
    import pyro_vae.runs.directory as directory
    from pyro_vae.runs.summary import summary_table
    with pytest.warns(DeprecationWarning, match="moved to pyro_vae.runs.summary"):
        from pyro_vae.runs.directory import summary_table as old
    assert old is summary_table
    with pytest.raises(AttributeError, match="has no attribute"):
        directory.no_such_name  # noqa: B018
