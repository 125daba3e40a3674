"""The ``pyro-vae`` command line.

Each subcommand is a module with ``add_parser(subparsers)`` and ``run(args) -> int``,
listed in ``SUBCOMMANDS``. User mistakes (unknown names, missing files, bad values) end with
one line ``pyro-vae: error: ...`` on stderr and exit code 2; genuine bugs keep their
tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyro_vae.cli import compare, diagnose, evaluate, holes, reconstruct, sample, train

#: the subcommand modules, in the order ``pyro-vae --help`` lists them
SUBCOMMANDS = [train, evaluate, sample, reconstruct, compare, diagnose, holes]

PROG = "pyro-vae"


class UsageError(Exception):
    """A command line that argparse rejected."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line raises :class:`UsageError` (one line, no usage
    dump) instead of printing and exiting; ``main`` reports it."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean a user mistake, reported as one line with exit code 2."""
    from pyro_vae.data import DatasetError
    from pyro_vae.io import CheckpointError
    from pyro_vae.models import DataSupportError
    from pyro_vae.runs import RunDirectoryError
    from pyro_vae.runs.config import ConfigError
    return (UsageError, ConfigError, DatasetError, DataSupportError, CheckpointError,
            RunDirectoryError)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description="Variational autoencoders as Bayesian models in Pyro: train, "
        "evaluate, sample and reconstruct, compare estimators and run the holes study, with every "
        "component one flag.")
    from pyro_vae import __version__
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers).set_defaults(handler=module.run)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _log_to_stderr(level: int) -> None:
    """The library's log lines from ``level`` up (INFO: e.g. whether a fit steps compiled or
    eagerly, and why) as ``pyro-vae: ...`` on stderr."""
    logger = logging.getLogger("pyro_vae")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run ``pyro-vae`` with ``argv`` (default: sys.argv[1:]); returns the exit code."""
    import matplotlib
    matplotlib.use("Agg")
    from pyro_vae.inference import NonFiniteLossError
    try:
        args = build_parser().parse_args(argv)
        _log_to_stderr(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
        return args.handler(args)
    except user_errors() as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
