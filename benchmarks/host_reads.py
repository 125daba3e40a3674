"""Device-to-host reads per training step: what makes a GPU wait for the host.

Counts, during fit()'s steps (the optimizer's own step excluded), the calls that read a
tensor's value back to the host: ``Tensor.item``, ``bool(tensor)``, ``Tensor.tolist``,
``float(tensor)``, ``int(tensor)`` and torch's ``_is_all_true`` (distribution validation).
On a GPU each one waits for the queued work to finish. Deterministic: no timing.

    python benchmarks/host_reads.py
    python benchmarks/host_reads.py --device cuda
"""

from __future__ import annotations

import argparse
import collections

import pyro
import torch
from _common import add_common_arguments, print_header, setup

import pyro_vae as pv
from pyro_vae.inference import make_estimator
from pyro_vae.inference.fitting import loop as training_loop
from pyro_vae.inference.fitting import svi as training

READS = ("item", "__bool__", "tolist", "__float__", "__int__")


class ReadCounter:
    """Counts host reads while ``active``; patches torch.Tensor and torch._is_all_true."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.active = False
        self._saved = {}

    def __enter__(self) -> ReadCounter:
        for name in READS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                if self.active:
                    self.counts[_name] += 1
                return _original(tensor, *args, **kwargs)
            setattr(torch.Tensor, name, counted)
        self._saved["_is_all_true"] = torch._is_all_true

        def all_true(*args, **kwargs):
            if self.active:
                self.counts["_is_all_true"] += 1
            return self._saved["_is_all_true"](*args, **kwargs)
        torch._is_all_true = all_true
        return self

    def __exit__(self, *exc) -> None:
        for name in READS:
            setattr(torch.Tensor, name, self._saved[name])
        torch._is_all_true = self._saved["_is_all_true"]


def reads_per_step(spec: str, validation: bool, device, steps: int) -> dict:
    batch_size = 32
    x = torch.bernoulli(torch.full((steps * batch_size, 784), 0.13),
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = pv.VAE(784, 50, hidden=(200, 200), activation="tanh")
    estimator = make_estimator(spec, max_plate_nesting=1)   # one instance: compiled once
    settings = dict(estimator=estimator, batch_size=batch_size, quiet=True,
                    monitor=pv.Monitoring(size=8), device=device)
    with pyro.validation_enabled(validation), ReadCounter() as counter:
        training.fit(model, x, epochs=1, **settings)   # warm-up (compiles where it may)
        step, optimizer_step = training_loop.Fit.train_step, torch.optim.Adam.step

        def counted_step(self, *args, **kwargs):
            counter.active = True
            try:
                return step(self, *args, **kwargs)
            finally:
                counter.active = False

        def silent_optimizer_step(self, *args, **kwargs):
            was, counter.active = counter.active, False
            try:
                return optimizer_step(self, *args, **kwargs)
            finally:
                counter.active = was
        training_loop.Fit.train_step, torch.optim.Adam.step = counted_step, silent_optimizer_step
        try:
            training.fit(model, x, epochs=1, **settings)
        finally:
            training_loop.Fit.train_step, torch.optim.Adam.step = step, optimizer_step
    return {name: count / steps for name, count in counter.counts.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--estimators", nargs="+",
                        default=["elbo", "meanfield", "iwae:k=5", "elbo:jit=1",
                                 "iwae:k=5,jit=1"])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    device = setup(args)
    print_header("host reads per training step (fit, optimizer excluded)", device)
    columns = ["item", "__bool__", "tolist", "_is_all_true", "__float__", "__int__"]
    header = f"{'estimator':<16} {'validation':>10}  " + " ".join(
        f"{c:>12}" for c in columns) + f" {'total':>7}"
    print(header)
    print("-" * len(header))
    for spec in args.estimators:
        for validation in (True, False):
            counts = reads_per_step(spec, validation, device, args.steps)
            total = sum(counts.get(c, 0) for c in columns if c != "_is_all_true")
            print(f"{spec:<16} {'on' if validation else 'off':>10}  " + " ".join(
                f"{counts.get(c, 0):>12.1f}" for c in columns) + f" {total:>7.1f}",
                flush=True)
    print()
    print("total = item + bool + tolist + float + int (each _is_all_true is read by a bool); "
          "validation = Pyro's and torch's distribution checks (pyro.enable_validation).")


if __name__ == "__main__":
    main()
