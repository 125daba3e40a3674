"""The compiled step's foundation: ``torch.jit.trace`` (what pyro-vae compiles with) against
``torch.compile`` (TorchDynamo + Inductor) on the same Pyro objective.

The objective is the ``elbo`` estimator's ``(loss, surrogate)`` of one minibatch of the
Burda et al. 2015 VAE (784-200-200-50 tanh, Bernoulli, batch 128), Pyro's model and guide
traced inside it; each step is objective, backward and Adam. Reported: the first step
(which compiles) and the median CPU time per step after it, for eager, the library's
traced graph and ``torch.compile(objective)``.

    python benchmarks/torch_compile.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from _common import add_common_arguments, interleaved_times, median, print_header, setup

import pyro_vae as pv
from pyro_vae.inference import make_estimator
from pyro_vae.inference.estimators.compiled import CompiledObjective


def make_step(kind: str, x: torch.Tensor, batch_size: int, seed: int):
    torch.manual_seed(seed)
    model = pv.VAE(x.shape[1], 50, hidden=(200, 200), activation="tanh").to(x.device)
    estimator = make_estimator("elbo:jit=0", max_plate_nesting=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    kwargs = {"num_data": len(x)}
    model_fn, guide_fn = model.model, model.guide

    def objective(batch):
        return estimator._objective(model_fn, guide_fn, (batch,), kwargs)

    if kind == "torch.compile":
        objective = torch.compile(objective)
    elif kind == "jit.trace":
        traced = CompiledObjective(estimator._objective)

        def objective(batch):
            return traced(model_fn, guide_fn, (batch,), kwargs)

    position = [0]

    def step():
        start = position[0] % (len(x) - batch_size)
        position[0] += batch_size
        optimizer.zero_grad(set_to_none=True)
        _, surrogate = objective(x[start:start + batch_size])
        surrogate.backward()
        optimizer.step()
    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--kinds", nargs="+", default=["eager", "jit.trace", "torch.compile"])
    args = parser.parse_args(argv)
    device = setup(args)
    print_header("compiling the Pyro objective: torch.jit.trace vs torch.compile", device)
    x = torch.bernoulli(torch.full((4096, 784), 0.13),
                        generator=torch.Generator().manual_seed(args.seed)).to(device)
    steps, first = {}, {}
    for kind in args.kinds:
        steps[kind] = make_step(kind, x, args.batch_size, args.seed)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            steps[kind]()
        first[kind] = time.perf_counter() - started
    times = interleaved_times(steps, rounds=args.rounds, warmup=10, device=device,
                              clock=args.clock, block_seconds=0.3)
    print(f"{'kind':<14} {'first step s':>13} {'step ms':>9} {'/eager':>8}")
    eager = median(times["eager"]) if "eager" in times else None
    for kind in args.kinds:
        ms = 1e3 * median(times[kind])
        ratio = f"{median(times[kind]) / eager:.2f}x" if eager else "-"
        print(f"{kind:<14} {first[kind]:>13.2f} {ms:>9.2f} {ratio:>8}")
    print()
    print("first step: wall seconds of the first call (it compiles); step: median time per "
          f"step over {args.rounds} blocks, {args.clock} clock")


if __name__ == "__main__":
    main()
