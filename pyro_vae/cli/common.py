"""Arguments and helpers shared by the subcommands that read a run directory."""

from __future__ import annotations

import argparse

import numpy as np

from pyro_vae.io import atomic_write


def argument_type(convert, accept, expected: str):
    """An argparse type: ``convert(text)``, kept when ``accept(value)``; anything else is
    "expected EXPECTED; got TEXT"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value
    return parse


positive_int = argument_type(int, lambda value: value >= 1, "a positive integer")


def int_list(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0 1 2"`` -> ``[0, 1, 2]`` (an argparse type)."""
    from pyro_vae.runs.config import ConfigError, parse_int_list
    try:
        values = parse_int_list(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 512,256; "
                                         f"got {text!r}")
    return values


def add_run_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """RUN, --device and --seed."""
    parser.add_argument("run_dir", metavar="RUN", help="run directory written by pyro-vae "
                        "train")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto; "
                        "default 'cpu'")
    parser.add_argument("--seed", type=int, default=None, help=seed_help)


def add_split_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"],
                        help="which split (default test)")


def open_run_and_model(args: argparse.Namespace):
    """(run, model, dataset) for a subcommand's arguments."""
    from pyro_vae.runs import open_run
    from pyro_vae.runs.config import ConfigError, check_option
    run = open_run(args.run_dir)
    try:
        check_option("device", args.device)
    except ConfigError as error:
        raise ConfigError(f"--device: {error}") from None
    model = run.load_model(args.device)
    model.eval()
    return run, model, run.load_data()


def save_arrays(path, **arrays) -> None:
    """``np.savez`` to ``path`` atomically."""
    atomic_write(path, lambda handle: np.savez(handle, **arrays))
