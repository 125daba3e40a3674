"""Training-step overhead of pyro-vae against a plain-PyTorch VAE doing the same work.

Both sides train the same network (the Burda et al. 2015 MLP by default: 784-200-200-50
with tanh, Bernoulli likelihood, diagonal Gaussian guide, Adam) on the same binary data,
batch and device. The pyro-vae side is the step fit() takes (``Fit.step_on``: fetch the
batch, Pyro's ``loss_and_grads`` under the KL weight, the non-finite guard, the optimizer
step, the running loss); the plain side is a hand-written reparameterised loss (see
plain_vae.py), ``backward`` and the same optimizer. They alternate step by step in one
process, in blocks of calls of about ``--block-seconds`` each (so that on shared cores the
scheduler's preemptions hit every contender alike); the table holds the medians over the
blocks of the time per step, after a warm-up, and their ratios to plain.

Contenders: ``plain``; ``pyro-vae`` (the estimator as given, e.g. ``elbo``: fit()'s
default step, compiled where the fit qualifies, which this network does); ``eager`` (the
same through fit() with ``jit=0``: the same numbers, see tests/test_compiled_default.py);
``pyro-svi`` (the VAE as Pyro's ``examples/vae/vae.py`` writes it, stepped by
``SVI(model, guide, pyro.optim.Adam, loss)``, see pyro_example_vae.py). ``--no-validation``
adds the eager step with Pyro's and torch's distribution validation off
(``pyro.validation_enabled(False)``); ``--pyro-jit`` adds Pyro's own JitTrace_ELBO /
JitTraceMeanField_ELBO (model and guide bound once, as they must be), which read parameters
from Pyro's global param store and so run here with ``module_local_params`` switched off
(see the README).

    python benchmarks/step_overhead.py                   # short: 9 blocks of ~0.2 s per cell
    python benchmarks/step_overhead.py --full            # 25 blocks of ~0.5 s per cell
    python benchmarks/step_overhead.py --threads 1 --clock cpu   # CPU time, on a busy machine
    python benchmarks/step_overhead.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import inspect

import pyro
import pyro.infer
import torch
from _common import add_common_arguments, interleaved_times, median, print_header, setup
from plain_vae import PlainVAE, plain_estimator
from pyro_example_vae import PYRO_LOSSES, PyroExampleVAE

import pyro_vae as pv
from pyro_vae.inference.fitting import KLSchedule, Monitoring, NonFinitePolicy, Optimization
from pyro_vae.inference.fitting import svi as training


def fit_defaults() -> dict:
    """fit()'s own defaults, so the measured step is configured as a user's would be."""
    return {name: p.default for name, p in inspect.signature(training.fit).parameters.items()
            if p.default is not inspect.Parameter.empty and name != "quiet"}


class BatchOrder:
    """Batches of row indices of a fresh random permutation each pass (as an epoch)."""

    def __init__(self, n: int, batch_size: int, device: torch.device):
        self.n, self.batch_size, self.device = n, batch_size, device
        self.position, self.order = n, None

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.n:
            self.order, self.position = torch.randperm(self.n).to(self.device), 0
        indices = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return indices


def pyro_vae_step(model, x, spec: str, batch_size: int, device, lr: float):
    """One step of fit() (its own code path) per call."""
    defaults = fit_defaults()
    run = training._prepare_fit(
        model, x, estimator=spec, epochs=1, batch_size=batch_size, lr=lr,
        seed=defaults["seed"], device=device, validation_data=None,
        vectorize_particles=defaults["vectorize_particles"], max_seconds=None,
        optimization=Optimization(defaults["optimizer"]), kl=KLSchedule(defaults["beta"]),
        checkpoints=None, policy=NonFinitePolicy(defaults["nonfinite"]),
        monitoring=Monitoring(size=2), resume=None, parallel=None)
    order = BatchOrder(len(x), batch_size, device)
    counter = iter(range(1, 10 ** 9))

    def step():
        run.step_on(order.next(), 1, next(counter))
    return step, run


def plain_step(plain: PlainVAE, x, spec: str, batch_size: int, device, lr: float):
    name, k = plain_estimator(spec)
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr)
    order = BatchOrder(len(x), batch_size, device)
    state = {"loss_sum": torch.zeros((), dtype=torch.float64, device=device)}

    def step():
        batch = x[order.next()]
        optimizer.zero_grad(set_to_none=True)
        loss = plain.loss(batch, name, k)
        loss.backward()
        optimizer.step()
        state["loss_sum"] += loss.detach()
    return step


def pyro_svi_step(plain: PlainVAE, x, spec: str, batch_size: int, device, lr: float):
    """Pyro's example: ``svi.step(batch)`` in a cleared global param store; None when the
    example's losses have no counterpart of the estimator."""
    name, k = plain_estimator(spec)
    if name not in PYRO_LOSSES:
        return None
    pyro.clear_param_store()
    vae = PyroExampleVAE(plain)
    svi = vae.make_svi(name, k, lr)
    order = BatchOrder(len(x), batch_size, device)

    def step():
        PyroExampleVAE.svi_step(svi, x[order.next()])
    return step


JIT_ESTIMATORS = {"elbo": pyro.infer.JitTrace_ELBO,
                  "meanfield": pyro.infer.JitTraceMeanField_ELBO}


def pyro_jit_step(model, x, spec: str, batch_size: int, device, lr: float):
    """Pyro's JIT estimator: model and guide bound once (JitTrace_ELBO keys its compiled
    graph on their ids). It reads every parameter from Pyro's global param store, so it
    runs with module_local_params off (in a cleared store); None when Pyro has no JIT
    version of the estimator."""
    name, k = plain_estimator(spec)
    if name not in JIT_ESTIMATORS:
        return None
    elbo = JIT_ESTIMATORS[name](num_particles=k, vectorize_particles=k > 1,
                                max_plate_nesting=1, ignore_jit_warnings=True)
    model_fn, guide_fn = model.model, model.guide
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = BatchOrder(len(x), batch_size, device)
    num_data = len(x)

    def step():
        with pyro.settings.context(module_local_params=False):
            optimizer.zero_grad(set_to_none=True)
            elbo.loss_and_grads(model_fn, guide_fn, x[order.next()], num_data=num_data)
            optimizer.step()
    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--estimators", nargs="+", default=["elbo", "meanfield", "iwae:k=5"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128, 512])
    parser.add_argument("--rounds", type=int, default=9, help="timed blocks per contender")
    parser.add_argument("--block-seconds", type=float, default=0.2,
                        help="length of a timed block of steps (0: time single steps)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--full", action="store_true",
                        help="25 blocks of 0.5 s, 30 warm-up steps")
    parser.add_argument("--hidden", default="200,200")
    parser.add_argument("--z-dim", type=int, default=50)
    parser.add_argument("--x-dim", type=int, default=784)
    parser.add_argument("--activation", default="tanh", choices=["tanh", "relu"])
    parser.add_argument("--no-validation", action="store_true",
                        help="add pyro-vae with distribution validation off")
    parser.add_argument("--no-eager", action="store_true",
                        help="leave out the eager step (spec:jit=0)")
    parser.add_argument("--no-pyro-svi", action="store_true",
                        help="leave out Pyro's example (SVI with pyro.optim.Adam)")
    parser.add_argument("--pyro-jit", action="store_true",
                        help="add Pyro's own JIT estimators (module_local_params off)")
    args = parser.parse_args(argv)
    if args.full:
        args.rounds, args.block_seconds, args.warmup = 25, 0.5, 30
    device = setup(args)
    hidden = [int(h) for h in args.hidden.split(",")]
    print_header("training-step overhead: pyro-vae fit() step vs plain PyTorch", device)
    print(f"network   {args.x_dim}-{'-'.join(map(str, hidden))}-{args.z_dim} "
          f"({args.activation}), Bernoulli, diagonal Gaussian guide, Adam lr 1e-3; "
          f"{args.warmup} warm-up steps, then {args.rounds} blocks of ~{args.block_seconds} s "
          f"per contender, {args.clock} clock; medians of the time per step")
    print()
    columns = (["plain", "pyro-vae"] + ([] if args.no_eager else ["eager"])
               + ([] if args.no_pyro_svi else ["pyro-svi"])
               + (["no-valid"] if args.no_validation else [])
               + (["pyro-jit"] if args.pyro_jit else []))
    header = f"{'estimator':<10} {'batch':>5}  " + "  ".join(
        f"{c + ' ms':>11}" for c in columns) + "  " + "  ".join(
        f"{c + '/plain':>15}" for c in columns[1:])
    print(header)
    print("-" * len(header))
    lr = 1e-3
    for spec in args.estimators:
        for batch_size in args.batch_sizes:
            n = max(16 * batch_size, 4096)
            generator = torch.Generator().manual_seed(args.seed)
            x = torch.bernoulli(torch.full((n, args.x_dim), 0.13), generator=generator
                                ).to(device)
            torch.manual_seed(args.seed)
            model = pv.VAE(args.x_dim, args.z_dim, hidden=hidden, activation=args.activation)
            plain = PlainVAE.from_vae(model, hidden, args.activation).to(device)
            contenders = {"plain": plain_step(plain, x, spec, batch_size, device, lr)}
            contenders["pyro-vae"], run = pyro_vae_step(copy.deepcopy(model), x, spec,
                                                        batch_size, device, lr)
            if not run.compiled:
                print(f"  note: the default step of {spec} is eager here: "
                      f"{run.settings['eager_reason']}")
            eager_spec = spec + (",jit=0" if ":" in spec else ":jit=0")
            if not args.no_eager:
                contenders["eager"], _ = pyro_vae_step(copy.deepcopy(model), x, eager_spec,
                                                       batch_size, device, lr)
            if not args.no_pyro_svi:
                example_plain = PlainVAE.from_vae(model, hidden, args.activation).to(device)
                step = pyro_svi_step(example_plain, x, spec, batch_size, device, lr)
                if step is not None:
                    contenders["pyro-svi"] = step
            if args.no_validation:
                step_no_validation, _ = pyro_vae_step(copy.deepcopy(model), x, eager_spec,
                                                      batch_size, device, lr)

                def unvalidated(step=step_no_validation):
                    with pyro.validation_enabled(False):
                        step()
                contenders["no-valid"] = unvalidated
            if args.pyro_jit:
                pyro.clear_param_store()
                step = pyro_jit_step(copy.deepcopy(model).to(device), x, spec, batch_size,
                                     device, lr)
                if step is not None:
                    contenders["pyro-jit"] = step
            times = interleaved_times(contenders, rounds=args.rounds, warmup=args.warmup,
                                      device=device, clock=args.clock,
                                      block_seconds=args.block_seconds)
            pyro.clear_param_store()
            medians = {name: median(values) for name, values in times.items()}
            cells = "  ".join(f"{1e3 * medians[c]:>11.2f}" if c in medians else f"{'n/a':>11}"
                              for c in columns)
            ratios = "  ".join(f"{medians[c] / medians['plain']:>14.3f}x" if c in medians
                               else f"{'n/a':>15}" for c in columns[1:])
            print(f"{spec:<10} {batch_size:>5}  {cells}  {ratios}", flush=True)
    print()
    print("ratio = median step / median plain step (same process, alternating); 1.00x = no "
          "overhead. pyro-vae = fit()'s default step (compiled where the fit qualifies); "
          "eager = the same with jit=0; pyro-svi = Pyro's examples/vae/vae.py model and guide "
          "stepped by SVI with pyro.optim.Adam.")


if __name__ == "__main__":
    main()
