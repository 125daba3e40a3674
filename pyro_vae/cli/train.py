"""``pyro-vae train``: fit a model and write a run directory.

Every configuration option (:data:`pyro_vae.runs.config.OPTIONS`) is a flag; ``--config FILE``
reads a TOML file of the same options; flags override the file, the file overrides the
defaults. Table options (``data_options``, ``prior_options``, ...) take repeated
``--data-option KEY=VALUE``.
"""

from __future__ import annotations

import argparse

from pyro_vae.cli.common import int_list
from pyro_vae.runs.config import (
    OPTIONS,
    ConfigError,
    Option,
    parse_key_values,
    read_config_file,
    resolve_config,
)

HELP = "fit a model and write a run directory (config, history, metrics, model, figures)"


def _flag(option: Option) -> str:
    if option.kind == "table":
        return "--" + option.name.removesuffix("s").replace("_", "-")
    return option.flag


def _help(option: Option) -> str:
    text = option.help
    if option.choices is not None:
        text += f" ({', '.join(option.choices())})"
    if option.kind != "table" and option.default != "":
        default = option.default
        if option.kind == "int_list":
            default = ",".join(map(str, default))
        elif option.kind == "bool":
            default = "on" if default else "off"
        text += f"; default {default!r}" if isinstance(default, str) else f"; default {default}"
    return text.replace("%", "%%")


def add_option_flags(parser: argparse.ArgumentParser, options=None) -> None:
    """One flag per configuration option, in argument groups; every default is None (unset),
    so :func:`collect_overrides` can tell given flags from defaults."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in (options or OPTIONS).values():
        group = groups.setdefault(option.group, parser.add_argument_group(option.group))
        kwargs = {"dest": option.name, "default": None, "help": _help(option)}
        if option.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif option.kind == "table":
            kwargs.update(action="append", metavar="KEY=VALUE")
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str,
                              "int_list": int_list}[option.kind]
            kwargs["metavar"] = option.metavar or {"int": "N", "float": "X", "str": "NAME",
                                                   "int_list": "N[,N...]"}[option.kind]
        group.add_argument(_flag(option), **kwargs)


def collect_overrides(args: argparse.Namespace) -> dict:
    """The options given on the command line (flags left unset are absent)."""
    overrides = {}
    for name, option in OPTIONS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if option.kind == "table":
            value = parse_key_values(value, _flag(option))
        overrides[name] = value
    return overrides


def resolve_args(args: argparse.Namespace) -> dict:
    """Defaults < ``--config`` file < flags; table flags extend the file's tables."""
    file_values = read_config_file(args.config) if args.config else {}
    overrides = collect_overrides(args)
    for name, option in OPTIONS.items():
        if option.kind == "table" and name in overrides and isinstance(file_values.get(name),
                                                                        dict):
            overrides[name] = {**file_values[name], **overrides[name]}
    return resolve_config(file_values, overrides)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help=HELP, description=HELP + ". Flags override --config, which overrides "
        "the defaults; the resolved configuration is written to RUN/config.toml.")
    parser.add_argument("--config", metavar="FILE", help="TOML file of options (as in a run's "
                        "config.toml)")
    parser.add_argument("--out", metavar="DIR", help="run directory to create (default: "
                        "runs/<dataset>-<time>); must not exist or be empty")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in an "
                        "existing run directory --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its "
                        "checkpoint (bit for bit on CPU); only --epochs, --max-seconds, "
                        "--device, --eval-samples, --figures, --checkpoint-every and --threads may "
                        "change")
    parser.add_argument("--distributed", action="store_true", help="train with every process "
                        "torchrun starts: torchrun --standalone --nproc_per_node=N -m pyro_vae "
                        "train --distributed ...; --batch-size is the global batch")
    add_option_flags(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from pyro_vae.distributed import is_rank_zero
    from pyro_vae.runs import summary_table, train_run
    if args.resume is not None:
        if args.out is not None or args.overwrite:
            raise ConfigError("--resume RUN continues RUN in place; drop --out/--overwrite")
        # only what the command line (and --config) asks to change; the run has the rest
        changes = read_config_file(args.config) if args.config else {}
        changes.update(collect_overrides(args))
        trained = train_run(changes, resume=args.resume, quiet=args.quiet,
                            distributed=args.distributed)
    else:
        trained = train_run(resolve_args(args), args.out, overwrite=args.overwrite,
                            quiet=args.quiet, distributed=args.distributed)
    if not is_rank_zero():
        return 0
    print(summary_table(trained))
    figures = trained.figures
    if figures:
        print(f"figures    {', '.join(p.name for p in figures)} in {trained.path / 'figures'}")
    print(f"next       pyro-vae evaluate {trained.path} --num-samples 5000 | pyro-vae sample "
          f"{trained.path} -n 64 | pyro-vae reconstruct {trained.path}")
    return 0
