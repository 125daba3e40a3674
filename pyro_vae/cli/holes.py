"""``pyro-vae holes``: the "filling the holes" study in one command.

Fits a plain autoencoder and a VAE per beta (default 0, 1, 4) for several seeds on one
dataset and writes ``holes_study.md`` (hole fractions, reconstruction and KL as mean and sd
over seeds, the beta sweep, the closed-form vs Monte Carlo KL check, the measures on
constructed configurations and the verdict on the trend), ``holes_study.json`` and the 2 x 4
``holes_figure.png`` (see :func:`pyro_vae.run_holes_study`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae.cli.common import argument_type, int_list, positive_int
from pyro_vae.cli.train import add_option_flags, collect_overrides
from pyro_vae.runs.config import OPTIONS, ConfigError, parse_key_values, resolve_config

HELP = ("the holes study: autoencoder vs VAEs with beta = 0, 1, 4 over seeds; hole fractions, "
        "reconstruction, KL, KL check and the 2 x 4 figure")

DATA_OPTIONS = [name for name, option in OPTIONS.items() if option.group == "data"]


_number_list = argument_type(
    lambda text: [float(part) for part in text.replace(",", " ").split()],
    lambda values: bool(values) and all(v >= 0 for v in values),
    "comma-separated numbers >= 0 such as 0,1,4")


def _sweep(text: str) -> list[float] | None:
    return None if text.strip().lower() == "none" else _number_list(text)


_fraction = argument_type(float, lambda value: 0 < value < 1, "a number between 0 and 1")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "holes", help=HELP, description=HELP + ". Writes holes_study.md, holes_study.json "
        "and holes_figure.png into --out.")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: "
                        "runs/holes-<dataset>-<time>); existing results are never replaced")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    study = parser.add_argument_group("study")
    study.add_argument("--betas", type=_number_list, default=[0.0, 1.0, 4.0], metavar="B[,B...]",
                       help="KL weights of the VAEs; default 0,1,4")
    study.add_argument("--autoencoder", action=argparse.BooleanOptionalAction, default=True,
                       help="include the plain autoencoder (Delta guide); default on")
    study.add_argument("--seeds", type=int_list, default=[0, 1, 2], metavar="N[,N...]",
                       help="seeds; default 0,1,2")
    study.add_argument("--z-dim", type=positive_int, default=2, help="latent dimensions; "
                       "default 2")
    study.add_argument("--hidden", type=int_list, default=[256, 256], metavar="N[,N...]",
                       help="hidden layer widths; default 256,256")
    study.add_argument("--epochs", type=positive_int, default=100, help="default 100")
    study.add_argument("--batch-size", type=positive_int, default=128, help="default 128")
    study.add_argument("--lr", type=float, default=1e-3, help="default 0.001")
    study.add_argument("--estimator", default="meanfield", metavar="SPEC",
                       help="default 'meanfield' (analytic KL)")
    study.add_argument("--likelihood", default=None, help="default: the dataset's suggestion")
    study.add_argument("--likelihood-option", action="append", metavar="KEY=VALUE",
                       dest="likelihood_options", help="options of the likelihood")
    study.add_argument("--sweep-betas", type=_sweep, default=[0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
                       metavar="B[,B...]|none", help="betas of the trade-off panel (first seed "
                       "only); 'none' skips; default 0,0.25,0.5,1,2,4,8")
    study.add_argument("--num-draws", type=positive_int, default=2000,
                       help="draws per hole fraction; default 2000")
    study.add_argument("--alpha", type=_fraction, default=None,
                       help="calibration level: the hole fraction of a model without holes; "
                       "default 0.05")
    study.add_argument("--naive-threshold", type=float, default=0.5,
                       help="distance threshold of the naive measure (latent units); "
                       "default 0.5")
    study.add_argument("--data-distance", choices=["likelihood", "euclidean"],
                       default="likelihood", help="data-space distance; default likelihood")
    study.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_option_flags(parser, {name: OPTIONS[name] for name in DATA_OPTIONS})
    return parser


def run(args: argparse.Namespace) -> int:
    from pyro_vae.runs import default_run_dir, load_data
    from pyro_vae.studies.holes import holes_study_files, run_holes_study
    config = resolve_config({}, {k: v for k, v in collect_overrides(args).items()
                                 if k in DATA_OPTIONS})
    resolve_config({}, {"device": args.device, "estimator": args.estimator,   # checked early
                        "likelihood": args.likelihood or "auto"})
    out = Path(args.out) if args.out else default_run_dir(config, prefix="holes-")
    try:
        holes_study_files(out)
    except FileExistsError as error:
        raise ConfigError(f"{error} (--out)") from None
    dataset = load_data(config)
    likelihood_options = (parse_key_values(args.likelihood_options, "--likelihood-option")
                          if args.likelihood_options else None)
    options = {} if args.alpha is None else {"alpha": args.alpha}
    result = run_holes_study(
        dataset, betas=args.betas, include_autoencoder=args.autoencoder, seeds=args.seeds,
        z_dim=args.z_dim, hidden=args.hidden, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, estimator=args.estimator, likelihood=args.likelihood,
        likelihood_options=likelihood_options, sweep_betas=args.sweep_betas,
        num_draws=args.num_draws, naive_threshold=args.naive_threshold,
        data_distance=args.data_distance, device=args.device, quiet=args.quiet, out_dir=out,
        **options)
    print(result.to_markdown())
    print(f"written    holes_study.md, holes_study.json, holes_figure.png in {out}")
    return 0
