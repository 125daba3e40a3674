"""Scenarios for tests/test_distributed.py, run by every rank under torchrun:

    torchrun --standalone --nproc_per_node=2 tests/distributed_worker.py OUT

Each rank saves what it saw to ``OUT/rank{r}.pt``; the test compares the ranks with each
other and with single-process fits built by the same functions (imported from here).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from test_resume import RandomlyBinarised  # draws from the NumPy and Python random states
from torch import nn

import pyro_vae as pv
from pyro_vae.inference import fit as inference_fit
from pyro_vae.models import data_plate

# ---- fixed particle noise -----------------------------------------------------------------


class FixedNoiseNormal(dist.Normal):
    """A Normal whose draws are loc + scale * noise for a noise tensor carried with the
    data, so a datapoint gets the same particle noise on whichever rank it lands."""

    def __init__(self, loc, scale, noise, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        self.noise = noise

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return type(self)(self.loc.expand(shape), self.scale.expand(shape), self.noise)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        noise = self.noise
        while noise.dim() > len(shape):   # without a particle plate: the first particle
            noise = noise[0]
        return self.loc.expand(shape) + self.scale.expand(shape) * noise.expand(shape)

    def sample(self, sample_shape=()):
        with torch.no_grad():
            return self.rsample(sample_shape)


class FixedNoiseNormalScoreFunction(FixedNoiseNormal):
    """The same draws, declared not reparameterisable: TraceGraph_ELBO then uses the
    score-function gradient for it."""

    has_rsample = False


class FixedNoiseLinearVAE(PyroModule):
    """z ~ N(0, I), x ~ N(W z + b, I); q(z|x) = N(A x + c, diag(exp(D x + e))^2). In
    training mode the guide draws its particles from the noise column of the batch."""

    def __init__(self, x_dim: int = 4, z_dim: int = 2, reparameterized: bool = True):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Linear(x_dim, 2 * z_dim).double()
        self.decoder = nn.Linear(z_dim, x_dim).double()
        self.family = FixedNoiseNormal if reparameterized else FixedNoiseNormalScoreFunction

    @pyro_method
    def model(self, x, noise, num_data=None):
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    @pyro_method
    def guide(self, x, noise, num_data=None):
        loc, log_scale = self.encoder(x).chunk(2, -1)
        with data_plate(x, num_data):
            if self.training:
                q = self.family(loc, log_scale.exp(), noise.transpose(0, 1))
            else:
                q = dist.Normal(loc, log_scale.exp())
            pyro.sample("z", q.to_event(1))


class EnumeratedMixture(PyroModule):
    """A Gaussian mixture whose component is summed out exactly by TraceEnum_ELBO (no
    particle noise at all)."""

    def __init__(self, x_dim: int = 4, components: int = 3):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components, dtype=torch.float64))
        self.means = nn.Parameter(torch.randn(components, x_dim, dtype=torch.float64))

    @pyro_method
    def model(self, x, noise, num_data=None):
        with data_plate(x, num_data):
            c = pyro.sample("c", dist.Categorical(logits=self.logits),
                            infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(self.means[c], 1.0).to_event(1), obs=x)

    @pyro_method
    def guide(self, x, noise, num_data=None):
        pass


#: estimator name -> (model factory, estimator, particles); every one on 13 points in
#: global batches of 8 and 5: shards of 4 + 4 and 3 + 2 points on two ranks
EQUIVALENCE_CASES = {
    "elbo:k=2": (FixedNoiseLinearVAE, "elbo:k=2", 2),
    "meanfield": (FixedNoiseLinearVAE, "meanfield", 1),
    "iwae:k=3": (FixedNoiseLinearVAE, "iwae:k=3", 3),
    "renyi:alpha=0.5,k=3": (FixedNoiseLinearVAE, "renyi:alpha=0.5,k=3", 3),
    "TraceGraph_ELBO": (lambda: FixedNoiseLinearVAE(reparameterized=False),
                        lambda: pyro.infer.TraceGraph_ELBO(num_particles=2,
                                                           vectorize_particles=True,
                                                           max_plate_nesting=1), 2),
    "TraceEnum_ELBO": (EnumeratedMixture,
                       lambda: pyro.infer.TraceEnum_ELBO(max_plate_nesting=1), 1),
}
EQUIVALENCE_SETTINGS = dict(epochs=2, batch_size=8, lr=1e-3, seed=0, quiet=True,
                            monitor_size=5)


class RecordingSGD(torch.optim.SGD):
    """SGD that keeps every step's gradients and the parameters after it."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.gradients, self.parameters_after = [], []

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        self.gradients.append([p.grad.detach().clone() for p in params])
        result = super().step(closure)
        self.parameters_after.append(torch.cat([p.detach().reshape(-1) for p in params]))
        return result


class RecordingAdam(torch.optim.Adam):
    """Adam that keeps the parameters after every step."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.parameters_after = []

    def step(self, closure=None):
        result = super().step(closure)
        self.parameters_after.append(torch.cat([p.detach().reshape(-1) for group in
                                                self.param_groups for p in group["params"]]))
        return result


def equivalence_data(particles: int, n: int = 13, x_dim: int = 4, z_dim: int = 2):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, x_dim, generator=g, dtype=torch.float64)
    noise = torch.randn(n, particles, z_dim, generator=g, dtype=torch.float64)
    return x, noise


def run_equivalence_case(name: str, distributed: bool) -> dict:
    """One case's fit: the gradients of every step, parameters after it, the history."""
    factory, estimator, particles = EQUIVALENCE_CASES[name]
    torch.manual_seed(0)
    model = factory()
    optimizers = []

    def make_optimizer(params):
        optimizers.append(RecordingSGD(params, lr=EQUIVALENCE_SETTINGS["lr"]))
        return optimizers[-1]

    result = inference_fit(model, equivalence_data(particles),
                           estimator=estimator if isinstance(estimator, str) else estimator(),
                           optimizer=make_optimizer, distributed=distributed,
                           **EQUIVALENCE_SETTINGS)
    return {"gradients": optimizers[0].gradients,
            "parameters_after": optimizers[0].parameters_after,
            "history": result.history}


# ---- digits ---------------------------------------------------------------------------------


def digits(n: int | None = None) -> torch.Tensor:
    return pv.load_dataset("digits", binarize=True).train[:n]


def grey_digits() -> torch.Tensor:
    return pv.load_dataset("digits").train[:400]


def small_vae(seed: int = 0) -> pv.VAE:
    torch.manual_seed(seed)
    return pv.VAE(64, 4, hidden=(32,))


class PoisonedOnce:
    """Binary digits whose row ``bad`` reads as +inf the first time a batch holds it."""

    def __init__(self, x: torch.Tensor, bad: int):
        self.x, self.bad, self.armed = x, bad, True

    def __len__(self):
        return len(self.x)

    def get(self, index):
        rows = self.x[index].clone()
        hit = index == self.bad
        if self.armed and bool(hit.any()):
            rows[hit] = float("inf")
            self.armed = False
        return (rows,)

    def to(self, device):
        return self

    @property
    def device(self):
        return self.x.device

    def first(self):
        return self.x


RESUME_SETTINGS = dict(epochs=4, batch_size=100, lr=3e-3, estimator="iwae:k=2", seed=5,
                       quiet=True, monitor_size=64, beta_warmup_epochs=2)


class Interrupted(Exception):
    pass


def stop_at(epoch: int):
    def callback(record):
        if record["epoch"] == epoch:
            raise Interrupted(epoch)
    return callback


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ---- the scenarios, on every rank -------------------------------------------------------------


def scenario_training(out: Path) -> dict:
    """pyro_vae.fit with distributed=True and a checkpoint directory, Adam recording the
    parameters after every step."""
    optimizers = []

    def make_optimizer(params):
        optimizers.append(RecordingAdam(params, lr=3e-3))
        return optimizers[-1]

    model = small_vae(seed=pv.distributed.get_rank())   # rank 0's weights must win
    initial = flat_parameters(small_vae(seed=0))
    result = pv.fit(model, digits(), epochs=4, batch_size=64, optimizer=make_optimizer,
                    seed=1, quiet=True, monitor_size=200, checkpoint_dir=out / "training",
                    distributed=True)
    return {"parameters_after": optimizers[0].parameters_after, "history": result.history,
            "initial": initial, "settings": result.settings}


def scenario_resume(out: Path) -> dict:
    source = RandomlyBinarised(grey_digits())
    whole = small_vae()
    pv.fit(whole, source, distributed=True, **RESUME_SETTINGS)
    run = out / "resume"
    try:
        pv.fit(small_vae(), source, distributed=True, checkpoint_dir=run,
               callbacks=[stop_at(3)], **RESUME_SETTINGS)
    except Interrupted:
        pass
    if pv.distributed.is_rank_zero():
        shutil.copy(run / "checkpoint.pt", out / "resume_epoch2.pt")
    pv.distributed.barrier()
    resumed = small_vae(seed=3)
    result = pv.fit(resumed, source, distributed=True, resume=run, **RESUME_SETTINGS)
    return {"whole": flat_parameters(whole), "resumed": flat_parameters(resumed),
            "resumed_from_epoch": result.resumed_from_epoch,
            "epochs": [r["epoch"] for r in result.history]}


def _poisoned_fit(policy: str) -> dict:
    x = digits(200)
    optimizers = []

    def make_optimizer(params):
        optimizers.append(RecordingAdam(params, lr=1e-3))
        return optimizers[-1]

    monitor_start = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:2]
    bad = next(i for i in range(len(x)) if i not in monitor_start.tolist())
    try:
        result = inference_fit(small_vae(), PoisonedOnce(x, bad), epochs=1, batch_size=50,
                               optimizer=make_optimizer, quiet=True, nonfinite=policy,
                               monitor_size=20, distributed=True)
        outcome = {"skipped_steps": result.skipped_steps, "error": None}
    except pv.NonFiniteLossError as error:
        outcome = {"skipped_steps": None, "error": str(error)}
    return dict(outcome, parameters_after=optimizers[0].parameters_after)


def scenario_nonfinite(out: Path) -> dict:
    return {"skip": _poisoned_fit("skip"), "raise": _poisoned_fit("raise")}


def scenario_disagreement(out: Path) -> dict:
    batch_size = 32 if pv.distributed.get_rank() == 0 else 64
    try:
        inference_fit(small_vae(), digits(100), epochs=1, batch_size=batch_size, quiet=True,
                      distributed=True)
    except ValueError as error:
        return {"error": str(error)}
    return {"error": None}


def scenario_time_budget(out: Path) -> dict:
    model = small_vae()
    result = inference_fit(model, digits(), epochs=50, batch_size=32, max_seconds=1.0,
                           quiet=True, monitor_size=50, distributed=True)
    return {"steps": result.final["step"], "epochs": len(result.history),
            "parameters": flat_parameters(model)}


def scenario_unseeded(out: Path) -> dict:
    """seed=None: the ranks must still draw different particles."""
    inference_fit(small_vae(), digits(100), epochs=1, batch_size=50, seed=None, quiet=True,
                  monitor_size=10, distributed=True)
    return {"rng": torch.get_rng_state()}


def scenario_refused_overwrite(out: Path) -> dict:
    """Rank 0 finds that the run directory already holds a checkpoint; every rank raises."""
    try:
        pv.fit(small_vae(), digits(100), epochs=1, quiet=True, distributed=True,
               checkpoint_dir=out / "training")
    except FileExistsError as error:
        return {"error": f"{type(error).__name__}: {error}"}
    return {"error": None}


def scenario_entry_point(out: Path) -> dict:
    """``torchrun -m pyro_vae train --distributed`` (its main, inside this process group):
    two epochs, then ``--resume`` to three."""
    from pyro_vae.cli import main

    run = str(out / "entry_point")
    fast = ["--hidden", "32", "--z-dim", "4", "--batch-size", "256", "--eval-samples", "10",
            "--device", "cpu", "--quiet", "--no-figures", "--checkpoint-every", "1"]
    code = main(["train", "--distributed", "--epochs", "2", *fast, "--out", run])
    pv.distributed.barrier()   # rank 0 evaluates before the resume reads its run
    resumed = main(["train", "--distributed", "--resume", run, "--epochs", "3", "--quiet"])
    pv.distributed.barrier()
    return {"code": code, "resumed": resumed}


def scenario_equivalence(out: Path) -> dict:
    return {name: run_equivalence_case(name, distributed=True) for name in EQUIVALENCE_CASES}


SCENARIOS = {"equivalence": scenario_equivalence, "training": scenario_training,
             "resume": scenario_resume, "nonfinite": scenario_nonfinite,
             "disagreement": scenario_disagreement, "time_budget": scenario_time_budget,
             "unseeded": scenario_unseeded, "refused_overwrite": scenario_refused_overwrite,
             "entry_point": scenario_entry_point}


def main(out: Path) -> None:
    with pv.distributed.distributed_session(device="cpu") as context:
        results = {"world_size": context.world_size, "backend": context.backend}
        for name, scenario in SCENARIOS.items():
            results[name] = scenario(out)
            pv.distributed.barrier()
        torch.save(results, out / f"rank{context.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
