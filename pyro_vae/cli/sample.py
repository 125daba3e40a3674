"""``pyro-vae sample RUN -n N``: draws from the fitted generative model.

Writes ``RUN/samples-n<N>-seed<S>.npz`` with ``z`` (z ~ p(z)), ``mean`` (E[x|z]) and ``x``
(one draw x ~ p(x|z)), and a figure (an image grid, or a pair plot against the test data
for tabular data) under ``RUN/figures/``. The same N and seed give the same files.
"""

from __future__ import annotations

import argparse

import torch

from pyro_vae.cli.common import add_run_arguments, open_run_and_model, positive_int, save_arrays

HELP = "draw N samples from the fitted model (npz of z, E[x|z], x) and a figure"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("sample", help=HELP, description=HELP + ".")
    add_run_arguments(parser, "seed of the draws (default 0)")
    parser.add_argument("-n", "--num", type=positive_int, default=64, metavar="N",
                        help="number of samples (default 64)")
    return parser


def run(args: argparse.Namespace) -> int:
    from pyro_vae import plots
    from pyro_vae.runs import FIGURES_DIR
    run_dir, model, dataset = open_run_and_model(args)
    seed = 0 if args.seed is None else args.seed
    torch.manual_seed(seed)
    z = model.sample_latent(args.num)
    mean, x = model.decode(z), model.sample_observations(z)
    stem = f"samples-n{args.num}-seed{seed}"
    arrays_path = run_dir.path / f"{stem}.npz"
    save_arrays(arrays_path, z=z.cpu().numpy(), mean=mean.cpu().numpy(), x=x.cpu().numpy())
    if dataset.kind == "image":
        figure = plots.plot_samples(model, args.num, dataset.feature_shape, seed=seed)
    else:
        figure = plots.plot_sample_pairs(model, dataset.test, args.num,
                                         dataset.info.get("pair_features"),
                                         dataset.info.get("feature_names"), seed=seed)
    [figure_path] = plots.save_figures({stem: figure}, run_dir.path / FIGURES_DIR)
    print(f"wrote      {arrays_path} (z {tuple(z.shape)}, mean and x {tuple(x.shape)})")
    print(f"wrote      {figure_path}")
    return 0
