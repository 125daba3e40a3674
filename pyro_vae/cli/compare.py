"""``pyro-vae compare``: one model, one dataset, one budget, several estimators and seeds.

The model and the data are described by the options of ``pyro-vae train`` (data and model
flags, plus batch size, learning rate, optimizer, beta and clipping); the comparison by its
own flags. Every estimator starts from the same initial parameters for a seed and sees the
same minibatch order, and every fit is judged on the same test points with the same K (see
:func:`pyro_vae.compare`). ``--config FILE`` is a TOML file of either kind of key; flags
override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae.cli.common import argument_type, int_list, positive_int
from pyro_vae.cli.train import add_option_flags, collect_overrides
from pyro_vae.inference.diagnostics import MIN_KHAT_SAMPLES
from pyro_vae.inference.estimators import parse_estimator
from pyro_vae.runs.config import OPTIONS, ConfigError, read_config_file, resolve_config

HELP = ("compare gradient estimators on one model under one budget: table of test "
        "log-likelihood, ELBO, KL, active units, time, memory and k-hat; learning curves")

#: the options of ``pyro-vae train`` that describe the model, the data and the optimisation
MODEL_OPTIONS = [name for name, option in OPTIONS.items() if option.group in ("data", "model")
                 ] + ["batch_size", "lr", "optimizer", "beta", "beta_warmup_epochs",
                      "clip_norm", "device"]
#: the comparison's own settings (keys of a --config file, and flags)
COMPARE_SETTINGS = ("estimators", "seeds", "epochs", "max_seconds", "test_points",
                    "eval_samples", "elbo_particles", "eval_seed", "khat_samples",
                    "khat_points", "validation", "save_models")
#: options of a training run that a comparison sets itself (or does not use)
RUN_ONLY = ("estimator", "epochs", "max_seconds", "seed", "checkpoint_every", "eval_samples",
            "figures")
DEFAULT_ESTIMATORS = ["elbo", "meanfield", "iwae:k=5", "iwae:k=50"]


_non_negative_int = argument_type(int, lambda value: value >= 0, "an integer >= 0")
_positive_float = argument_type(float, lambda value: value > 0,
                                "a positive number of seconds")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare", help=HELP, description=HELP + ". Writes DIR/comparison.md, summary.csv, "
        "runs.csv, curves.csv, comparison.json, curves.png, khat.png and config.json.")
    parser.add_argument("--config", metavar="FILE", help="TOML file of model/data options "
                        "(as in pyro-vae train) and comparison settings (estimators = [...], "
                        "seeds = [...], epochs = N, ...)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: "
                        "runs/compare-<dataset>-<time>); existing outputs are never replaced "
                        "unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an "
                        "earlier comparison in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    group = parser.add_argument_group("comparison")
    group.add_argument("--estimators", nargs="+", metavar="SPEC", default=None,
                       help=f"estimator specs, e.g. elbo meanfield iwae:k=5 "
                       f"'renyi:alpha=0.5,k=5'; default {' '.join(DEFAULT_ESTIMATORS)}")
    group.add_argument("--seeds", type=int_list, metavar="N[,N...]", default=None,
                       help="seeds; each gives every estimator the same start; default 0,1,2")
    group.add_argument("--epochs", type=positive_int, default=None,
                       help="budget: epochs per run")
    group.add_argument("--max-seconds", type=_positive_float, default=None, metavar="S",
                       help="budget: wall-clock seconds of training per run (with --epochs, "
                       "whichever ends first)")
    group.add_argument("--test-points", type=positive_int, default=None, metavar="N",
                       help="judge on the first N test points (default: all)")
    group.add_argument("--eval-samples", type=positive_int, default=None, metavar="K",
                       help="importance samples K per test point for log p(x), the same for "
                       "every estimator; default 1000")
    group.add_argument("--elbo-particles", type=positive_int, default=None, metavar="N",
                       help="draws for the test ELBO; default 10")
    group.add_argument("--eval-seed", type=int, default=None, help="seed of the evaluation "
                       "draws; default 0")
    group.add_argument("--khat-samples", type=_non_negative_int, default=None, metavar="K",
                       help="draws per point for PSIS k-hat (0 skips it); default 1000")
    group.add_argument("--khat-points", type=positive_int, default=None, metavar="N",
                       help="test points for k-hat; default 500")
    group.add_argument("--validation", action=argparse.BooleanOptionalAction, default=None,
                       help="monitor the validation split for the learning curves; default on")
    group.add_argument("--save-models", action=argparse.BooleanOptionalAction, default=None,
                       help="write DIR/models/<estimator>_seed<s>.pt")
    add_option_flags(parser, {name: OPTIONS[name] for name in MODEL_OPTIONS})
    return parser


def resolve_comparison(args: argparse.Namespace) -> tuple[dict, dict]:
    """(model configuration, comparison settings): defaults < ``--config`` file < flags."""
    file_values = read_config_file(args.config) if args.config else {}
    unknown = sorted(set(file_values) - set(MODEL_OPTIONS) - set(COMPARE_SETTINGS))
    if unknown:
        raise ConfigError(f"{args.config}: unknown keys {unknown} for pyro-vae compare; valid "
                          f"keys are the comparison settings {list(COMPARE_SETTINGS)} and the "
                          f"model/data options {MODEL_OPTIONS}")
    overrides = {k: v for k, v in collect_overrides(args).items() if k in MODEL_OPTIONS}
    for name, value in overrides.items():
        if OPTIONS[name].kind == "table" and isinstance(file_values.get(name), dict):
            overrides[name] = {**file_values[name], **value}
    config = resolve_config({k: v for k, v in file_values.items() if k in MODEL_OPTIONS},
                            overrides)
    settings = {"estimators": DEFAULT_ESTIMATORS}
    settings.update({k: v for k, v in file_values.items() if k in COMPARE_SETTINGS})
    settings.update({k: getattr(args, k) for k in COMPARE_SETTINGS
                     if getattr(args, k, None) is not None})
    for spec in settings["estimators"]:
        try:
            parse_estimator(spec)
        except ValueError as error:
            raise ConfigError(f"--estimators: {error}") from None
    seeds = settings.get("seeds", [0])
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct; got {seeds}")
    if settings.get("khat_samples") == 0:
        settings["khat_samples"] = None
    if settings.get("khat_samples") is not None and settings["khat_samples"] < MIN_KHAT_SAMPLES:
        raise ConfigError(f"--khat-samples must be 0 (no k-hat) or at least {MIN_KHAT_SAMPLES}"
                          f" (1000 or more is advisable); got {settings['khat_samples']}")
    if settings.get("epochs") is None and settings.get("max_seconds") is None:
        raise ConfigError("pyro-vae compare needs a budget: --epochs N, --max-seconds S "
                          "(wall-clock seconds of training per run), or both")
    return config, settings


def run(args: argparse.Namespace) -> int:
    from pyro_vae.runs import ModelFactory, default_run_dir, load_data
    from pyro_vae.runs.builders import evaluation_labels, training_data
    from pyro_vae.studies.comparison import run_comparison
    config, settings = resolve_comparison(args)
    out = Path(args.out) if args.out else default_run_dir(config, prefix="compare-")
    dataset = load_data(config)
    settings.update(
        dataset=config["dataset"],
        model=ModelFactory({k: v for k, v in config.items() if k not in RUN_ONLY}, dataset),
        batch_size=config["batch_size"], lr=config["lr"], optimizer=config["optimizer"],
        device=config["device"],
        fit_options={"beta": config["beta"], "beta_warmup_epochs": config["beta_warmup_epochs"],
                     "clip_norm": config["clip_norm"] or None})

    def progress(run) -> None:
        m = run.metrics
        print(f"{run.estimator:>22s}  seed {run.seed}:  test log p(x) {m['log_likelihood']:9.3f}"
              f"  ELBO {m['elbo']:9.3f}  {m['epochs']:.1f} epochs in {run.train_seconds:.1f} s",
              flush=True)

    probe = settings["model"](0)
    try:
        result, written = run_comparison(settings, out, dataset=dataset,
                                         train_data=training_data(config, dataset),
                                         test_labels=evaluation_labels(probe, dataset, "test"),
                                         overwrite=args.overwrite, quiet=args.quiet,
                                         progress=progress)
    except FileExistsError as error:   # checked before any training
        raise ConfigError(str(error)) from None
    print()
    print((out / "comparison.md").read_text())
    print(f"written    {', '.join(sorted({p.name for p in written.values()}))} in {out}")
    return 0
