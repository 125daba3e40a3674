"""Per-datapoint log-densities of a traced guide and replayed model.

A particles plate outside the data plate; trace the guide, replay the model, and sum
*unscaled* log-densities inside the data plate (named ``"data"``) only, so minibatch scale and
KL weight beta never leak into reported numbers:
log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n), shape (K, N).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from pyro_vae.models.likelihoods import bernoulli_log_density, normal_log_density

DATA_PLATE = "data"


class NotPerDatapointError(ValueError):
    """A site outside the ``"data"`` plate: log p(x_n) is not defined per datapoint."""


class PointMassGuideError(ValueError):
    """log p(x) was requested with a point-mass (Delta) guide, which has no density."""


def unwrap_distribution(fn):
    """The distribution under any ``ExpandedDistribution`` / ``Independent`` wrappers."""
    while isinstance(fn, (dist.ExpandedDistribution, dist.Independent)):
        fn = fn.base_dist
    return fn


def is_point_mass(fn) -> bool:
    """Whether a distribution is a (possibly expanded or reinterpreted) ``Delta``."""
    return isinstance(unwrap_distribution(fn), dist.Delta)


def _has_stock_log_prob(fn, family: type) -> bool:
    return isinstance(fn, family) and type(fn).log_prob is family.log_prob


#: event densities summed in fewer passes than the distributions' own ``log_prob``, with the
#: same numbers to float rounding: base family of ``Independent(family(...), 1)`` -> density
_EVENT_DENSITIES = {
    torch.distributions.Bernoulli: lambda base, value: bernoulli_log_density(base.logits, value),
    torch.distributions.Normal: lambda base, value: normal_log_density(value, base.loc,
                                                                       base.scale),
}


def site_log_prob(site) -> torch.Tensor:
    """log p(value) of a traced site, unscaled and unmasked: ``fn.log_prob(value)``, except that
    a vector of independent Bernoulli(logits) or Normal values (``.to_event(1)``: the usual
    likelihoods, guides and priors) is summed by
    :func:`~pyro_vae.models.likelihoods.bernoulli_log_density` or
    :func:`~pyro_vae.models.likelihoods.normal_log_density`, without the temporaries of
    Pyro's ``log_prob`` (with its validation, when the distribution validates)."""
    fn, value = site["fn"], site["value"]
    if (_has_stock_log_prob(fn, torch.distributions.Independent)
            and fn.reinterpreted_batch_ndims == 1):
        base = fn.base_dist
        for family, density in _EVENT_DENSITIES.items():
            if _has_stock_log_prob(base, family):
                if base._validate_args:
                    base._validate_sample(value)
                return density(base, value)
    return fn.log_prob(value)


def _data_dim(site) -> int | None:
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame.dim
    return None


def _per_datapoint(site, log_prob: torch.Tensor, nesting: int, batch: int) -> torch.Tensor:
    """Sum a site's log-density over every dim except particles and data -> (K, B)."""
    dim = _data_dim(site)
    if dim is None:
        raise NotPerDatapointError(
            f"sample site {site['name']!r} is not inside pyro.plate({DATA_PLATE!r}); "
            "per-datapoint log-likelihoods need every sample site of model and guide inside "
            f"a plate named {DATA_PLATE!r} (global latent variables have no per-datapoint "
            "density). Name your datapoint plate 'data'.")
    total = nesting + 1
    log_prob = log_prob.reshape((1,) * (total - log_prob.dim()) + tuple(log_prob.shape))
    keep = {0, total + dim}
    other = [d for d in range(total) if d not in keep]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    return log_prob.reshape(log_prob.shape[0], log_prob.shape[total + dim]).expand(-1, batch)


def _per_datapoint_value(site, nesting: int) -> torch.Tensor:
    """A site's value with the particle dim first and the data dim second:
    (K, B, *other plate dims of size > 1, *event_shape)."""
    value = site["value"]
    event_dim = len(site["fn"].event_shape)
    total = nesting + 1
    value = value.reshape((1,) * (total + event_dim - value.dim()) + tuple(value.shape))
    data = total + _data_dim(site)
    other = [d for d in range(1, total) if d != data and value.shape[d] > 1]
    order = [0, data, *other, *range(total, value.dim())]
    kept = value.permute(*order, *[d for d in range(total) if d not in order])
    return kept.reshape(kept.shape[:len(order)])


def guess_max_plate_nesting(model, batch) -> int:
    """The number of plate dims used by model and guide (data plate included)."""
    with poutine.block(), torch.no_grad():
        guide_trace = poutine.trace(model.guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(
            *batch)
    dims = [-f.dim for tr in (guide_trace, model_trace) for s in tr.nodes.values()
            if s["type"] == "sample" for f in s["cond_indep_stack"] if f.dim is not None]
    return max(dims, default=1)


@dataclass
class LogDensityTerms:
    """Per-particle, per-datapoint log-densities, each of shape (K, B)."""

    log_likelihood: torch.Tensor  # sum over observed sites, log p(x | z)
    log_prior: torch.Tensor       # sum over latent sites proposed by the guide, log p(z)
    log_guide: torch.Tensor       # sum over guide sites, log q(z | x)
    #: the guide's draws behind the weights, site name -> (K, B, *event_shape)
    latents: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: with ``replicate=True``: each observed site drawn afresh from p(x | z_k), the
    #: posterior predictive replicates, site name -> (K, B, *event_shape)
    replicates: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def log_weights(self) -> torch.Tensor:
        return self.log_likelihood + self.log_prior - self.log_guide


@torch.no_grad()
def log_density_terms(model, batch: tuple, num_particles: int,
                      max_plate_nesting: int | None = None, *,
                      replicate: bool = False) -> LogDensityTerms:
    """Trace the guide under a plate of ``num_particles`` and replay the model.

    Latent sites of the model that the guide does not sample are drawn from the prior (the
    proposal is then the prior there) and contribute no term to the weights. Sites the model
    names in ``model.global_sites`` (outside the data plate, e.g. a Bayesian decoder's
    weights) are drawn from the guide, one draw per particle, and contribute no term either:
    each particle's weight is then log p(x_n, z_kn | W_k) - log q(z_kn | x_n), whose
    exponential averages to the predictive density E_q(W) p(x_n | W). With
    ``replicate``, every observed site is also drawn from its distribution given the k-th
    draw of the latents: x_rep ~ p(x | z_k), the posterior predictive under q.
    """
    nesting = max_plate_nesting or guess_max_plate_nesting(model, batch)
    n = batch[0].shape[0]
    with poutine.block(), pyro.plate("_particles", num_particles, dim=-(nesting + 1)):
        guide_trace = poutine.trace(model.guide).get_trace(*batch)
        model_trace = poutine.trace(
            poutine.replay(model.model, trace=guide_trace)).get_trace(*batch)
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    zero = batch[0].new_zeros(num_particles, n)
    terms = {"log_likelihood": zero, "log_prior": zero, "log_guide": zero}
    global_sites = set(getattr(model, "global_sites", ()))

    def add(key, site):
        if site["name"] in global_sites:
            return
        log_prob = scale_and_mask(site_log_prob(site), mask=site["mask"])
        terms[key] = terms[key] + _per_datapoint(site, log_prob, nesting, n)

    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            add("log_likelihood", site)
        elif name in guide_trace.nodes:
            add("log_prior", site)
    replicates = {} if not replicate else {
        name: _per_datapoint_value({**site, "value": site["fn"].sample()}, nesting)
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"]}
    latents = {}
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            if name in global_sites:
                continue
            if is_point_mass(site["fn"]):  # no density: log q = +inf (not Pyro's 0 convention)
                terms["log_guide"] = terms["log_guide"] + math.inf
            else:
                add("log_guide", site)
            latents[name] = _per_datapoint_value(site, nesting)
    return LogDensityTerms(**terms, latents=latents, replicates=replicates)


@torch.no_grad()
def prior_predictive_draws(model, batch: tuple, num_samples: int,
                           max_plate_nesting: int | None = None) -> dict[str, torch.Tensor]:
    """``num_samples`` draws of every observed site from the prior predictive: the model run
    alone, z ~ p(z) then x ~ p(x | z), for each datapoint of ``batch`` (which sets the plate
    sizes and any other inputs, e.g. labels); site name -> (K, B, *event_shape)."""
    nesting = max_plate_nesting or guess_max_plate_nesting(model, batch)
    with poutine.block(), pyro.plate("_particles", num_samples, dim=-(nesting + 1)):
        trace = poutine.trace(poutine.uncondition(model.model)).get_trace(*batch)
    return {name: _per_datapoint_value(site, nesting)
            for name, site in prune_subsample_sites(trace).nodes.items()
            if site["type"] == "sample" and site["infer"].get("was_observed")}


@contextmanager
def _rng_untouched():
    """Run a block without moving torch's random state (CPU and the current CUDA device),
    so looking at a model's structure never changes the draws that follow."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
