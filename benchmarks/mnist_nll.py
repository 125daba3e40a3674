"""MNIST test log-likelihood against the published table (Burda et al. 2015, Table 1).

Dynamically binarized MNIST from the standard IDX files (``--data-dir`` or
``PYRO_VAE_DATA``; nothing is downloaded), the architecture of Burda et al. 2015 for one
stochastic layer: encoder and decoder with two deterministic tanh layers of 200 units,
50 Gaussian latents, a Bernoulli likelihood, Adam (eps 1e-4). Trained as a VAE (k=1) and as
IWAE with k=5 and k=50 for ``--epochs`` epochs each, then judged by the importance-sampled
test log-likelihood with K=5000 (on ``--test-points`` test images: the full 10,000 at
K=5000 costs about 21 TFLOP per model). Beside each: the published value at the full
schedule (3,280 epochs with a decaying learning rate) and a plain-PyTorch VAE (plain_vae.py)
with the same initial weights trained on the same budget (epochs, batch size, learning
rate, binarization draws from its own generator) and judged by the same estimator.

Learning curves (``--curve DIR``): every model trains in its own checkpointed directory
under DIR and is judged at each of ``--eval-epochs`` (test log p(x), K = ``--eval-samples``,
on ``--test-points`` images); every judgement is appended to DIR/curve.csv at once, so an
interrupted run (a session's end, Ctrl-C) continues where it stopped when started again with
the same command, bit for bit. ``--plain-for SPEC`` trains the plain reference on the same
schedule beside that model; ``--two-layer-for SPEC`` adds Table 1's model with two
stochastic layers (``HierarchicalVAE``, layers 100-50, bottom-up guide) trained by that
estimator. ``--plot`` draws DIR/curve.csv (test -log p(x) against epoch, the published
values as horizontal lines) to ``--figure``.

    python benchmarks/mnist_nll.py --data-dir /path/to/mnist              # short budget
    python benchmarks/mnist_nll.py --epochs 100 --test-points 10000       # longer
    python benchmarks/mnist_nll.py --device cuda --epochs 3280 --burda-schedule --test-points 10000
    python benchmarks/mnist_nll.py --curve benchmarks/results/mnist_curve --burda-schedule \
        --eval-epochs 1 4 13 40 121 --test-points 10000 --plain-for elbo --threads 1 \
        --two-layer-for iwae:k=50
    python benchmarks/mnist_nll.py --curve benchmarks/results/mnist_curve --plot
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import time
from pathlib import Path

import torch
from _common import add_common_arguments, print_header, setup, synchronize
from eval_throughput import plain_log_likelihood
from plain_vae import PlainVAE, plain_estimator

import pyro_vae as pv
from pyro_vae.checkpoints import CheckpointFiles
from pyro_vae.inference import Monitoring, Optimization, fit, log_likelihood

#: Burda et al. 2015, Table 1, one stochastic layer, test -log p(x) in nats (K=5000)
PUBLISHED = {"elbo": ("VAE (k=1)", 86.76), "iwae:k=5": ("IWAE k=5", 85.54),
             "iwae:k=50": ("IWAE k=50", 84.78)}
HIDDEN, Z_DIM = (200, 200), 50
#: Table 1, two stochastic layers (200-200 tanh, 100 units; 100-100 tanh, 50 units)
PUBLISHED_TWO_LAYER = {"iwae:k=50": ("IWAE k=50, 2 layers", 82.90)}
TWO_LAYERS = (100, 50)
TWO_LAYER = "pyro-vae 2-layer"


def burda_schedule(optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Burda et al.'s schedule: 3^i epochs at learning rate 1e-3 * 10^(-i/7), i = 0..7."""
    bounds = [sum(3 ** j for j in range(i + 1)) for i in range(8)]

    def factor(epoch: int) -> float:
        stage = next((i for i, bound in enumerate(bounds) if epoch < bound), 7)
        return 10 ** (-stage / 7)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class PlainRun:
    """The plain reference's training loop (dynamic binarization, shuffled batches, Adam on
    the per-datapoint loss), resumable: :meth:`save` / :meth:`load` keep the weights, the
    optimizer and schedule, the generators (its own two and torch's global ones, which draw
    the noise) and the epoch, so a run continued from its state ends where the run done in
    one go ends."""

    def __init__(self, plain: PlainVAE, probs: torch.Tensor, spec: str, *, batch_size: int,
                 lr: float, seed: int, schedule: bool):
        self.plain, self.probs, self.batch_size = plain, probs, batch_size
        self.name, self.k = plain_estimator(spec)
        self.optimizer = torch.optim.Adam(plain.parameters(), lr=lr, eps=1e-4)
        self.scheduler = burda_schedule(self.optimizer) if schedule else None
        self.generator = torch.Generator(device=probs.device).manual_seed(seed)
        self.order_generator = torch.Generator().manual_seed(seed)
        self.epoch, self.seconds = 0, 0.0

    def train_to(self, epochs: int) -> None:
        """Train until ``epochs`` epochs are done; the seconds add up in ``self.seconds``."""
        probs, batch_size = self.probs, self.batch_size
        self.plain.train()
        start = time.perf_counter()
        while self.epoch < epochs:
            order = torch.randperm(len(probs), generator=self.order_generator).to(
                probs.device)
            for first in range(0, len(probs), batch_size):
                x = torch.bernoulli(probs[order[first:first + batch_size]],
                                    generator=self.generator)
                self.optimizer.zero_grad(set_to_none=True)
                self.plain.loss(x, self.name, self.k).backward()
                self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.epoch += 1
        synchronize(probs.device)
        self.seconds += time.perf_counter() - start

    def state_dict(self) -> dict:
        return {"model": self.plain.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "order_generator": self.order_generator.get_state(),
                # the reparameterisation noise comes from torch's global generators
                "rng": torch.get_rng_state(),
                "cuda_rng": (torch.cuda.get_rng_state(self.probs.device)
                             if self.probs.device.type == "cuda" else None),
                "epoch": self.epoch, "seconds": self.seconds}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(self.state_dict(), partial)
        os.replace(partial, path)

    def load(self, path: Path) -> None:
        state = torch.load(path, weights_only=True)
        self.plain.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.order_generator.set_state(state["order_generator"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.probs.device)
        self.epoch, self.seconds = state["epoch"], state["seconds"]


def train_plain(plain: PlainVAE, probs: torch.Tensor, spec: str, *, epochs: int,
                batch_size: int, lr: float, seed: int, schedule: bool) -> float:
    """Train the plain reference for ``epochs`` epochs; returns seconds."""
    run = PlainRun(plain, probs, spec, batch_size=batch_size, lr=lr, seed=seed,
                   schedule=schedule)
    run.train_to(epochs)
    return run.seconds


def train_pyro_vae(model, train, spec: str, *, epochs: int, args, device,
                   checkpoints: CheckpointFiles | None = None):
    """pyro-vae's fit of the benchmark's schedule (fit's default step: compiled here)."""
    return fit(model, train, estimator=spec, epochs=epochs, batch_size=args.batch_size,
               lr=args.lr, seed=args.seed, device=device, quiet=True,
               monitor=Monitoring(size=500), checkpoints=checkpoints,
               optimizer=Optimization(
                   lambda params: torch.optim.Adam(params, lr=args.lr, eps=1e-4),
                   lr_schedule=burda_schedule if args.burda_schedule else None))


# ---- learning curves ----------------------------------------------------------------------

CURVE_FIELDS = ["estimator", "implementation", "epoch", "test_nll", "eval_samples",
                "test_points", "train_seconds", "eval_seconds", "date"]


def _slug(spec: str) -> str:
    return spec.replace(":", "-").replace("=", "")


def read_curve(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _append_curve(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def run_curves(args, device, train, probs, test) -> None:
    """Train every model to each of ``args.eval_epochs`` in turn (all models to the first,
    then to the second, ...), judging each there; done judgements are skipped, so the same
    command continues an interrupted run."""
    root = Path(args.curve)
    root.mkdir(parents=True, exist_ok=True)
    curve = root / "curve.csv"
    done = {(row["estimator"], row["implementation"], int(row["epoch"]))
            for row in read_curve(curve)}
    for row in read_curve(curve):
        if int(row["test_points"]) != len(test) or int(row["eval_samples"]) != args.eval_samples:
            raise SystemExit(f"{curve} holds judgements on {row['test_points']} test points "
                             f"with K={row['eval_samples']}; this command asks for "
                             f"{len(test)} and K={args.eval_samples}. Use another --curve "
                             "directory, or the same settings.")
    for epoch in sorted(set(args.eval_epochs)):
        for spec in args.estimators:
            implementations = (["pyro-vae"] + (["plain"] if spec in args.plain_for else [])
                               + ([TWO_LAYER] if spec in args.two_layer_for else []))
            for implementation in implementations:
                if (spec, implementation, epoch) in done:
                    continue
                suffix = {"plain": "-plain", TWO_LAYER: "-2layer"}.get(implementation, "")
                directory = root / (_slug(spec) + suffix)
                torch.manual_seed(args.seed)
                model = (pv.HierarchicalVAE(784, TWO_LAYERS, hidden=HIDDEN, activation="tanh")
                         if implementation == TWO_LAYER
                         else pv.VAE(784, Z_DIM, hidden=HIDDEN, activation="tanh"))
                if implementation != "plain":
                    resume = (directory / "checkpoint.pt").is_file()
                    result = train_pyro_vae(
                        model, train, spec, epochs=epoch, args=args, device=device,
                        checkpoints=CheckpointFiles(directory, resume=resume))
                    seconds, judged = result.seconds, model
                    started = time.perf_counter()
                    nll = -log_likelihood(model, test, args.eval_samples,
                                          seed=args.seed).mean().item()
                else:
                    plain = PlainVAE.from_vae(model, HIDDEN, "tanh").to(device)
                    run = PlainRun(plain, probs, spec, batch_size=args.batch_size, lr=args.lr,
                                   seed=args.seed, schedule=args.burda_schedule)
                    state = directory / "plain.pt"
                    if state.is_file():
                        run.load(state)
                    run.train_to(epoch)
                    run.save(state)
                    seconds, judged = run.seconds, plain
                    started = time.perf_counter()
                    torch.manual_seed(args.seed)
                    judged.eval()
                    nll = -plain_log_likelihood(plain, test, args.eval_samples,
                                                2 ** 12).mean().item()
                row = {"estimator": spec, "implementation": implementation, "epoch": epoch,
                       "test_nll": f"{nll:.4f}", "eval_samples": args.eval_samples,
                       "test_points": len(test), "train_seconds": f"{seconds:.1f}",
                       "eval_seconds": f"{time.perf_counter() - started:.1f}",
                       "date": datetime.datetime.now().isoformat(timespec="seconds")}
                _append_curve(curve, row)
                print(f"curve     {spec} {implementation} epoch {epoch}: -log p(x) {nll:.2f} "
                      f"nats ({seconds:.0f} s training so far, {row['eval_seconds']} s "
                      "judging)", flush=True)


def plot_curves(curve: Path, figure: Path) -> Path:
    """Test -log p(x) against epoch from ``curve`` (csv), the published values as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_curve(curve)
    if not rows:
        raise SystemExit(f"{curve} holds no judgements yet; run the --curve command first")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(PUBLISHED, ["C0", "C1", "C2"], strict=True))
    for spec, (label, published) in PUBLISHED.items():
        for implementation, style in (("pyro-vae", "o-"), ("plain", "s--")):
            points = sorted((int(r["epoch"]), float(r["test_nll"])) for r in rows
                            if r["estimator"] == spec and r["implementation"] == implementation)
            if points:
                ax.plot(*zip(*points, strict=True), style, color=colors[spec],
                        label=f"{label}, {implementation}", alpha=1 if implementation ==
                        "pyro-vae" else 0.6)
        ax.axhline(published, color=colors[spec], linestyle=":", linewidth=1,
                   label=f"{label}: {published:.2f}, Burda et al. (3,280 epochs)")
    for spec, (label, published) in PUBLISHED_TWO_LAYER.items():
        points = sorted((int(r["epoch"]), float(r["test_nll"])) for r in rows
                        if r["estimator"] == spec and r["implementation"] == TWO_LAYER)
        if points:
            ax.plot(*zip(*points, strict=True), "^-", color="C3", label=f"{label}, pyro-vae")
            ax.axhline(published, color="C3", linestyle=":", linewidth=1,
                       label=f"{label}: {published:.2f}, Burda et al. (3,280 epochs)")
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test -log p(x), nats (K = {rows[0]['eval_samples']})")
    ax.set_title(f"MNIST, Burda et al. 2015 architecture, {rows[0]['test_points']} test images")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    return figure


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
    parser.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    parser.add_argument("--curve", metavar="DIR", default=None,
                        help="learning-curve mode: checkpointed runs and DIR/curve.csv")
    parser.add_argument("--eval-epochs", nargs="+", type=int, default=[1, 4, 13, 40, 121],
                        help="curve mode: the epochs at which to judge (default: the ends of "
                             "Burda et al.'s first five stages)")
    parser.add_argument("--plain-for", nargs="*", default=["elbo"], choices=list(PUBLISHED),
                        help="curve mode: models the plain reference also trains (default elbo)")
    parser.add_argument("--two-layer-for", nargs="*", default=[], choices=list(PUBLISHED),
                        help="curve mode: estimators that also train the two-layer model of "
                             "Table 1 (e.g. iwae:k=50)")
    parser.add_argument("--plot", action="store_true",
                        help="curve mode: draw DIR/curve.csv to --figure and stop")
    parser.add_argument("--figure", default="benchmarks/mnist_curve.png")
    args = parser.parse_args(argv)
    if args.plot:
        if args.curve is None:
            raise SystemExit("--plot draws the curves of a --curve DIR; pass it")
        print(f"wrote {plot_curves(Path(args.curve) / 'curve.csv', Path(args.figure))}")
        return
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
          f"{' with Burda schedule' if args.burda_schedule else ''}, batch {args.batch_size}, "
          + (f"judged at epochs {sorted(set(args.eval_epochs))}" if args.curve
             else f"{args.epochs} epoch(s)"))
    print(f"judged    -log p(x) by importance sampling, K={args.eval_samples}, nats "
          "(lower is better)")
    print()
    if args.curve is not None:
        run_curves(args, device, train, probs.to(device), test)
        return
    rows = []
    for spec in args.estimators:
        torch.manual_seed(args.seed)
        model = pv.VAE(784, Z_DIM, hidden=HIDDEN, activation="tanh")
        plain = PlainVAE.from_vae(model, HIDDEN, "tanh").to(device)
        start = time.perf_counter()
        result = train_pyro_vae(model, train, spec, epochs=args.epochs, args=args,
                                device=device)
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
