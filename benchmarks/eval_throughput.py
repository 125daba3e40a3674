"""Evaluation throughput: importance-sampled log p(x), datapoints x K per second.

pyro-vae's ``log_likelihood`` at its defaults (datapoints and particles batched together, in
chunks of (particle, datapoint) pairs sized from the data and the device, see
``automatic_particle_budget``; Pyro's validation on) against

* the arithmetic floor: the FLOPs of the passes it must make, one encoder pass per
  datapoint and one decoder pass per (particle, datapoint), 2 FLOPs per multiply-add, over
  this machine's matrix-multiply rate measured in the same run on the decoder's largest
  layer (a floor: the elementwise work, the densities and the sampling are not counted);
* a naive loop that evaluates one datapoint at a time (its K particles still vectorised),
  as several libraries do;
* a plain-PyTorch implementation of the same estimator (plain_vae.py), chunked alike.

``--budget-scan`` adds pyro-vae at explicit ``particle_budget`` values beside the automatic
one. Then peak memory against the number of datapoints, against K and against the chunk size.

    python benchmarks/eval_throughput.py                 # short
    python benchmarks/eval_throughput.py --full          # more datapoints and repeats
    python benchmarks/eval_throughput.py --device cuda
    python benchmarks/eval_throughput.py --budget-scan   # also explicit chunk sizes
"""

from __future__ import annotations

import argparse
import math

import torch
from _common import (
    add_common_arguments,
    interleaved_times,
    median,
    print_header,
    setup,
    synchronize,
    time_call,
)
from plain_vae import PlainVAE

import pyro_vae as pv
from pyro_vae.inference import log_likelihood
from pyro_vae.inference.batching import automatic_particle_budget
from pyro_vae.inference.comparison import PeakMemory


def mlp_multiply_adds(widths) -> int:
    return sum(a * b for a, b in zip(widths, widths[1:], strict=False))


def matmul_rate(rows: int, inner: int, outer: int, device, dtype, clock: str,
                repeats: int = 5) -> float:
    """FLOP/s of (rows x inner) @ (inner x outer): the best of ``repeats`` timings (the
    machine's rate when nothing else is in the way)."""
    a = torch.randn(rows, inner, device=device, dtype=dtype)
    b = torch.randn(inner, outer, device=device, dtype=dtype)
    a @ b   # warm-up
    best = min(time_call(lambda: a @ b, device, clock) for _ in range(repeats))
    return 2.0 * rows * inner * outer / best


@torch.no_grad()
def plain_log_likelihood(plain: PlainVAE, x: torch.Tensor, num_samples: int,
                         particle_budget: int) -> torch.Tensor:
    """The same estimator in plain PyTorch: log (1/K) sum_k w_k, chunked over particles."""
    batch = min(len(x), max(1, particle_budget // min(num_samples, 64)))
    chunk = max(1, min(num_samples, particle_budget // batch))
    out = []
    for start in range(0, len(x), batch):
        rows, running = x[start:start + batch], None
        for first in range(0, num_samples, chunk):
            lse = torch.logsumexp(plain.log_weights(rows, min(chunk, num_samples - first)), 0)
            running = lse if running is None else torch.logaddexp(running, lse)
        out.append(running - math.log(num_samples))
    return torch.cat(out)


def binary_data(n: int, x_dim: int, seed: int, device) -> torch.Tensor:
    """n binary rows, 13% ones (MNIST's share), the same for every contender."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, x_dim), 0.13), generator=generator).to(device)


def alternating_medians(contenders: dict, rounds: int, device, clock: str) -> dict:
    """Median seconds per call of each contender, timed in alternating rounds after one
    untimed call each (``interleaved_times``)."""
    times = interleaved_times(contenders, rounds=rounds, warmup=1, device=device, clock=clock)
    return {name: median(values) for name, values in times.items()}


def naive_log_likelihood(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """One datapoint at a time, its K particles in one vectorised call."""
    return torch.cat([log_likelihood(model, x[i:i + 1], num_samples, batch_size=1)
                      for i in range(len(x))])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--ks", nargs="+", type=int, default=[50, 5000])
    parser.add_argument("--points", type=int, default=None,
                        help="datapoints per K (default: 1024 at K <= 50, 32 above; x4 with "
                             "--full)")
    parser.add_argument("--naive-points", type=int, default=None,
                        help="datapoints for the naive loop (default: a quarter of --points)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds (contenders alternating), median")
    parser.add_argument("--particle-budget", type=int, default=None,
                        help="pairs per chunk for pyro-vae and plain (default: pyro-vae's "
                             "automatic choice for the data and device)")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--budget-scan", nargs="*", type=int, default=None,
                        help="also time pyro-vae at these particle budgets (default with no "
                             "values: 4096 8192 16384 32768)")
    args = parser.parse_args(argv)
    device = setup(args)
    dtype = torch.float32
    hidden, z_dim, x_dim = [200, 200], 50, 784
    print_header("evaluation throughput: importance-sampled log p(x)", device)
    torch.manual_seed(args.seed)
    model = pv.VAE(x_dim, z_dim, hidden=hidden, activation="tanh").to(device).eval()
    plain = PlainVAE.from_vae(model, hidden, "tanh").eval()
    encoder = mlp_multiply_adds([x_dim, *hidden]) + 2 * hidden[-1] * z_dim
    decoder = mlp_multiply_adds([z_dim, *reversed(hidden), x_dim])
    rates_by_rows = {rows: median([matmul_rate(rows, hidden[0], x_dim, device, dtype, args.clock)
                                   for _ in range(3)]) for rows in (4096, 16384)}
    rows, rate = max(rates_by_rows.items(), key=lambda item: item[1])
    print(f"network   {x_dim}-{'-'.join(map(str, hidden))}-{z_dim} (tanh), Bernoulli; "
          f"{encoder} multiply-adds per encoder pass, {decoder} per decoder pass")
    print(f"matmul    {rate / 1e9:.1f} GFLOP/s ({rows}x{hidden[0]} @ {hidden[0]}x{x_dim}, "
          f"float32, best of 5, median of 3; the faster of 4096 and 16384 rows)")
    automatic = automatic_particle_budget((torch.zeros(2, x_dim, device=device),))
    budget = args.particle_budget or automatic
    chosen = "given" if args.particle_budget else f"automatic for {x_dim} features on {device.type}"
    print(f"chunks    {budget} (particle, datapoint) pairs ({chosen}) for pyro-vae and plain; "
          f"{args.repeats} timed rounds, contenders alternating, medians; {args.clock} clock")
    print()
    header = (f"{'K':>5} {'points':>6}  {'pyro-vae':>12} {'floor':>12} {'plain':>12} "
              f"{'naive loop':>12}  {'pyro-vae/floor':>14} {'naive/pyro-vae':>14} "
              f"{'pyro-vae/plain':>14}")
    print("throughput in datapoints x K per second")
    print(header)
    print("-" * len(header))
    scale = 4 if args.full else 1
    for k in args.ks:
        n = args.points or scale * (1024 if k <= 50 else 32)
        n_naive = max(1, args.naive_points or n // 4)
        x = binary_data(n, x_dim, args.seed, device)
        runs = {
            "pyro-vae": (n, lambda x=x, k=k: log_likelihood(
                model, x, k, particle_budget=args.particle_budget)),
            "plain": (n, lambda x=x, k=k: plain_log_likelihood(plain, x, k, budget)),
            "naive": (n_naive, lambda x=x[:n_naive], k=k: naive_log_likelihood(model, x, k)),
        }
        seconds = alternating_medians({name: fn for name, (_, fn) in runs.items()},
                                      args.repeats, device, args.clock)
        rates = {name: points * k / seconds[name] for name, (points, _) in runs.items()}
        floor_seconds = n * (2 * encoder + 2 * decoder * k) / rate
        rates["floor"] = n * k / floor_seconds
        print(f"{k:>5} {n:>6}  {rates['pyro-vae']:>12.4g} {rates['floor']:>12.4g} "
              f"{rates['plain']:>12.4g} {rates['naive']:>12.4g}  "
              f"{rates['floor'] / rates['pyro-vae']:>13.2f}x "
              f"{rates['pyro-vae'] / rates['naive']:>13.1f}x "
              f"{rates['plain'] / rates['pyro-vae']:>13.2f}x", flush=True)
    print()
    print("pyro-vae/floor: how many times the floor's time pyro-vae takes (1.00x = at the "
          "floor); naive/pyro-vae: how many times faster pyro-vae is than the naive loop; "
          "pyro-vae/plain: pyro-vae's time over the plain-PyTorch estimator's.")
    if args.budget_scan is not None:
        budgets = [None, *(args.budget_scan or [4096, 8192, 16384, 32768])]
        print()
        print("pyro-vae throughput (datapoints x K per second) against particle_budget "
              f"(auto = the default, {automatic} pairs here)")
        header = f"{'K':>5} {'points':>6}  " + " ".join(f"{b or 'auto':>10}" for b in budgets)
        print(header)
        print("-" * len(header))
        for k in args.ks:
            n = args.points or scale * (1024 if k <= 50 else 32)
            x = binary_data(n, x_dim, args.seed, device)
            seconds = alternating_medians(
                {b: (lambda x=x, k=k, b=b: log_likelihood(model, x, k, particle_budget=b))
                 for b in budgets}, args.repeats, device, args.clock)
            print(f"{k:>5} {n:>6}  " + " ".join(f"{n * k / seconds[b]:>10.4g}" for b in budgets),
                  flush=True)
    if args.no_memory:
        return
    print()
    print(f"peak memory of log_likelihood above the memory held before it, MiB "
          f"({PeakMemory(device).measure if device.type == 'cuda' else 'process peak RSS'})")
    header = f"{'points':>6} {'K':>6} {'particle_budget':>15}  {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    cases = [(256, 500, None), (1024, 500, None), (256, 5000, None), (256, 500, 2 ** 13),
             (256, 500, 2 ** 15), (1024, 5000, 2 ** 15) if args.full else (256, 2000, 2 ** 15)]
    for n, k, explicit in cases:
        x = binary_data(n, x_dim, args.seed, device)
        synchronize(device)
        with PeakMemory(device) as memory:
            log_likelihood(model, x, k, particle_budget=explicit)
        above = (memory.peak_mb - memory.start_mb) if memory.peak_mb is not None else None
        cell = "n/a" if above is None else f"{above:.0f}"
        shown = explicit or f"auto ({automatic})"
        print(f"{n:>6} {k:>6} {shown:>15}  {cell:>9}", flush=True)
    print()
    print(f"a (particle, datapoint) chunk of B pairs holds a few B x {x_dim} float32 tensors: "
          "the peak follows the chunk, not the number of datapoints or K.")


if __name__ == "__main__":
    main()
