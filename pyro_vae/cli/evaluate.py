"""``pyro-vae evaluate RUN``: importance-sampled log-likelihood, ELBO terms and active units
of a trained run on one split, merged into RUN/metrics.json (other keys are kept)."""

from __future__ import annotations

import argparse

from pyro_vae.cli.common import (
    add_run_arguments,
    add_split_argument,
    open_run_and_model,
    positive_int,
)

HELP = "importance-sampled log p(x), ELBO terms and active units of a run -> metrics.json"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("evaluate", help=HELP, description=HELP + ".")
    add_run_arguments(parser, "seed of the importance samples (default: the run's seed)")
    parser.add_argument("--num-samples", "-k", type=positive_int, default=5000, metavar="K",
                        help="importance samples per datapoint (default 5000, Burda et al.)")
    add_split_argument(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from pyro_vae.runs import METRICS_FILE, evaluate_split, summary_table
    run_dir, model, dataset = open_run_and_model(args)
    seed = run_dir.config["seed"] if args.seed is None else args.seed
    summary = evaluate_split(model, dataset, args.split, args.num_samples, seed, args.device)
    run_dir.update_metrics({args.split: summary})
    print(summary_table(run_dir))
    print(f"updated    {run_dir.path / METRICS_FILE} [{args.split!r}] (K={args.num_samples}, "
          f"{summary['num_datapoints']} points, {summary['seconds']:.1f} s)")
    return 0
