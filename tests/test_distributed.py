"""Data-parallel training: two gloo processes under torchrun on the CPU.

One torchrun launch (tests/distributed_worker.py) runs every scenario on both ranks; the
tests compare the ranks with each other and with single-process fits built by the same
functions. With the particle noise carried by the data (so a datapoint gets the same noise
on whichever rank it lands), the combined gradient of two ranks on their shards must equal
the single-process gradient on the whole batch, to rounding, for every estimator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import distributed_worker as worker
import pytest
import torch
import torch.distributed as dist

import pyro_vae as pv
from pyro_vae.inference import fit as inference_fit

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Both ranks' results (rank 0's, rank 1's) and the output folder."""
    out = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(WORKER), str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in results] == [2, 2]
    assert [r["backend"] for r in results] == ["gloo", "gloo"]
    return results[0], results[1], out


def assert_all_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", list(worker.EQUIVALENCE_CASES))
def test_combined_gradient_of_two_ranks_is_the_whole_batch_gradient(ranks, name):
    """Global batches of 8 and 5 points: shards 4 + 4 and 3 + 2 (uneven, so equal-weight
    averaging would fail), two epochs of SGD, float64."""
    rank0, rank1 = ranks[0]["equivalence"][name], ranks[1]["equivalence"][name]
    single = worker.run_equivalence_case(name, distributed=False)
    assert len(single["gradients"]) == len(rank0["gradients"]) == 4
    for step, (g0, g1, expected) in enumerate(zip(rank0["gradients"], rank1["gradients"],
                                                  single["gradients"], strict=True)):
        assert_all_equal(g0, g1)   # every rank applies the same gradient
        for got, want in zip(g0, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12,
                                       msg=lambda m, s=step: f"step {s}: {m}")
    # the reported per-datapoint loss is the single process's
    for got, want in zip(rank0["history"], single["history"], strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-10)


def test_the_gradient_comparison_can_fail():
    """Negative control: with different noise for the same points the gradients differ far
    beyond the tolerance above, so the equality is not an artefact of the test."""
    x, noise = worker.equivalence_data(3)
    grads = []
    for particles in (noise, noise.flip(0)):
        torch.manual_seed(0)
        model = worker.FixedNoiseLinearVAE()
        elbo = pv.make_estimator("iwae:k=3")
        elbo.loss_and_grads(model.model, model.guide, x, particles, num_data=len(x))
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert not torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-8)


def test_parameters_are_identical_on_both_ranks_after_every_step(ranks):
    rank0, rank1 = ranks[0]["training"], ranks[1]["training"]
    steps = 4 * -(-len(worker.digits()) // 64)
    assert len(rank0["parameters_after"]) == steps
    assert_all_equal(rank0["parameters_after"], rank1["parameters_after"])
    # rank 1 built other initial weights; rank 0's were broadcast: after one Adam step of
    # lr 3e-3 every weight is within 3e-3 of rank 0's initial weights
    assert (rank1["parameters_after"][0] - rank0["initial"]).abs().max() <= 3.01e-3
    assert rank0["settings"]["world_size"] == 2


def test_loss_decreases_and_records_agree(ranks):
    rank0, rank1 = ranks[0]["training"], ranks[1]["training"]
    losses = [record["loss"] for record in rank0["history"]]
    assert losses[-1] < losses[0] - 2.0, losses
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert rank0["history"][-1]["elbo"] > rank0["history"][0]["elbo"]
    keys = ("epoch", "step", "loss", "beta", "lr", "skipped_steps")
    assert [[r[k] for k in keys] for r in rank0["history"]] == [
        [r[k] for k in keys] for r in rank1["history"]]
    # the monitor metrics are reduced over the ranks: the same numbers on both
    for a, b in zip(rank0["history"], rank1["history"], strict=True):
        assert a["elbo"] == pytest.approx(b["elbo"], rel=1e-12)


def test_rank_zero_writes_a_checkpoint_with_every_ranks_random_state(ranks):
    out = ranks[2]
    state = pv.load_checkpoint(out / "training")
    assert state["epoch"] == 4 and state["settings"]["world_size"] == 2
    assert len(state["rng_by_rank"]) == 2
    assert not torch.equal(state["rng_by_rank"][0]["torch"], state["rng_by_rank"][1]["torch"])
    final = ranks[0]["training"]["parameters_after"][-1]
    model = worker.small_vae()
    model.load_state_dict(state["model"])
    assert torch.equal(worker.flat_parameters(model), final)
    assert sorted(p.name for p in (out / "training").iterdir()) == ["checkpoint.pt"]


def test_distributed_resume_is_bit_identical(ranks):
    for results in ranks[:2]:
        resume = results["resume"]
        assert resume["resumed_from_epoch"] == 2 and resume["epochs"] == [1, 2, 3, 4]
        assert torch.equal(resume["resumed"], resume["whole"])
    assert torch.equal(ranks[0]["resume"]["whole"], ranks[1]["resume"]["whole"])


def test_a_two_process_checkpoint_resumes_in_one_process(ranks):
    state = pv.load_checkpoint(ranks[2] / "resume_epoch2.pt")
    assert state["epoch"] == 2 and len(state["rng_by_rank"]) == 2
    source = worker.RandomlyBinarised(worker.grey_digits())
    with pytest.warns(UserWarning, match="resuming a run of 2 process"):
        result = pv.fit(worker.small_vae(), source, resume=state, **worker.RESUME_SETTINGS)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_a_non_finite_step_is_skipped_or_raised_by_every_rank_together(ranks):
    skip0, skip1 = ranks[0]["nonfinite"]["skip"], ranks[1]["nonfinite"]["skip"]
    assert skip0["skipped_steps"] == skip1["skipped_steps"] == 1
    assert len(skip0["parameters_after"]) == 200 // 50 - 1
    assert_all_equal(skip0["parameters_after"], skip1["parameters_after"])
    raise0, raise1 = ranks[0]["nonfinite"]["raise"], ranks[1]["nonfinite"]["raise"]
    assert raise0["error"] is not None and raise0["error"] == raise1["error"]
    assert "batch tensor 0 holds non-finite data" in raise0["error"]
    assert "(on rank " in raise0["error"]


def test_ranks_with_different_settings_get_a_clear_error(ranks):
    errors = [r["disagreement"]["error"] for r in ranks[:2]]
    assert errors[0] == errors[1] and "ranks disagree" in errors[0]
    assert "batch_size: rank 0 32, rank 1 64" in errors[0]


def test_a_time_budget_stops_every_rank_at_the_same_step(ranks):
    a, b = ranks[0]["time_budget"], ranks[1]["time_budget"]
    assert a["steps"] == b["steps"] and a["epochs"] == b["epochs"] < 50
    assert torch.equal(a["parameters"], b["parameters"])


def test_unseeded_ranks_draw_different_particles(ranks):
    assert not torch.equal(ranks[0]["unseeded"]["rng"], ranks[1]["unseeded"]["rng"])


def test_a_file_error_on_rank_zero_is_raised_on_every_rank(ranks):
    errors = [r["refused_overwrite"]["error"] for r in ranks[:2]]
    assert errors[0] == errors[1] and errors[0].startswith("FileExistsError: ")
    assert "already holds a checkpoint of another run" in errors[0]


def test_the_command_line_trains_resumes_and_only_rank_zero_writes(ranks):
    """``torchrun -m pyro_vae train --distributed``, then ``--resume``: one history row per
    epoch (not one per rank), a complete run directory, and the model is the checkpoint's."""
    for rank in ranks[:2]:
        assert rank["entry_point"] == {"code": 0, "resumed": 0}
    run = ranks[2] / "entry_point"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt", "config.toml", "figures", "history.csv", "metrics.json", "model.pt"]
    history = pv.open_run(run).history()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["status"] == "complete" and metrics["run"]["processes"] == 2
    assert metrics["training"]["world_size"] == 2 and metrics["training"]["epoch"] == 3
    model = pv.load_model(run / "model.pt")
    assert torch.equal(worker.flat_parameters(model), worker.flat_parameters(
        pv.load_model(run / "checkpoint.pt")))


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_one_distributed_process_repeats_a_plain_fit_bit_for_bit(one_process_group):
    x = worker.digits(300)
    settings = dict(epochs=2, batch_size=64, estimator="iwae:k=2", seed=2, quiet=True,
                    monitor_size=100, validation_data=x[:50])
    plain, parallel = worker.small_vae(), worker.small_vae()
    expected = inference_fit(plain, x, **settings)
    result = inference_fit(parallel, x, distributed=True, **settings)
    assert torch.equal(worker.flat_parameters(plain), worker.flat_parameters(parallel))
    for got, want in zip(result.history, expected.history, strict=True):
        assert got["loss"] == want["loss"]
        for key in ("elbo", "recon", "kl", "val_elbo"):
            assert got[key] == pytest.approx(want[key], rel=1e-6)


def test_distributed_without_a_process_group_says_how_to_launch(monkeypatch):
    for name in pv.distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    x = worker.digits(20)
    with pytest.raises(RuntimeError, match="torchrun"):
        inference_fit(worker.small_vae(), x, epochs=1, quiet=True, distributed=True)
    with pytest.raises(RuntimeError, match=r"not set\. Launch every process with torchrun"):
        pv.fit(worker.small_vae(), x, epochs=1, quiet=True, distributed=True)
    with pytest.raises(TypeError, match="distributed must be True or False"):
        pv.fit(worker.small_vae(), x, epochs=1, quiet=True, distributed="yes")


def test_rank_zero_helpers_without_a_process_group():
    calls = []
    assert pv.distributed.rank_zero_only(calls.append)(1) is None and calls == [1]
    assert pv.distributed.on_rank_zero(lambda a, b: a + b, 2, 3) == 5
    assert pv.distributed.get_rank() == 0 and pv.distributed.get_world_size() == 1
