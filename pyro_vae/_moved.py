"""Old module paths of the 0.1 layout, kept importable for one release.

``import pyro_vae.inference.training`` (and every other path in :data:`MOVED`) still works but
warns with a :class:`DeprecationWarning` naming the new home. A path that moved to one module
is that module; a module that was split gives access to the names of all its new homes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

REMOVED_IN = "0.3"

#: old dotted path -> the module(s) that now hold its names, first match wins
MOVED: dict[str, tuple[str, ...]] = {
    "pyro_vae.models.discrete": ("pyro_vae.models.class_site",),
    "pyro_vae.inference.collapse": ("pyro_vae.inference.estimators.free_bits",),
    "pyro_vae.inference.compiled": ("pyro_vae.inference.estimators.compiled",),
    "pyro_vae.inference.discrete_estimators": (
        "pyro_vae.inference.estimators.enum", "pyro_vae.inference.estimators.score",
        "pyro_vae.inference.estimators.relaxed", "pyro_vae.inference.estimators.registry"),
    "pyro_vae.inference.training": (
        "pyro_vae.inference.fitting.svi", "pyro_vae.inference.fitting.options",
        "pyro_vae.inference.fitting.loop", "pyro_vae.inference.fitting.state",
        "pyro_vae.inference.fitting.nonfinite", "pyro_vae.inference.devices",
        "pyro_vae.models.handlers"),
    "pyro_vae.inference.data_parallel": ("pyro_vae.inference.fitting.data_parallel",),
    "pyro_vae.inference.holes": ("pyro_vae.inference.metrics.holes",),
    "pyro_vae.inference.anomaly": ("pyro_vae.inference.metrics.anomaly",),
    "pyro_vae.inference.discrete": (
        "pyro_vae.inference.metrics.classes", "pyro_vae.inference.estimators.score",
        "pyro_vae.inference.diagnostics"),
    "pyro_vae.config": ("pyro_vae.runs.config", "pyro_vae.runs.errors"),
    "pyro_vae.discrete": ("pyro_vae.runs.builders",),
    "pyro_vae.holes": ("pyro_vae.studies.holes", "pyro_vae.plots.holes"),
    "pyro_vae.collapse": ("pyro_vae.studies.collapse", "pyro_vae.plots.studies"),
    "pyro_vae.anomaly": ("pyro_vae.studies.anomaly", "pyro_vae.plots.studies"),
    "pyro_vae.reports": ("pyro_vae.studies.comparison",),
    "pyro_vae._studies": ("pyro_vae.studies._common",),
    "pyro_vae.report_plots": ("pyro_vae.plots.comparison",),
    "pyro_vae.conditional": ("pyro_vae.plots.classes",),
}


class _SplitModule(types.ModuleType):
    """An old module whose names now live in several modules."""

    def __init__(self, name: str, homes: tuple[str, ...]):
        super().__init__(name, f"Moved: use {', '.join(homes)}.")
        self.__homes = [importlib.import_module(home) for home in homes]

    def __getattr__(self, attribute: str):
        for home in self.__homes:
            if hasattr(home, attribute):
                return getattr(home, attribute)
        raise AttributeError(f"module {self.__name__!r} (moved to "
                             f"{[h.__name__ for h in self.__homes]}) has no attribute "
                             f"{attribute!r}")

    def __dir__(self):
        return sorted({name for home in self.__homes for name in dir(home)})


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, homes: tuple[str, ...]):
        self.homes = homes

    def create_module(self, spec):
        if len(self.homes) == 1:
            module = importlib.import_module(self.homes[0])
            self.home_spec = module.__spec__
            return module
        return _SplitModule(spec.name, self.homes)

    def exec_module(self, module) -> None:
        if len(self.homes) == 1:
            module.__spec__ = self.home_spec   # the import machinery set the old name's spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        homes = MOVED.get(fullname)
        if homes is None:
            return None
        warnings.warn(f"{fullname} moved to {' / '.join(homes)}; import from there (the old "
                      f"path is removed in pyro-vae {REMOVED_IN}).", DeprecationWarning,
                      stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _MovedLoader(homes))


def install() -> None:
    """Make the old paths importable (idempotent)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
