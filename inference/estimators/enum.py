"""``enum`` (``enum:k=K``): TraceEnum_ELBO with every discrete site of model and guide enumerated
in parallel, so the expectation over the discrete sites y is an exact sum and only the continuous
latents are drawn.
"""

from __future__ import annotations

import math

import pyro.infer
from pyro.infer.enum import config_enumerate

from pyro_vae.inference.enumeration import discrete_site_sizes
from pyro_vae.inference.estimators.registry import _particles_kwargs, register_estimator
from pyro_vae.inference.evaluation import MAX_ENUMERATION
from pyro_vae.inference.log_densities import _rng_untouched


# ---- enumeration ----------------------------------------------------------------------------
class EnumELBO(pyro.infer.TraceEnum_ELBO):
    """TraceEnum_ELBO with every discrete site of model and guide enumerated in parallel
    (``config_enumerate``), so no site needs an ``infer`` annotation. Refuses, with a clear
    error, models whose discrete sites have more than ``max_enumeration`` joint
    configurations per datapoint (the enumerated tensors would not fit in memory)."""

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = False,
                 max_plate_nesting: float = float("inf"),
                 max_enumeration: int = MAX_ENUMERATION):
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles,
                         max_plate_nesting=max_plate_nesting, strict_enumeration_warning=False)
        self.max_enumeration = int(max_enumeration)
        self._checked: set = set()

    def _enumerated(self, model, guide, args, kwargs):
        key = tuple(id(getattr(fn, "__self__", fn)) for fn in (model, guide))
        if key not in self._checked:
            with _rng_untouched():
                sites, _ = discrete_site_sizes(model, guide, args, kwargs)
            total = math.prod(sites.values())
            if total > self.max_enumeration:
                raise ValueError(
                    f"enum sums over every joint configuration of the discrete sites "
                    f"{sites} (values per site) for each datapoint: {total} configurations, "
                    f"more than max_enumeration={self.max_enumeration}. Use the 'score' or "
                    "'relaxed' estimator for this model, or fewer and smaller discrete "
                    "latents.")
            self._checked.add(key)
        return (config_enumerate(model, default="parallel"),
                config_enumerate(guide, default="parallel"))

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(*self._enumerated(model, guide, args, kwargs), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(*self._enumerated(model, guide, args, kwargs),
                                           *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(*self._enumerated(model, guide, args, kwargs),
                                      *args, **kwargs)


register_estimator(
    "enum", lambda k, vectorize_particles, max_plate_nesting: EnumELBO(
        **_particles_kwargs(k, vectorize_particles, max_plate_nesting)),
    {"k": (int, 1)}, "TraceEnum_ELBO: discrete sites summed exactly (parallel enumeration)")
