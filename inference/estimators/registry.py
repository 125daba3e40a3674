"""Estimators by name: specs such as ``iwae:k=5`` parsed and checked (:func:`parse_estimator`),
built into Pyro ELBOs (:func:`make_estimator`), and extended (:func:`register_estimator`).
Each family's module registers its names when :mod:`pyro_vae.inference.estimators` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.infer

from pyro_vae.models._validation import unknown_name_error


@dataclass(frozen=True)
class EstimatorSpec:
    """A parsed estimator spec such as ``iwae:k=5`` -> name 'iwae', options {'k': 5}."""

    name: str
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        # on/off flags as 1/0 (``elbo:k=1,jit=1``); an automatic choice (None) is not shown
        shown = [f"{k}={int(v)}" if isinstance(v, bool) else f"{k}={v}"
                 for k, v in self.options.items() if v is not None]
        return self.name + ":" + ",".join(shown) if shown else self.name

    @property
    def objective(self) -> str:
        """The spec without its ``jit`` option: what is computed, whichever way (a compiled
        step gives the eager step's numbers)."""
        return str(EstimatorSpec(self.name, {k: v for k, v in self.options.items()
                                             if k != "jit"}))


@dataclass(frozen=True)
class _EstimatorEntry:
    factory: Callable[..., pyro.infer.ELBO]
    options: dict  # option name -> (type, default)
    description: str
    check: Callable[[dict], None] | None = None


ESTIMATORS: dict[str, _EstimatorEntry] = {}


class Choice:
    """An option type accepting one of a few names: ``{"baseline": (Choice("none", "avg"),
    "none")}``; any other value is a ValueError naming the valid ones."""

    def __init__(self, *names: str):
        self.names = names
        self.__name__ = f"one of {list(names)}"

    def __call__(self, value: str) -> str:
        if value not in self.names:
            raise ValueError(value)
        return value


def register_estimator(name: str, factory: Callable[..., pyro.infer.ELBO], options: dict,
                       description: str, check: Callable[[dict], None] | None = None) -> None:
    """Register ``name``; ``factory(**options, vectorize_particles=..., max_plate_nesting=...)``
    builds the ELBO; ``options`` maps each option to ``(type, default)`` (a type is any
    callable turning the spec's text into a value, e.g. :class:`Choice`); ``check(options)``,
    if given, raises ValueError for values the types accept but the estimator does not."""
    ESTIMATORS[name] = _EstimatorEntry(factory, dict(options), description, check)


def _flag(text: str) -> bool:
    """An on/off option: 1/0, true/false, yes/no, on/off."""
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0 (or true/false); got {text!r}")


_flag.__name__ = "1 or 0"


def _jit_choice(text: str) -> bool | None:
    """The ``jit`` option: 1 (compile, or fail saying why), 0 (eager), auto (compile when
    the model qualifies; see :mod:`.compiled`) -> True, False, None."""
    if str(text).strip().lower() == "auto":
        return None
    return _flag(text)


_jit_choice.__name__ = "1, 0 or auto"
_JIT_OPTION = (_jit_choice, None)


def _particles_kwargs(k: int, vectorize: bool, max_plate_nesting: float) -> dict:
    return {"num_particles": k, "vectorize_particles": bool(vectorize and k > 1),
            "max_plate_nesting": max_plate_nesting}


def valid_specs() -> list[str]:
    """Examples of every registered spec, for error messages and help."""
    out = []
    for name, entry in ESTIMATORS.items():
        opts = ",".join(f"{k}={default}" for k, (_, default) in entry.options.items()
                        if not isinstance(default, bool) and default is not None)
        out.append(f"{name}:{opts}" if opts else name)
    return out


def parse_estimator(spec: str | EstimatorSpec) -> EstimatorSpec:
    """Parse ``'name'`` or ``'name:key=value,...'``, checking the name and every option."""
    if isinstance(spec, EstimatorSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an estimator spec must be a non-empty string such as 'elbo' or "
                         f"'iwae:k=5'; got {spec!r}. Valid: {valid_specs()}")
    name, _, rest = spec.strip().partition(":")
    if name not in ESTIMATORS:
        raise unknown_name_error("estimator", name, ESTIMATORS, valid_specs())
    entry = ESTIMATORS[name]
    # on/off flags and jit appear only when given (``iwae:k=5`` parses to {'k': 5})
    options = {key: default for key, (kind, default) in entry.options.items()
               if kind not in (_flag, _jit_choice)}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in entry.options:
            raise ValueError(f"bad option {item!r} in estimator spec {spec!r}; {name} takes "
                             f"{sorted(entry.options) or 'no options'} as key=value, e.g. "
                             f"{valid_specs()[list(ESTIMATORS).index(name)]!r}")
        kind = entry.options[key][0]
        try:
            options[key] = kind(value)
        except ValueError:
            raise ValueError(f"option {key} in estimator spec {spec!r} must be "
                             f"{kind.__name__}; got {value!r}") from None
    if "k" in options and options["k"] < 1:
        raise ValueError(f"the number of particles k must be >= 1; got k={options['k']} "
                         f"in {spec!r}")
    if name == "renyi" and options["alpha"] == 1.0:
        raise ValueError("renyi with alpha=1 is the ordinary ELBO; use 'elbo' instead")
    if entry.check is not None:
        try:
            entry.check(options)
        except ValueError as error:
            raise ValueError(f"bad estimator spec {spec!r}: {error}") from None
    return EstimatorSpec(name, options)


def make_estimator(spec: str | EstimatorSpec | pyro.infer.ELBO = "elbo", *,
                   vectorize_particles: bool = True,
                   max_plate_nesting: float = float("inf")) -> pyro.infer.ELBO:
    """Build a Pyro ELBO from a spec; an ELBO instance is returned unchanged.

    ``max_plate_nesting=inf`` lets Pyro infer it from one trace of the model.
    """
    if isinstance(spec, pyro.infer.ELBO):
        return spec
    parsed = parse_estimator(spec)
    return ESTIMATORS[parsed.name].factory(
        **parsed.options, vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting)
