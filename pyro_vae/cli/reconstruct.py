"""``pyro-vae reconstruct RUN``: datapoints beside their reconstructions E[x | E_q[z|x]].

Writes ``RUN/reconstructions-<split>-n<N>.npz`` (``x``, ``reconstruction``, ``z`` =
E_q[z|x], ``index`` of the rows) and the matching figure under ``RUN/figures/``, and prints
the mean squared error and the reconstruction term E_q log p(x|z) of those points.
"""

from __future__ import annotations

import argparse

import torch

from pyro_vae.cli.common import (
    add_run_arguments,
    add_split_argument,
    open_run_and_model,
    positive_int,
    save_arrays,
)

HELP = "reconstruct N datapoints of a split (npz and figure) and report the error"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("reconstruct", help=HELP, description=HELP + ".")
    add_run_arguments(parser, "seed choosing the datapoints (default 0)")
    parser.add_argument("-n", "--num", type=positive_int, default=20, metavar="N",
                        help="number of datapoints (default 20)")
    add_split_argument(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from pyro_vae import plots
    from pyro_vae.inference import elbo_terms
    from pyro_vae.runs import FIGURES_DIR
    run_dir, model, dataset = open_run_and_model(args)
    seed = 0 if args.seed is None else args.seed
    data = dataset.tensor(args.split) if args.split != "train" else dataset.split("train")
    n = min(args.num, len(data))
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    torch.manual_seed(seed)
    x = data[index].to(next(model.parameters()))
    z, reconstruction = model.encode(x), model.reconstruct(x)
    recon_term = elbo_terms(model, (x,), num_particles=10)["recon"].mean().item()
    mse = ((x - reconstruction) ** 2).mean().item()
    stem = f"reconstructions-{args.split}-n{n}-seed{seed}"
    arrays_path = run_dir.path / f"{stem}.npz"
    save_arrays(arrays_path, x=x.cpu().numpy(), reconstruction=reconstruction.cpu().numpy(),
                z=z.cpu().numpy(), index=index.numpy())
    shape = dataset.feature_shape if dataset.kind == "image" else None
    figure = plots.plot_reconstructions(model, x, shape, dataset.info.get("feature_names"))
    [figure_path] = plots.save_figures({stem: figure}, run_dir.path / FIGURES_DIR)
    print(f"{n} {args.split} points: mean squared error {mse:.4f} per feature, "
          f"E_q log p(x|z) = {recon_term:.2f} nats per datapoint (10 draws)")
    print(f"wrote      {arrays_path}")
    print(f"wrote      {figure_path}")
    return 0
