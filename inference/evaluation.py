"""Judging a fitted model: importance-sampled log-likelihood, ELBO terms, active units.

Everything is per datapoint and in nats. The estimators work for any object with Pyro
``model(*batch)`` / ``guide(*batch)`` methods whose datapoint plate is named ``"data"``:

* per-datapoint log-weights: a particles plate outside the data plate; trace the guide,
  replay the model, and sum *unscaled* log-densities inside the data plate only, so
  minibatch scale and KL weight beta never leak into reported numbers:
  log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n), shape (K, N);
* log p(x_n) ~= log (1/K) sum_k w_kn (Burda et al. 2015), a stochastic lower bound that
  tightens as K grows, accumulated chunk by chunk with ``logaddexp`` so memory is bounded
  by ``particle_budget`` rows, not by K or N;
* ELBO_n = E_q[log p(x_n|z)] - KL_n, KL_n = E_q[log q(z|x_n) - log p(z)];
* active units (Burda et al.): A_u = Cov_n(E_q[z_u | x_n]) > 0.01.

A point-mass guide site (``Delta``, e.g. an autoencoder's code) has no density: its log q is
+inf, so KL = +inf and ELBO = -inf (true values, not placeholders), and :func:`log_likelihood`
refuses it (:class:`PointMassGuideError`) because importance sampling needs a proposal with a
density; :func:`evaluate` then reports log p(x) as NaN. The reconstruction term
E_q log p(x|z) = log p(x | mu(x)) stays well defined.

Discrete latent sites (any unobserved site whose distribution can enumerate its support)
are summed out exactly whenever all of them together have at most ``max_enumeration``
(default :data:`MAX_ENUMERATION`) joint configurations per datapoint: guide and model are
traced with every discrete site enumerated in parallel (as ``TraceEnum_ELBO`` does), and

* log w_kn = log sum_y p(x_n, y, z_kn^y) / q(z_kn^y | x_n, y), z_kn^y ~ q(z | x_n, y): y
  summed, the continuous latents importance-sampled, so log p(x) never depends on q(y|x);
* ELBO_n = sum_y q(y|x_n) E_q(z|x_n,y)[log p(x_n, y, z) - log q(y|x_n) - log q(z|x_n, y)]
  with the sum over y exact and the expectation over z by Monte Carlo;
* E_q[z | x_n] = sum_y q(y|x_n) E_q[z | x_n, y] (active units), and the KL per dimension
  averages KL(q(z_u | x, y) || p(z_u | y)) over q(y|x).

Beyond the limit, discrete sites are drawn from the guide like any latent (log q(y|x) then
enters the weights), and :class:`EvaluationResult` says which way each site was handled.

A model may provide its own ``importance_log_weights(*batch, num_particles)`` (returning
``(K, B)``); it is then used instead.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.enum import config_enumerate
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.util import prune_subsample_sites

from pyro_vae.inference.batching import as_source, first_tensor, ordered_batches
from pyro_vae.models._validation import check_positive_int

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

    @property
    def log_weights(self) -> torch.Tensor:
        return self.log_likelihood + self.log_prior - self.log_guide


@torch.no_grad()
def log_density_terms(model, batch: tuple, num_particles: int,
                      max_plate_nesting: int | None = None) -> LogDensityTerms:
    """Trace the guide under a plate of ``num_particles`` and replay the model.

    Latent sites of the model that the guide does not sample are drawn from the prior (the
    proposal is then the prior there) and contribute no term to the weights.
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

    def add(key, site):
        log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
        terms[key] = terms[key] + _per_datapoint(site, log_prob, nesting, n)

    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            add("log_likelihood", site)
        elif name in guide_trace.nodes:
            add("log_prior", site)
    latents = {}
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            if is_point_mass(site["fn"]):  # no density: log q = +inf (not Pyro's 0 convention)
                terms["log_guide"] = terms["log_guide"] + math.inf
            else:
                add("log_guide", site)
            latents[name] = _per_datapoint_value(site, nesting)
    return LogDensityTerms(**terms, latents=latents)


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
        value = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
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


def _importance_chunk(model, batch, k: int, nesting: int | None,
                      enumerate_discrete: bool = False) -> torch.Tensor:
    own = getattr(model, "importance_log_weights", None)
    if callable(own):
        return own(*batch, num_particles=k)
    if enumerate_discrete:
        return enumerated_terms(model, batch, k, nesting).log_weights
    return log_density_terms(model, batch, k, nesting).log_weights


@contextmanager
def _rng_untouched():
    """Run a block without moving torch's random state (CPU and the current CUDA device),
    so looking at a model's structure never changes the draws that follow."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


def _plan(model, source, max_enumeration: int) -> EnumerationPlan:
    with _rng_untouched():
        return enumeration_plan(model, next(ordered_batches(source, 2)), max_enumeration)


def _particle_budget(plan: EnumerationPlan, particle_budget: int) -> int:
    """Enumeration multiplies the work per (particle, datapoint) pair by the number of joint
    configurations; keep the product within the budget."""
    return max(1, particle_budget // plan.configurations) if plan.enumerate else particle_budget


def _chunking(n_total: int, num_samples: int, batch_size: int | None,
              particle_budget: int) -> tuple[int, int]:
    """(datapoints per batch, particles per chunk) with their product near the budget."""
    batch = min(n_total, batch_size or max(1, particle_budget // min(num_samples, 64)))
    return batch, max(1, min(num_samples, particle_budget // batch))


def _refuse_point_mass_guide(model, source) -> None:
    if callable(getattr(model, "importance_log_weights", None)):
        return
    with poutine.block(), torch.no_grad():
        guide_trace = poutine.trace(model.guide).get_trace(*next(ordered_batches(source, 2)))
    names = [name for name, site in guide_trace.nodes.items()
             if site["type"] == "sample" and is_point_mass(site["fn"])]
    if names:
        raise PointMassGuideError(
            f"the guide's site(s) {names} are point masses (Delta), which have no density, so "
            "log p(x) cannot be importance-sampled with this guide (the estimate would be "
            "-inf). Judge such a model (an autoencoder) by its reconstruction term, or fit a "
            "guide with a density (e.g. guide='diagonal').")


@torch.no_grad()
def log_likelihood(model, data, num_samples: int = 5000, *, batch_size: int | None = None,
                   particle_budget: int = 2 ** 15, max_plate_nesting: int | None = None,
                   seed: int | None = None, max_enumeration: int = MAX_ENUMERATION
                   ) -> torch.Tensor:
    """Importance-sampled log p(x_n) for every datapoint, shape (N,), in nats.

    log p(x_n) ~= logsumexp_k log w_kn - log K with K = ``num_samples`` draws from the guide.
    Discrete latent sites are summed out exactly inside every weight when their joint
    configurations number at most ``max_enumeration`` (see :class:`EnumeratedTerms`), and
    drawn from the guide like any latent otherwise. Work proceeds in chunks of at most
    ``particle_budget`` (particle, datapoint, configuration) triples.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    source = as_source(data)
    if seed is not None:
        pyro.set_rng_seed(seed)
    _refuse_point_mass_guide(model, source)
    plan = _plan(model, source, max_enumeration)
    batch_size, chunk = _chunking(len(source), num_samples, batch_size,
                                  _particle_budget(plan, particle_budget))
    out = []
    for batch in ordered_batches(source, batch_size):
        running = None
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            lse = torch.logsumexp(_importance_chunk(model, batch, k, max_plate_nesting,
                                                    plan.enumerate), 0)
            running = lse if running is None else torch.logaddexp(running, lse)
        out.append(running - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def elbo_terms(model, data, num_particles: int = 1, *, batch_size: int = 1024,
               max_plate_nesting: int | None = None, max_enumeration: int = MAX_ENUMERATION
               ) -> dict[str, torch.Tensor]:
    """Per-datapoint Monte Carlo ELBO and its terms (each shape (N,)): ``recon`` =
    E_q log p(x|z), ``kl`` = E_q[log q(z|x) - log p(z)], ``elbo`` = recon - kl (beta = 1).

    Discrete latent sites (at most ``max_enumeration`` joint configurations) are summed
    exactly: ELBO = sum_y q(y|x) E_q(z|x,y)[log p(x, y, z) - log q(y|x) - log q(z|x, y)], the
    expectation over z by ``num_particles`` draws; ``kl`` then covers y and z together."""
    source = as_source(data)
    plan = _plan(model, source, max_enumeration)
    recon, kl = [], []
    for batch in ordered_batches(source, batch_size):
        if plan.enumerate:
            elbo, likelihood = enumerated_terms(model, batch, num_particles,
                                                max_plate_nesting).elbo_and_recon()
            recon.append(likelihood.mean(0))
            kl.append(likelihood.mean(0) - elbo.mean(0))
            continue
        terms = log_density_terms(model, batch, num_particles, max_plate_nesting)
        recon.append(terms.log_likelihood.mean(0))
        kl.append((terms.log_guide - terms.log_prior).mean(0))
    recon_t, kl_t = torch.cat(recon), torch.cat(kl)
    return {"elbo": recon_t - kl_t, "recon": recon_t, "kl": kl_t}


def _guide_latent(model, batch, site: str):
    with poutine.block():
        guide_trace = poutine.trace(model.guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(
            *batch)
    if site not in guide_trace.nodes:
        raise KeyError(f"the guide has no sample site {site!r}; latent sites are "
                       f"{[n for n, s in guide_trace.nodes.items() if s['type'] == 'sample']}")
    return guide_trace.nodes[site], model_trace.nodes.get(site)


def _mean_of(fn, value_shape, num_samples: int = 64) -> torch.Tensor:
    try:
        mean = fn.mean
        if mean.shape == value_shape and torch.isfinite(mean).all():
            return mean
    except NotImplementedError:
        pass
    return fn.sample((num_samples,)).mean(0)


@dataclass
class _EnumeratedLatent:
    """A continuous guide site traced with the discrete sites enumerated, and q(y|x)."""

    guide_site: dict
    model_site: dict | None
    weights: torch.Tensor    # q of the enumerated guide sites, (*E, 1, B)
    nesting: int
    total: int

    def average(self, site_tensor: torch.Tensor, event_dims: int) -> torch.Tensor:
        """sum_y q(y|x) t(y) for a tensor in the site's batch shape (+ event dims) -> (B, ...)."""
        canonical = _canonical(self.guide_site, site_tensor, self.nesting, self.total,
                               event_dims, reduce="keep")
        weights = self.weights.reshape(self.weights.shape + (1,) * event_dims)
        enum_dims = tuple(range(self.weights.dim() - 2))
        summed = (weights * canonical).sum(enum_dims) if enum_dims else weights * canonical
        return summed.reshape(summed.shape[-(event_dims + 1):])


def _enumerated_latent(model, batch, site: str, nesting: int) -> _EnumeratedLatent:
    guide_trace, model_trace = _enumerated_traces(model, batch, 1, nesting)
    if site not in guide_trace.nodes:
        raise KeyError(f"the guide has no sample site {site!r}; latent sites are "
                       f"{[n for n, s in guide_trace.nodes.items() if s['type'] == 'sample']}")
    total, sizes = _enumeration_layout(nesting, (guide_trace, model_trace))
    shape = tuple(sizes.get(d, 1) for d in range(-total, -(nesting + 1))) + (1, len(batch[0]))
    log_q = batch[0].new_zeros(shape)
    for other in guide_trace.nodes.values():
        if other["type"] == "sample" and other["infer"].get("_enumerate_dim") is not None:
            log_q = log_q + _canonical(other, other["fn"].log_prob(other["value"]), nesting,
                                       total)
    return _EnumeratedLatent(guide_trace.nodes[site], model_trace.nodes.get(site),
                             log_q.exp(), nesting, total)


def _enumerates_guide(model, source, max_enumeration: int = MAX_ENUMERATION) -> bool:
    plan = _plan(model, source, max_enumeration)
    return plan.enumerate and bool(plan.guide_sites)


@torch.no_grad()
def posterior_means(model, data, site: str = "z", batch_size: int = 1024) -> torch.Tensor:
    """E_q[z | x_n] for every datapoint, shape (N, z_dim). With discrete guide sites that
    can be enumerated, E_q[z | x] = sum_y q(y|x) E_q[z | x, y] exactly."""
    source = as_source(data)
    enumerate_discrete = _enumerates_guide(model, source)
    nesting = guess_max_plate_nesting(model, next(ordered_batches(source, 2)))
    means = []
    for batch in ordered_batches(source, batch_size):
        if enumerate_discrete:
            latent = _enumerated_latent(model, batch, site, nesting)
            fn, value = latent.guide_site["fn"], latent.guide_site["value"]
            means.append(latent.average(_mean_of(fn, value.shape), len(fn.event_shape)))
            continue
        guide_site, _ = _guide_latent(model, batch, site)
        means.append(_mean_of(guide_site["fn"], guide_site["value"].shape))
    return torch.cat(means)


@torch.no_grad()
def active_units(model, data, threshold: float = 0.01, site: str = "z"
                 ) -> tuple[int, torch.Tensor]:
    """Burda et al.'s active units: count of u with Cov_n(E_q[z_u | x_n]) > threshold,
    and the per-dimension variances (shape (z_dim,))."""
    means = posterior_means(model, data, site)
    variances = means.var(0, unbiased=False) if len(means) > 1 else torch.zeros_like(means[0])
    return int((variances > threshold).sum()), variances


def _factorised(fn):
    """The per-dimension distribution of a fully factorised event-dim-1 distribution."""
    while isinstance(fn, dist.ExpandedDistribution):
        fn = fn.base_dist
    if isinstance(fn, dist.Independent) and fn.reinterpreted_batch_ndims == 1:
        base = fn.base_dist
        while isinstance(base, dist.ExpandedDistribution):
            base = base.base_dist
        if base.event_shape == ():
            return base
    return None


@torch.no_grad()
def kl_per_dimension(model, data, site: str = "z", num_samples: int = 64,
                     batch_size: int = 1024) -> torch.Tensor | None:
    """Mean over datapoints of KL(q(z_u|x) || p(z_u)) for each latent dimension u.

    Defined when guide and prior both factorise over dimensions; closed form where torch
    registers it, else a Monte Carlo average over ``num_samples`` guide draws. Returns None
    for non-factorised families (full-rank and flow guides, mixture and Vamp priors). With
    enumerable discrete guide sites y it is sum_y q(y|x) KL(q(z_u | x, y) || p(z_u | y)).
    """
    source = as_source(data)
    enumerate_discrete = _enumerates_guide(model, source)
    nesting = guess_max_plate_nesting(model, next(ordered_batches(source, 2)))
    total, count = None, 0
    for batch in ordered_batches(source, batch_size):
        if enumerate_discrete:
            latent = _enumerated_latent(model, batch, site, nesting)
            guide_site, model_site = latent.guide_site, latent.model_site
        else:
            guide_site, model_site = _guide_latent(model, batch, site)
        q, p = _factorised(guide_site["fn"]), model_site and _factorised(model_site["fn"])
        if q is None or p is None:
            return None
        try:
            kl = torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            z = q.sample((num_samples,))
            kl = (q.log_prob(z) - p.log_prob(z)).mean(0)
        kl = kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))
        if enumerate_discrete:   # E_q(y|x) KL(q(z_u | x, y) || p(z_u | y))
            kl = latent.average(kl, 1)
        kl = kl.reshape(-1, kl.shape[-1])
        total = kl.sum(0) if total is None else total + kl.sum(0)
        count += kl.shape[0]
    return total / count


@dataclass
class EvaluationResult:
    """Per-datapoint summaries (nats) and the per-datapoint arrays behind them.

    For a model with discrete latent sites, ``discrete_sites`` says how each was handled
    (summed exactly, or importance-sampled when there are too many joint configurations);
    with ``labels``, ``accuracy`` compares argmax_y q(y|x) with them: ``accuracy_kind`` is
    ``"classification"`` when the model's classes are the labels (M2) and ``"clustering"``
    (after the best one-to-one matching of clusters to labels) otherwise.
    """

    log_likelihood: float
    elbo: float
    recon: float
    kl: float
    active_units: int | None
    num_datapoints: int
    num_samples: int
    kl_per_dimension: list[float] | None = None
    unit_variances: list[float] | None = None
    discrete_sites: dict[str, str] | None = None
    accuracy: float | None = None
    accuracy_kind: str | None = None
    per_datapoint: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """Plain JSON-ready numbers (no per-datapoint arrays)."""
        return {k: v for k, v in asdict(self).items() if k != "per_datapoint"}


def evaluate(model, data, num_samples: int = 5000, *, elbo_particles: int = 10,
             batch_size: int | None = None, particle_budget: int = 2 ** 15,
             latent_site: str = "z", seed: int | None = 0, check: bool = True,
             labels: torch.Tensor | None = None, discrete_site: str = "y",
             max_enumeration: int = MAX_ENUMERATION) -> EvaluationResult:
    """Importance-sampled log p(x) with ``num_samples`` particles (default 5000, as Burda
    et al. 2015), the ELBO and its two terms (``elbo_particles`` draws), active units and
    mean KL per latent dimension; all averages per datapoint in nats.

    Discrete latent sites are summed out exactly in log p(x), the ELBO and its terms, and
    in E_q[z|x], whenever their joint configurations number at most ``max_enumeration``.
    ``labels`` (one integer per datapoint) add the accuracy of argmax q(y|x) at the guide's
    site ``discrete_site`` (see :class:`EvaluationResult`).
    """
    check_positive_int(elbo_particles, "elbo_particles")
    check_positive_int(particle_budget, "particle_budget")
    check_positive_int(max_enumeration, "max_enumeration")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    source = as_source(data)
    check_fn = getattr(model, "check_data", None)
    if check and callable(check_fn):
        check_fn(first_tensor(source), what="evaluation data")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        if seed is not None:
            pyro.set_rng_seed(seed)
        nesting = guess_max_plate_nesting(model, next(ordered_batches(source, 2)))
        plan = _plan(model, source, max_enumeration)
        try:
            ll = log_likelihood(model, source, num_samples, batch_size=batch_size,
                                particle_budget=particle_budget, max_plate_nesting=nesting,
                                max_enumeration=max_enumeration)
        except PointMassGuideError as error:
            warnings.warn(f"log_likelihood is reported as NaN: {error}", stacklevel=2)
            ll = first_tensor(source).new_full((len(source),), math.nan)
        terms = elbo_terms(model, source, elbo_particles, max_plate_nesting=nesting,
                           max_enumeration=max_enumeration)
        try:
            units, variances = active_units(model, source, site=latent_site)
            kl_dims = kl_per_dimension(model, source, site=latent_site)
        except KeyError:
            units, variances, kl_dims = None, None, None
        accuracy = None
        if labels is not None:
            from pyro_vae.inference.discrete import label_accuracy
            accuracy = label_accuracy(model, source, labels, site=discrete_site)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    extra = {} if accuracy is None else {"y_probs": accuracy.probs}
    return EvaluationResult(
        log_likelihood=ll.mean().item(), elbo=terms["elbo"].mean().item(),
        recon=terms["recon"].mean().item(), kl=terms["kl"].mean().item(),
        active_units=units, num_datapoints=len(source), num_samples=num_samples,
        kl_per_dimension=None if kl_dims is None else kl_dims.tolist(),
        unit_variances=None if variances is None else variances.tolist(),
        discrete_sites=plan.describe(),
        accuracy=None if accuracy is None else accuracy.accuracy,
        accuracy_kind=None if accuracy is None else accuracy.kind,
        per_datapoint={"log_likelihood": ll, **terms, **extra})
