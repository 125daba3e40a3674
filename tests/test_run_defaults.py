"""The defaults of a train run that decide its cost outside training: the automatic K of the
test evaluation, and the thread count."""

from __future__ import annotations

import torch

import pyro_vae as pv
from pyro_vae.runs import train_run
from pyro_vae.runs.directory import EVALUATION_WORK, auto_eval_samples


def test_the_automatic_k_is_5000_on_small_problems_and_bounded_by_the_work():
    digits_model = pv.VAE(64, 8, hidden=(256,))
    assert auto_eval_samples(digits_model, 359) == 5000
    mnist_model = pv.VAE(784, 50, hidden=(400,))
    parameters = sum(p.numel() for p in mnist_model.parameters())
    k = auto_eval_samples(mnist_model, 10000)
    assert k * 10000 * parameters <= EVALUATION_WORK < (k + 1) * 10000 * parameters
    assert 10 <= k < 5000
    assert auto_eval_samples(pv.VAE(784, 50, hidden=(4000, 4000)), 10 ** 6) == 10   # the floor


def test_a_train_run_evaluates_with_the_automatic_k_and_states_it(tmp_path):
    config = {"epochs": 1, "hidden": [16], "figures": False, "device": "cpu"}
    run = train_run(config, tmp_path / "auto", quiet=True)
    assert run.config["eval_samples"] == 0
    assert run.metrics["test"]["num_samples"] == 5000       # digits: small enough for 5000
    assert "log p(x), K=5000" in pv.runs.summary_table(run)
    explicit = train_run({**config, "eval_samples": 30}, tmp_path / "explicit", quiet=True)
    assert explicit.metrics["test"]["num_samples"] == 30


def test_threads_option_sets_torchs_thread_count(tmp_path):
    before = torch.get_num_threads()
    try:
        train_run({"epochs": 1, "hidden": [16], "figures": False, "eval_samples": 5,
                   "threads": 1}, tmp_path / "run", quiet=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
