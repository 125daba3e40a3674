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

A model may provide its own ``importance_log_weights(*batch, num_particles)`` (returning
``(K, B)``), e.g. to sum a discrete latent out exactly; it is then used instead.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
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


def _importance_chunk(model, batch, k: int, nesting: int | None) -> torch.Tensor:
    own = getattr(model, "importance_log_weights", None)
    if callable(own):
        return own(*batch, num_particles=k)
    return log_density_terms(model, batch, k, nesting).log_weights


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
                   seed: int | None = None) -> torch.Tensor:
    """Importance-sampled log p(x_n) for every datapoint, shape (N,), in nats.

    log p(x_n) ~= logsumexp_k log w_kn - log K with K = ``num_samples`` draws from the guide.
    Work proceeds in chunks of at most ``particle_budget`` (particle, datapoint) pairs.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    source = as_source(data)
    if seed is not None:
        pyro.set_rng_seed(seed)
    _refuse_point_mass_guide(model, source)
    batch_size, chunk = _chunking(len(source), num_samples, batch_size, particle_budget)
    out = []
    for batch in ordered_batches(source, batch_size):
        running = None
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            lse = torch.logsumexp(_importance_chunk(model, batch, k, max_plate_nesting), 0)
            running = lse if running is None else torch.logaddexp(running, lse)
        out.append(running - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def elbo_terms(model, data, num_particles: int = 1, *, batch_size: int = 1024,
               max_plate_nesting: int | None = None) -> dict[str, torch.Tensor]:
    """Per-datapoint Monte Carlo ELBO and its terms (each shape (N,)): ``recon`` =
    E_q log p(x|z), ``kl`` = E_q[log q(z|x) - log p(z)], ``elbo`` = recon - kl (beta = 1)."""
    source = as_source(data)
    recon, kl = [], []
    for batch in ordered_batches(source, batch_size):
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


@torch.no_grad()
def posterior_means(model, data, site: str = "z", batch_size: int = 1024) -> torch.Tensor:
    """E_q[z | x_n] for every datapoint, shape (N, z_dim)."""
    source = as_source(data)
    means = []
    for batch in ordered_batches(source, batch_size):
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
    for non-factorised families (full-rank and flow guides, mixture and Vamp priors).
    """
    source = as_source(data)
    total, count = None, 0
    for batch in ordered_batches(source, batch_size):
        guide_site, model_site = _guide_latent(model, batch, site)
        q, p = _factorised(guide_site["fn"]), model_site and _factorised(model_site["fn"])
        if q is None or p is None:
            return None
        try:
            kl = torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            z = q.sample((num_samples,))
            kl = (q.log_prob(z) - p.log_prob(z)).mean(0)
        kl = kl.expand(q.batch_shape).reshape(-1, kl.shape[-1])
        total = kl.sum(0) if total is None else total + kl.sum(0)
        count += kl.shape[0]
    return total / count


@dataclass
class EvaluationResult:
    """Per-datapoint summaries (nats) and the per-datapoint arrays behind them."""

    log_likelihood: float
    elbo: float
    recon: float
    kl: float
    active_units: int | None
    num_datapoints: int
    num_samples: int
    kl_per_dimension: list[float] | None = None
    unit_variances: list[float] | None = None
    per_datapoint: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """Plain JSON-ready numbers (no per-datapoint arrays)."""
        return {k: v for k, v in asdict(self).items() if k != "per_datapoint"}


def evaluate(model, data, num_samples: int = 5000, *, elbo_particles: int = 10,
             batch_size: int | None = None, particle_budget: int = 2 ** 15,
             latent_site: str = "z", seed: int | None = 0,
             check: bool = True) -> EvaluationResult:
    """Importance-sampled log p(x) with ``num_samples`` particles (default 5000, as Burda
    et al. 2015), the ELBO and its two terms (``elbo_particles`` draws), active units and
    mean KL per latent dimension; all averages per datapoint in nats."""
    check_positive_int(elbo_particles, "elbo_particles")
    check_positive_int(particle_budget, "particle_budget")
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
        try:
            ll = log_likelihood(model, source, num_samples, batch_size=batch_size,
                                particle_budget=particle_budget, max_plate_nesting=nesting)
        except PointMassGuideError as error:
            warnings.warn(f"log_likelihood is reported as NaN: {error}", stacklevel=2)
            ll = first_tensor(source).new_full((len(source),), math.nan)
        terms = elbo_terms(model, source, elbo_particles, max_plate_nesting=nesting)
        try:
            units, variances = active_units(model, source, site=latent_site)
            kl_dims = kl_per_dimension(model, source, site=latent_site)
        except KeyError:
            units, variances, kl_dims = None, None, None
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return EvaluationResult(
        log_likelihood=ll.mean().item(), elbo=terms["elbo"].mean().item(),
        recon=terms["recon"].mean().item(), kl=terms["kl"].mean().item(),
        active_units=units, num_datapoints=len(source), num_samples=num_samples,
        kl_per_dimension=None if kl_dims is None else kl_dims.tolist(),
        unit_variances=None if variances is None else variances.tolist(),
        per_datapoint={"log_likelihood": ll, **terms})
