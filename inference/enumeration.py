"""Discrete latent sites summed out exactly by parallel enumeration (as ``TraceEnum_ELBO`` does).

When all discrete sites together have at most ``max_enumeration`` (:data:`MAX_ENUMERATION`)
joint configurations per datapoint, guide and model are traced with every discrete site
enumerated and
log w_kn = log sum_y p(x_n, y, z_kn^y) / q(z_kn^y | x_n, y), z_kn^y ~ q(z | x_n, y):
y summed, the continuous latents importance-sampled, so log p(x) never depends on q(y|x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.enum import config_enumerate
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.util import prune_subsample_sites

from pyro_vae.inference.batching import ordered_batches
from pyro_vae.inference.log_densities import (
    DATA_PLATE,
    NotPerDatapointError,
    _data_dim,
    _rng_untouched,
    guess_max_plate_nesting,
    is_point_mass,
    site_log_prob,
)

# ---- discrete latent sites: summed exactly by enumeration ------------------------------------
#: discrete sites are summed out exactly when all of them together have at most this many
#: joint configurations per datapoint; beyond that they are importance-sampled from the guide
MAX_ENUMERATION = 1024


@dataclass
class EnumerationPlan:
    """The unobserved discrete sites of a model/guide pair and how evaluation treats them.

    ``sites`` maps each site to its number of values; ``guide_sites`` are those the guide
    samples (the others are the model's own). ``enumerate`` is True when the product of the
    sizes, ``configurations``, is at most the limit: every discrete site is then summed
    out exactly; otherwise the guide's draws are importance-weighted as for any latent.
    """

    sites: dict[str, int]
    guide_sites: tuple[str, ...]
    configurations: int
    enumerate: bool

    def describe(self) -> dict[str, str] | None:
        """Site -> how evaluation handled it, or None for a model without discrete sites."""
        if not self.sites:
            return None
        how = ("summed exactly" if self.enumerate else
               f"importance-sampled ({self.configurations} joint configurations exceed the "
               "enumeration limit)")
        return {name: how for name in self.sites}


def _is_enumerable(site) -> bool:
    return (site["type"] == "sample" and not site["is_observed"]
            and not isinstance(site["fn"], _Subsample)
            and bool(getattr(site["fn"], "has_enumerate_support", False)))


@torch.no_grad()
def discrete_site_sizes(model_fn, guide_fn, args: tuple = (), kwargs: dict | None = None
                        ) -> tuple[dict[str, int], tuple[str, ...]]:
    """The unobserved discrete sites of a model/guide pair (one trace of each, sampling as
    usual): site -> number of values, and the names of those the guide samples."""
    kwargs = kwargs or {}
    with poutine.block():
        guide_trace = poutine.trace(guide_fn).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(
            *args, **kwargs)
    sites: dict[str, int] = {}
    in_guide = []
    for trace in (guide_trace, model_trace):
        for name, site in trace.nodes.items():
            if name not in sites and _is_enumerable(site):
                sites[name] = int(site["fn"].enumerate_support(expand=False).shape[0])
                if trace is guide_trace:
                    in_guide.append(name)
    return sites, tuple(in_guide)


def enumeration_plan(model, batch: tuple, max_enumeration: int = MAX_ENUMERATION
                     ) -> EnumerationPlan:
    """Find the discrete sites of ``model`` (one trace of guide and model on ``batch``) and
    decide whether evaluation can sum them out exactly (see :class:`EnumerationPlan`)."""
    sites, in_guide = discrete_site_sizes(model.model, model.guide, batch)
    configurations = math.prod(sites.values())
    return EnumerationPlan(sites, in_guide, configurations,
                           bool(sites) and configurations <= max_enumeration)


@dataclass
class EnumeratedTerms:
    """Log-densities with every discrete site enumerated in parallel. Each tensor has shape
    (*E, K, B): one leading dim per enumerated site (its values), then particles and data.

    ``log_joint`` sums log p over every model site, ``log_likelihood`` over the observed
    ones; ``log_guide_enumerated`` is log q of the guide's enumerated sites (it sums to one
    over their dims) and ``log_guide_sampled`` log q of the guide's other (sampled) sites.
    ``positions`` maps each enumerated site to its leading dim; ``guide_positions`` are the
    dims of the guide's sites, the others belong to sites only the model has.
    """

    log_joint: torch.Tensor
    log_likelihood: torch.Tensor
    log_guide_enumerated: torch.Tensor
    log_guide_sampled: torch.Tensor
    positions: dict[str, int]
    guide_positions: tuple[int, ...]

    @property
    def model_positions(self) -> tuple[int, ...]:
        return tuple(p for p in self.positions.values() if p not in self.guide_positions)

    @property
    def log_weights(self) -> torch.Tensor:
        """log w_kn = log sum_y p(x_n, y, z_kn^y) / q(z_kn^y | x_n, y): the discrete sites
        summed exactly, the other latents importance-sampled; shape (K, B)."""
        dims = tuple(self.positions.values())
        log_w = self.log_joint - self.log_guide_sampled
        return torch.logsumexp(log_w, dim=dims) if dims else log_w

    def elbo_and_recon(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per particle (K, B): ELBO = sum_y q(y|x) [log p(x, y, z^y) - log q(y|x) -
        log q(z^y|x, y)] and recon = sum_y q(y|x) log p(x | y, z^y), with the guide's discrete
        sites summed exactly. Discrete sites only the model has are summed inside the log
        (their exact conditional posterior weighs recon)."""
        joint, likelihood = self.log_joint, self.log_likelihood
        model_dims = self.model_positions
        if model_dims:
            marginal = torch.logsumexp(joint, dim=model_dims, keepdim=True)
            likelihood = ((joint - marginal).exp() * likelihood).sum(model_dims, keepdim=True)
            joint = marginal
        log_q = self.log_guide_enumerated
        weight = log_q.exp()
        nonzero = weight > 0
        elbo_terms = torch.where(nonzero, weight * (joint - log_q - self.log_guide_sampled), 0.0)
        recon_terms = torch.where(nonzero, weight * likelihood, 0.0)
        dims = tuple(range(len(self.positions)))
        shape = elbo_terms.shape[len(dims):]
        if dims:
            elbo_terms, recon_terms = elbo_terms.sum(dims), recon_terms.sum(dims)
        return elbo_terms.reshape(shape), recon_terms.reshape(shape)


def _enumeration_layout(nesting: int, traces) -> tuple[int, dict[int, int]]:
    """(number of dims D = enum dims + particles + plates, enum dim -> its size)."""
    sizes = {}
    for trace in traces:
        for site in trace.nodes.values():
            dim = site["infer"].get("_enumerate_dim") if site["type"] == "sample" else None
            if dim is not None:
                sizes[dim] = site["value"].shape[dim - len(site["fn"].event_shape)]
    deepest = -min(sizes, default=-(nesting + 1))
    return max(deepest, nesting + 1), sizes


def _canonical(site, tensor: torch.Tensor, nesting: int, total: int, event_dims: int = 0,
               reduce: str = "sum") -> torch.Tensor:
    """A site's batch-shaped tensor (plus ``event_dims`` trailing dims) in the layout
    (*enum dims, K, B, *event): plate dims other than particles and data are summed
    (``reduce='sum'``, for log-densities) or must have size 1 (``'keep'``, for values)."""
    data = _data_dim(site)
    if data is None:
        raise NotPerDatapointError(
            f"sample site {site['name']!r} is not inside pyro.plate({DATA_PLATE!r}); "
            "per-datapoint quantities need every sample site of model and guide inside "
            f"a plate named {DATA_PLATE!r}. Name your datapoint plate 'data'.")
    batch_dims = tensor.dim() - event_dims
    tensor = tensor.reshape((1,) * (total - batch_dims) + tuple(tensor.shape))
    particles, data_position = total - (nesting + 1), total + data
    others = [d for d in range(particles + 1, total) if d != data_position]
    if others:
        if reduce == "sum":
            tensor = tensor.sum(others, keepdim=True)
        elif any(tensor.shape[d] > 1 for d in others):
            raise NotImplementedError(f"site {site['name']!r} lies in a plate besides "
                                      f"{DATA_PLATE!r}; its per-datapoint mean is not defined")
    keep = [d for d in range(total + event_dims) if d not in others]
    return tensor.reshape([tensor.shape[d] for d in keep])


@torch.no_grad()
def enumerated_terms(model, batch: tuple, num_particles: int,
                     max_plate_nesting: int | None = None) -> EnumeratedTerms:
    """Trace the guide under a plate of ``num_particles`` with every discrete site of guide
    and model enumerated in parallel (as ``TraceEnum_ELBO`` does), replay the model, and
    collect unscaled log-densities in the layout of :class:`EnumeratedTerms`."""
    nesting = max_plate_nesting or guess_max_plate_nesting(model, batch)
    guide_trace, model_trace = _enumerated_traces(model, batch, num_particles, nesting)
    total, sizes = _enumeration_layout(nesting, (guide_trace, model_trace))
    n = batch[0].shape[0]
    shape = tuple(sizes.get(d, 1) for d in range(-total, -(nesting + 1))) + (num_particles, n)
    zero = batch[0].new_zeros(shape)
    terms = {"log_joint": zero, "log_likelihood": zero, "log_guide_enumerated": zero,
             "log_guide_sampled": zero}

    def log_prob(site) -> torch.Tensor:
        value = scale_and_mask(site_log_prob(site), mask=site["mask"])
        return _canonical(site, value, nesting, total)

    positions = {}
    for trace, role in ((guide_trace, "guide"), (model_trace, "model")):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            dim = site["infer"].get("_enumerate_dim")
            if dim is not None and name not in positions:
                positions[name] = total + dim
            if role == "model" and (site["is_observed"] or name in guide_trace.nodes
                                    or dim is not None):
                terms["log_joint"] = terms["log_joint"] + log_prob(site)
                if site["is_observed"]:
                    terms["log_likelihood"] = terms["log_likelihood"] + log_prob(site)
            elif role == "guide" and not site["is_observed"]:
                if is_point_mass(site["fn"]):
                    terms["log_guide_sampled"] = terms["log_guide_sampled"] + math.inf
                    continue
                key = "log_guide_enumerated" if dim is not None else "log_guide_sampled"
                terms[key] = terms[key] + log_prob(site)
    guide_positions = tuple(positions[name] for name in positions if name in guide_trace.nodes)
    return EnumeratedTerms(**{k: v.expand(shape) for k, v in terms.items()},
                           positions=positions, guide_positions=guide_positions)


def _enumerated_traces(model, batch, num_particles: int, nesting: int):
    """Guide and model traces with parallel enumeration of every discrete site: the
    particles plate at dim -(nesting + 1), enumeration dims left of it (guide's first)."""
    guide = EnumMessenger(first_available_dim=-(nesting + 2))(
        config_enumerate(model.guide, default="parallel"))
    model_fn = EnumMessenger()(config_enumerate(model.model, default="parallel"))
    with poutine.block(), pyro.plate("_particles", num_particles, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(
            *batch)
    return prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)


def _plan(model, source, max_enumeration: int) -> EnumerationPlan:
    with _rng_untouched():
        return enumeration_plan(model, next(ordered_batches(source, 2)), max_enumeration)


def _particle_budget(plan: EnumerationPlan, particle_budget: int) -> int:
    """Enumeration multiplies the work per (particle, datapoint) pair by the number of joint
    configurations; keep the product within the budget."""
    return max(1, particle_budget // plan.configurations) if plan.enumerate else particle_budget
