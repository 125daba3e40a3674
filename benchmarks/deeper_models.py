"""Deeper models at one budget: the one-layer VAE, the hierarchical VAE (bottom-up and
top-down guides; the top-down one also with free bits, which keeps it from collapsing) and
the Bayesian decoder, each trained by ``pyro-vae train`` with the same networks, optimiser
and epochs (the ELBO, free bits where named), judged by test log p(x) with K = 5000.

Each model is one run directory under ``--out``; a finished run (``metrics.json`` with a
test log p(x)) is not trained again, so the same command continues an interrupted table.
For the Bayesian decoder log p(x) is the posterior predictive density (a fresh decoder
W ~ q(W) per particle; see docs/models.md).

    python benchmarks/deeper_models.py --dataset digits --out benchmarks/results/digits_deeper
    python benchmarks/deeper_models.py --dataset mnist --data-dir DIR --epochs 10 \\
        --hidden 200,200 --z-dim 50 --layers 100,50 --batch-size 100 --lr 1e-3 \\
        --out benchmarks/results/mnist_deeper
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

#: run name -> (label, the flags that make it differ from the others)
MODELS = {
    "vae": ("VAE, one layer", ["--model", "vae"]),
    "hvae_bu": ("hierarchical, bottom-up", ["--model", "hvae", "--hvae-guide", "bottom_up"]),
    "hvae_td": ("hierarchical, top-down", ["--model", "hvae", "--hvae-guide", "top_down"]),
    "hvae_td_freebits": ("hierarchical, top-down, free bits 0.25",
                         ["--model", "hvae", "--hvae-guide", "top_down",
                          "--estimator", "freebits:lambda=0.25"]),
    "bayes_decoder": ("Bayesian decoder", ["--model", "bayesian_decoder"]),
}


def command(args, name: str) -> list[str]:
    shared = ["--dataset", args.dataset, "--epochs", str(args.epochs), "--hidden", args.hidden,
              "--activation", "tanh", "--z-dim", str(args.z_dim), "--layers", args.layers,
              "--batch-size", str(args.batch_size), "--lr", str(args.lr),
              "--eval-samples", str(args.eval_samples), "--threads", str(args.threads),
              "--no-figures", "--out", str(Path(args.out) / name)]
    if args.data_dir:
        shared += ["--data-dir", args.data_dir]
    if args.binarize:
        shared += ["--binarize", args.binarize]
    return [sys.executable, "-m", "pyro_vae", "train", *MODELS[name][1], *shared]


def finished(run: Path) -> dict | None:
    metrics = run / "metrics.json"
    if not metrics.is_file():
        return None
    test = json.loads(metrics.read_text()).get("test")
    return test if test and test.get("log_likelihood") is not None else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--binarize", default=None, help="default: the dataset's own")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--z-dim", type=int, default=8, help="VAE, Bayesian decoder")
    parser.add_argument("--layers", default="8,4", help="hierarchical: z_1,z_2 sizes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in args.models:
        run = Path(args.out) / name
        if finished(run):
            continue
        cmd = command(args, name)
        print("$", " ".join(cmd[1:]), flush=True)
        with open(Path(args.out) / f"{name}.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"\ntest log p(x), K={args.eval_samples}, nats per datapoint ({args.dataset}, "
          f"{args.epochs} epochs, hidden {args.hidden}, tanh, batch {args.batch_size}, "
          f"lr {args.lr})\n")
    print("| model | test log p(x) | test ELBO | KL | per layer | training s |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        test = finished(Path(args.out) / name)
        if test is None:
            continue
        history = json.loads((Path(args.out) / name / "metrics.json").read_text())
        seconds = history.get("run", {}).get("training_seconds", float("nan"))
        layers = test.get("layers") or {}
        per_layer = ", ".join(f"{site} KL {layer['kl']:.2f} ({layer['active_units']}/"
                              f"{layer['size']} active)" for site, layer in layers.items())
        if test.get("weight_kl") is not None:
            per_layer = f"KL(q(W)‖p(W)) {test['weight_kl']:.0f} nats in all"
        print(f"| {MODELS[name][0]} | {test['log_likelihood']:.2f} | {test['elbo']:.2f} | "
              f"{test['kl']:.2f} | {per_layer or '-'} | {seconds} |")


if __name__ == "__main__":
    main()
