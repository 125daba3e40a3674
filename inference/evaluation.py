"""Judging a fitted model: importance-sampled log-likelihood, ELBO terms, active units.

Everything is per datapoint and in nats. The estimators work for any object with Pyro
``model(*batch)`` / ``guide(*batch)`` methods whose datapoint plate is named ``"data"``:

* per-datapoint log-weights: a particles plate outside the data plate; trace the guide,
  replay the model, and sum *unscaled* log-densities inside the data plate only, so
  minibatch scale and KL weight beta never leak into reported numbers:
  log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n), shape (K, N);
* log p(x_n) ~= log (1/K) sum_k w_kn (Burda et al. 2015), a stochastic lower bound that
  tightens as K grows, accumulated chunk by chunk with ``logaddexp`` so memory is bounded
  by the chunk (``particle_budget`` pairs, sized from the data and device by default), not
  by K or N;
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
from dataclasses import asdict, dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_vae.inference.batching import (
    _chunking,
    as_source,
    automatic_particle_budget,
    first_tensor,
    ordered_batches,
)
from pyro_vae.inference.enumeration import (
    MAX_ENUMERATION,
    _canonical,
    _enumerated_traces,
    _enumeration_layout,
    _particle_budget,
    _plan,
    enumerated_terms,
)
from pyro_vae.inference.log_densities import (
    PointMassGuideError,
    _rng_untouched,
    guess_max_plate_nesting,
    is_point_mass,
    log_density_terms,
)
from pyro_vae.inference.random_state import restores_random_state
from pyro_vae.models._validation import check_positive_int


def _importance_chunk(model, batch, k: int, nesting: int | None,
                      enumerate_discrete: bool = False) -> torch.Tensor:
    own = getattr(model, "importance_log_weights", None)
    if callable(own):
        return own(*batch, num_particles=k)
    if enumerate_discrete:
        return enumerated_terms(model, batch, k, nesting).log_weights
    return log_density_terms(model, batch, k, nesting).log_weights


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


def _validate_one_draw_each(model, source, datapoints: int, nesting: int,
                            enumerate_discrete: bool) -> None:
    """Pyro's validation on one guide draw per datapoint, ``datapoints`` at a time: the data's
    support and every parameter the guide gives a datapoint, with the random state untouched."""
    with _rng_untouched():
        for batch in ordered_batches(source, datapoints):
            _importance_chunk(model, batch, 1, nesting, enumerate_discrete)


@restores_random_state
@torch.no_grad()
def log_likelihood(model, data, num_samples: int = 5000, *, batch_size: int | None = None,
                   particle_budget: int | None = None, max_plate_nesting: int | None = None,
                   seed: int | None = None, max_enumeration: int = MAX_ENUMERATION
                   ) -> torch.Tensor:
    """Importance-sampled log p(x_n) for every datapoint, shape (N,), in nats.

    log p(x_n) ~= logsumexp_k log w_kn - log K with K = ``num_samples`` draws from the guide.
    Discrete latent sites are summed out exactly inside every weight when their joint
    configurations number at most ``max_enumeration`` (see :class:`EnumeratedTerms`), and
    drawn from the guide like any latent otherwise. Work proceeds in chunks of at most
    ``particle_budget`` (particle, datapoint, configuration) triples; by default (None) the
    chunk is sized from the data's row size and device (:func:`automatic_particle_budget`: on
    a CPU about 5350 pairs at 784 features, whose temporaries stay in cache), so memory follows
    the chunk, never N or K. A ``seed`` fixes the draws without touching the caller's random
    streams (:mod:`.random_state`).

    With Pyro's validation on (its default), one validated draw per datapoint checks the data
    and the guide's parameters first; the estimate's chunks then skip Pyro's per-particle
    checks, and a datapoint whose estimate comes out NaN has its draws rerun validated, so
    that Pyro's own error names the offending site.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    if particle_budget is not None:
        check_positive_int(particle_budget, "particle_budget")
    source = as_source(data)
    if seed is not None:
        pyro.set_rng_seed(seed)
    _refuse_point_mass_guide(model, source)
    plan = _plan(model, source, max_enumeration)
    first = next(ordered_batches(source, 2))
    if max_plate_nesting is None:
        with _rng_untouched():
            max_plate_nesting = guess_max_plate_nesting(model, first)
    budget = _particle_budget(plan, particle_budget or automatic_particle_budget(first))
    batch_size, chunk = _chunking(len(source), num_samples, batch_size, budget)

    def estimate(batch) -> torch.Tensor:
        running = None
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            lse = torch.logsumexp(_importance_chunk(model, batch, k, max_plate_nesting,
                                                    plan.enumerate), 0)
            running = lse if running is None else torch.logaddexp(running, lse)
        return running - math.log(num_samples)

    validating = dist.is_validation_enabled()
    if validating:
        _validate_one_draw_each(model, source, budget, max_plate_nesting, plan.enumerate)
    out = []
    for batch in ordered_batches(source, batch_size):
        with pyro.validation_enabled(False):
            out.append(estimate(batch))
        if validating and bool(out[-1].isnan().any()):
            estimate(batch)   # validated this time: raises Pyro's error if a site is invalid
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
    (after the best one-to-one matching of clusters to labels) otherwise. A model with several
    latent sites (``model.latent_sites``, e.g. the hierarchical VAE's ``z1``, ``z2``) gets
    ``layers``: per site its ``size``, ``kl`` (the sum of its KL per dimension, against the
    prior given the layer above) and ``active_units``; ``active_units`` is then their sum.
    A model with global latent sites (``model.global_sites``: a Bayesian decoder's weights)
    gets ``weight_kl`` = KL(q(W) || p(W)) in nats, in all (the training loss counts it once
    per pass over the data); its per-datapoint numbers are then predictive, given W ~ q(W)
    drawn afresh for every particle.
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
    layers: dict[str, dict] | None = None
    weight_kl: float | None = None
    per_datapoint: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """Plain JSON-ready numbers (no per-datapoint arrays)."""
        return {k: v for k, v in asdict(self).items() if k != "per_datapoint"}


@restores_random_state
def evaluate(model, data, num_samples: int = 5000, *, elbo_particles: int = 10,
             batch_size: int | None = None, particle_budget: int | None = None,
             latent_site: str = "z", seed: int | None = 0, check: bool = True,
             labels: torch.Tensor | None = None, discrete_site: str = "y",
             max_enumeration: int = MAX_ENUMERATION) -> EvaluationResult:
    """Importance-sampled log p(x) with ``num_samples`` particles (default 5000, as Burda
    et al. 2015), the ELBO and its two terms (``elbo_particles`` draws), active units and
    mean KL per latent dimension; all averages per datapoint in nats.

    Discrete latent sites are summed out exactly in log p(x), the ELBO and its terms, and
    in E_q[z|x], whenever their joint configurations number at most ``max_enumeration``.
    ``particle_budget`` bounds the (particle, datapoint) pairs of one chunk of log p(x);
    None sizes it from the data and device (see :func:`log_likelihood`).
    ``labels`` (one integer per datapoint) add the accuracy of argmax q(y|x) at the guide's
    site ``discrete_site`` (see :class:`EvaluationResult`). ``seed`` fixes the draws and
    leaves the caller's random streams where they were (:mod:`.random_state`).
    """
    check_positive_int(elbo_particles, "elbo_particles")
    if particle_budget is not None:
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
        layers = _layer_summaries(model, source)
        try:
            units, variances = active_units(model, source, site=latent_site)
            kl_dims = kl_per_dimension(model, source, site=latent_site)
        except KeyError:
            units, variances, kl_dims = None, None, None
        if layers and units is None:
            units = sum(layer["active_units"] for layer in layers.values())
        accuracy = None
        if labels is not None:
            from pyro_vae.inference.metrics.classes import label_accuracy
            accuracy = label_accuracy(model, source, labels, site=discrete_site)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    extra = {} if accuracy is None else {"y_probs": accuracy.probs}
    weight_kl = getattr(model, "weight_kl", None)
    return EvaluationResult(
        log_likelihood=ll.mean().item(), elbo=terms["elbo"].mean().item(),
        recon=terms["recon"].mean().item(), kl=terms["kl"].mean().item(),
        active_units=units, num_datapoints=len(source), num_samples=num_samples,
        kl_per_dimension=None if kl_dims is None else kl_dims.tolist(),
        unit_variances=None if variances is None else variances.tolist(),
        discrete_sites=plan.describe(),
        accuracy=None if accuracy is None else accuracy.accuracy,
        accuracy_kind=None if accuracy is None else accuracy.kind, layers=layers,
        weight_kl=float(weight_kl().detach()) if callable(weight_kl) else None,
        per_datapoint={"log_likelihood": ll, **terms, **extra})


def _layer_summaries(model, source) -> dict[str, dict] | None:
    """Size, KL and active units of each site in ``model.latent_sites`` (None without)."""
    sites = getattr(model, "latent_sites", None)
    if not sites:
        return None
    layers = {}
    for site in sites:
        units, variances = active_units(model, source, site=site)
        kl_dims = kl_per_dimension(model, source, site=site)
        layers[site] = {"size": len(variances), "active_units": units,
                        "kl": None if kl_dims is None else float(kl_dims.sum())}
    return layers


def gaussian_kl(mu: float, sigma: float) -> float:
    """KL(N(mu, sigma^2) || N(0, 1)) = (mu^2 + sigma^2 - 1) / 2 - log sigma."""
    return 0.5 * (mu * mu + sigma * sigma - 1.0) - math.log(sigma)
