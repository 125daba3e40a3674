"""MNIST test log-likelihood against the published table (Burda et al. 2015, Table 1).

Dynamically binarized MNIST from the standard IDX files (``--data-dir`` or
``PYRO_VAE_DATA``; nothing is downloaded), the architecture of Burda et al. 2015 for one
stochastic layer: encoder and decoder with two deterministic tanh layers of 200 units,
50 Gaussian latents, a Bernoulli likelihood, Adam. Trained as a VAE (k=1) and as IWAE with
k=5 and k=50 for ``--epochs`` epochs each, then judged by the importance-sampled test
log-likelihood with K=5000 (on ``--test-points`` test images: the full 10,000 at
K=5000 costs about 21 TFLOP per model). Beside each: the published value at the full
schedule (3,280 epochs with a decaying learning rate) and a plain-PyTorch VAE (plain_vae.py)
with the same initial weights trained on the same budget (epochs, batch size, learning
rate, binarization draws from its own generator) and judged by the same estimator.

    python benchmarks/mnist_nll.py --data-dir /path/to/mnist              # short budget
    python benchmarks/mnist_nll.py --epochs 100 --test-points 10000 --jit # longer
    python benchmarks/mnist_nll.py --device cuda --epochs 3280 --burda-schedule --test-points 10000
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _common import add_common_arguments, print_header, setup, synchronize
from eval_throughput import plain_log_likelihood
from plain_vae import PlainVAE, plain_estimator

import pyro_vae as pv
from pyro_vae.inference import Monitoring, Optimization, fit, log_likelihood

#: Burda et al. 2015, Table 1, one stochastic layer, test -log p(x) in nats (K=5000)
PUBLISHED = {"elbo": ("VAE (k=1)", 86.76), "iwae:k=5": ("IWAE k=5", 85.54),
             "iwae:k=50": ("IWAE k=50", 84.78)}
HIDDEN, Z_DIM = (200, 200), 50


def burda_schedule(optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Burda et al.'s schedule: 3^i epochs at learning rate 1e-3 * 10^(-i/7), i = 0..7."""
    bounds = [sum(3 ** j for j in range(i + 1)) for i in range(8)]

    def factor(epoch: int) -> float:
        stage = next((i for i, bound in enumerate(bounds) if epoch < bound), 7)
        return 10 ** (-stage / 7)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_plain(plain: PlainVAE, probs: torch.Tensor, spec: str, *, epochs: int,
                batch_size: int, lr: float, seed: int, schedule: bool) -> float:
    """The plain reference's training loop: dynamic binarization, shuffled batches, Adam
    on the per-datapoint loss. Returns seconds."""
    name, k = plain_estimator(spec)
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr, eps=1e-4)
    scheduler = burda_schedule(optimizer) if schedule else None
    generator = torch.Generator(device=probs.device).manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(probs), generator=order_generator).to(probs.device)
        for first in range(0, len(probs), batch_size):
            x = torch.bernoulli(probs[order[first:first + batch_size]], generator=generator)
            optimizer.zero_grad(set_to_none=True)
            plain.loss(x, name, k).backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
    synchronize(probs.device)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--data-dir", default=None,
                        help="directory with the MNIST IDX files (default: $PYRO_VAE_DATA)")
    parser.add_argument("--estimators", nargs="+", default=list(PUBLISHED),
                        choices=list(PUBLISHED))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=20, help="Burda et al.: 20")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--burda-schedule", action="store_true",
                        help="lr 1e-3 * 10^(-i/7) for 3^i epochs (i = 0..7; 3280 in all)")
    parser.add_argument("--train-points", type=int, default=None,
                        help="train on the first N training images (default: all 60,000)")
    parser.add_argument("--test-points", type=int, default=200,
                        help="test images judged (default 200; 10000 = the whole test set)")
    parser.add_argument("--eval-samples", type=int, default=5000, help="K (default 5000)")
    parser.add_argument("--jit", action="store_true",
                        help="train pyro-vae with the compiled estimator (same numbers, "
                             "faster)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    args = parser.parse_args(argv)
    device = setup(args)
    data = pv.load_dataset("mnist", data_dir=args.data_dir, binarize="dynamic")
    probs = data.train.probs[:args.train_points] if args.train_points else data.train.probs
    train = pv.data.DynamicBinarization(probs)
    test = data.test[:args.test_points].to(device)
    print_header("MNIST test log-likelihood (Burda et al. 2015 architecture)", device)
    print(f"data      {data.describe()}; training on {len(train)} images, dynamically "
          f"binarized; test: the first {len(test)} images (fixed binarization, seed 0)")
    print(f"model     784-{HIDDEN[0]}-{HIDDEN[1]}-{Z_DIM} tanh, Bernoulli, diagonal Gaussian "
          f"guide; Adam lr {args.lr}, eps 1e-4"
          f"{' with Burda schedule' if args.burda_schedule else ''}, "
          f"batch {args.batch_size}, {args.epochs} epoch(s)")
    print(f"judged    -log p(x) by importance sampling, K={args.eval_samples}, nats "
          "(lower is better)")
    print()
    rows = []
    for spec in args.estimators:
        torch.manual_seed(args.seed)
        model = pv.VAE(784, Z_DIM, hidden=HIDDEN, activation="tanh")
        plain = PlainVAE.from_vae(model, HIDDEN, "tanh").to(device)
        train_spec = spec + ((",jit=1" if ":" in spec else ":jit=1") if args.jit else "")
        start = time.perf_counter()
        result = fit(model, train, estimator=train_spec, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
                     quiet=True, monitor=Monitoring(size=500),
                     optimizer=Optimization(
                         lambda params: torch.optim.Adam(params, lr=args.lr, eps=1e-4),
                         lr_schedule=burda_schedule if args.burda_schedule else None))
        synchronize(device)
        seconds = time.perf_counter() - start
        nll = -log_likelihood(model, test, args.eval_samples, seed=args.seed).mean().item()
        row = {"spec": spec, "nll": nll, "seconds": seconds,
               "train_elbo": result.final.get("elbo", math.nan)}
        if not args.no_plain:
            row["plain_seconds"] = train_plain(
                plain, probs.to(device), spec, epochs=args.epochs, batch_size=args.batch_size,
                lr=args.lr, seed=args.seed, schedule=args.burda_schedule)
            torch.manual_seed(args.seed)
            plain.eval()
            row["plain_nll"] = -plain_log_likelihood(plain, test, args.eval_samples,
                                                     2 ** 15).mean().item()
        rows.append(row)
        print(f"done      {spec}: pyro-vae {nll:.2f} nats ({seconds:.0f} s training)"
              + ("" if args.no_plain else f", plain {row['plain_nll']:.2f} nats "
                 f"({row['plain_seconds']:.0f} s)"), flush=True)
    print()
    header = (f"{'model':<12} {'epochs':>6}  {'pyro-vae':>9} {'plain':>9} {'published':>9}  "
              f"{'train s':>8} {'plain s':>8}")
    print("test -log p(x), nats")
    print(header)
    print("-" * len(header))
    for row in rows:
        name, published = PUBLISHED[row["spec"]]
        plain_nll = f"{row['plain_nll']:>9.2f}" if "plain_nll" in row else f"{'-':>9}"
        plain_s = f"{row['plain_seconds']:>8.0f}" if "plain_seconds" in row else f"{'-':>8}"
        print(f"{name:<12} {args.epochs:>6}  {row['nll']:>9.2f} {plain_nll} {published:>9.2f}  "
              f"{row['seconds']:>8.0f} {plain_s}")
    print()
    print("published: Burda et al. 2015, Table 1 (one stochastic layer), after 3,280 epochs; "
          "pyro-vae and plain: this run's budget.")


if __name__ == "__main__":
    main()
