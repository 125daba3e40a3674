"""Diagnosing a guide and an estimator: gradient signal-to-noise, PSIS k-hat, importance draws.

* **Gradient signal-to-noise** (Rainforth et al. 2018, "Tighter variational bounds are not
  necessarily better"): at fixed parameters and on one fixed minibatch, draw the estimator's
  gradient G times, so only the particle noise varies. For each parameter element j,
  SNR_j = |mean_g grad_gj| / std_g grad_gj; each parameter group (encoder, decoder) is
  summarised by the mean and the median of SNR_j over its elements. For IWAE the encoder's
  SNR falls like 1/sqrt(K) and the decoder's rises like sqrt(K).
* **PSIS k-hat** (Yao, Vehtari, Simpson & Gelman 2018; Vehtari et al. 2024): a generalized
  Pareto distribution fitted to the largest importance weights w_k = p(x, z_k) / q(z_k | x)
  of each datapoint. Its shape k-hat estimates how many moments the weights have: above 0.7
  the importance-sampled log p(x) and the guide as a proposal are unreliable, between 0.5 and
  0.7 marginal. The fit is ``arviz.psislw``.
* **Importance draws**: z_k ~ q(z | x_n) with their log-weights, for posterior summaries and
  importance resampling (see :mod:`pyro_vae.arviz_export`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from torch import nn

from pyro_vae.inference.batching import as_source, ordered_batches
from pyro_vae.inference.estimators import make_estimator, parse_estimator
from pyro_vae.inference.evaluation import (
    MAX_ENUMERATION,
    _chunking,
    _importance_chunk,
    _particle_budget,
    _plan,
    guess_max_plate_nesting,
    log_density_terms,
)
from pyro_vae.inference.random_state import restores_random_state

#: k-hat thresholds of Vehtari et al.: above RELIABLE_KHAT the estimate is unreliable
GOOD_KHAT = 0.5
RELIABLE_KHAT = 0.7
#: fewer draws than this leave too few weights in the tail for the Pareto fit
MIN_KHAT_SAMPLES = 50


# ---- gradient signal-to-noise ------------------------------------------------------------
def parameter_groups(model, groups: Mapping | None = None) -> dict[str, list[nn.Parameter]]:
    """Resolve parameter groups: name -> trainable parameters.

    ``groups`` maps a name to a module or an iterable of parameters. By default a model with
    a ``guide_family`` module (the VAE) is split into ``encoder`` (the guide family) and
    ``decoder`` (every other parameter: decoder network, likelihood, prior); a model with a
    ``parameter_groups()`` method (the discrete-latent models: ``classifier``, ``encoder``,
    ``decoder``) names its own; any other model gets a single group ``all``.
    """
    own_groups = getattr(model, "parameter_groups", None)
    if groups is None and callable(own_groups):
        groups = own_groups()
    if groups is None:
        guide_family = getattr(model, "guide_family", None)
        if isinstance(guide_family, nn.Module):
            encoder = list(guide_family.parameters())
            ids = {id(p) for p in encoder}
            groups = {"encoder": encoder,
                      "decoder": [p for p in model.parameters() if id(p) not in ids]}
        else:
            groups = {"all": list(model.parameters())}
    if not isinstance(groups, Mapping) or not groups:
        raise TypeError("groups must be a non-empty dict mapping a group name to a module or "
                        f"an iterable of parameters, e.g. {{'encoder': model.encoder}}; got "
                        f"{type(groups).__name__}")
    resolved, seen = {}, {}
    for name, members in groups.items():
        params = list(members.parameters() if isinstance(members, nn.Module) else members)
        bad = [type(p).__name__ for p in params if not isinstance(p, torch.Tensor)]
        if bad:
            raise TypeError(f"group {name!r} must hold torch parameters; got {bad[:3]}")
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ValueError(f"group {name!r} has no trainable parameters; pass a module or "
                             "parameters with requires_grad=True")
        for p in params:
            if id(p) in seen:
                raise ValueError(f"a parameter is in both group {seen[id(p)]!r} and group "
                                 f"{name!r}; each parameter may belong to one group only")
            seen[id(p)] = name
        resolved[str(name)] = params
    return resolved


class _RunningMoments:
    """Welford's running mean and sum of squared deviations, elementwise, in float64."""

    def __init__(self, size: int, device):
        self.count = 0
        self.mean = torch.zeros(size, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(size, dtype=torch.float64, device=device)

    def update(self, value: torch.Tensor) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    @property
    def variance(self) -> torch.Tensor:
        """The unbiased variance (divisor count - 1)."""
        return self.m2 / max(self.count - 1, 1)


@dataclass
class GradientStats:
    """Per-element gradient statistics of one estimator on one parameter group.

    ``snr_mean`` / ``snr_median``: mean / median over elements of |E g_j| / sd(g_j), over the
    elements whose gradient varies (``num_constant`` others are left out);
    ``variance_mean``: mean over elements of Var(g_j); ``snr_vector``: ||E g|| /
    sqrt(sum_j Var g_j). Gradients are of the batch-mean negative objective (per datapoint).
    """

    estimator: str
    group: str
    num_elements: int
    num_constant: int
    num_draws: int
    snr_mean: float
    snr_median: float
    variance_mean: float
    mean_norm: float
    snr_vector: float
    snr: torch.Tensor = field(repr=False)  # per element, NaN where the gradient is constant
    mean: torch.Tensor | None = field(default=None, repr=False)      # E g_j per element
    variance: torch.Tensor | None = field(default=None, repr=False)  # Var g_j (unbiased)

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("snr", "mean", "variance")}

    def standard_error(self) -> torch.Tensor:
        """Per element, the standard error of ``mean``: sqrt(Var g_j / draws)."""
        return (self.variance / self.num_draws).sqrt()


@dataclass
class GradientSNRResult:
    """Gradient statistics per (estimator, group), from :func:`gradient_snr`."""

    stats: list[GradientStats]
    settings: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        return [s.row() for s in self.stats]

    def get(self, estimator: str, group: str) -> GradientStats:
        """The statistics of ``estimator`` (as labelled, or an equivalent spec) on ``group``."""
        for s in self.stats:
            if s.group == group and _same_estimator(s.estimator, estimator):
                return s
        raise KeyError(f"no statistics for estimator {estimator!r}, group {group!r}; have "
                       f"{[(s.estimator, s.group) for s in self.stats]}")


def _same_estimator(label: str, wanted: str) -> bool:
    if label == wanted:
        return True
    try:
        return parse_estimator(label) == parse_estimator(wanted)
    except ValueError:
        return False


def _summarise(estimator: str, group: str, moments: _RunningMoments) -> GradientStats:
    std = moments.variance.sqrt()
    varies = std > 0
    snr = torch.full_like(std, float("nan"))
    snr[varies] = moments.mean[varies].abs() / std[varies]
    live = snr[varies]
    total_variance = moments.variance.sum().item()
    mean_norm = moments.mean.norm().item()
    return GradientStats(
        estimator=estimator, group=group, num_elements=std.numel(),
        num_constant=int((~varies).sum()), num_draws=moments.count,
        snr_mean=live.mean().item() if live.numel() else float("nan"),
        snr_median=live.median().item() if live.numel() else float("nan"),
        variance_mean=moments.variance.mean().item(), mean_norm=mean_norm,
        snr_vector=mean_norm / math.sqrt(total_variance) if total_variance > 0 else float("nan"),
        snr=snr.float().cpu(), mean=moments.mean.cpu(), variance=moments.variance.cpu())


def _as_batch(batch) -> tuple[torch.Tensor, ...]:
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch and all(
            isinstance(t, torch.Tensor) for t in batch):
        return tuple(batch)
    raise TypeError("batch must be a tensor (B, features) or a tuple of tensors for "
                    f"model(*batch); got {type(batch).__name__}. Take a fixed minibatch, e.g. "
                    "data[:100].")


@restores_random_state
def gradient_snr(model, batch, estimators: Sequence = ("iwae:k=1", "iwae:k=5", "iwae:k=50"),
                 *, num_draws: int = 100, groups: Mapping | None = None, seed: int | None = 0,
                 vectorize_particles: bool = True, warmup_draws: int = 0) -> GradientSNRResult:
    """Gradient variance and signal-to-noise ratio of each estimator at fixed parameters.

    ``batch`` is one fixed minibatch (a tensor or a tuple for ``model(*batch)``); every
    draw re-runs ``elbo.loss_and_grads`` on it, so only particle noise varies. Nothing is
    updated: the parameters stay as they are and their ``.grad`` is restored afterwards.
    ``estimators`` are specs (``'iwae:k=5'``) or objects with ``loss_and_grads``; each starts
    from ``seed``. ``groups`` is as in :func:`parameter_groups`. ``warmup_draws`` draws are
    made and discarded first, so an estimator with state (the running-average baseline of
    ``score:baseline=avg``) is measured settled rather than from its empty start.
    """
    batch = _as_batch(batch)
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"num_draws must be an integer >= 2 (a standard deviation needs two "
                         f"draws); got {num_draws!r}")
    if isinstance(warmup_draws, bool) or not isinstance(warmup_draws, int) or warmup_draws < 0:
        raise ValueError(f"warmup_draws must be a non-negative integer; got {warmup_draws!r}")
    if isinstance(estimators, str) or not estimators:
        raise ValueError("estimators must be a non-empty list of specs such as "
                         f"['iwae:k=1', 'iwae:k=50']; got {estimators!r}")
    for e in estimators:   # check every spec before drawing anything
        if not hasattr(e, "loss_and_grads"):
            parse_estimator(e)
    named = [e if hasattr(e, "loss_and_grads") else str(e).strip() for e in estimators]
    resolved = parameter_groups(model, groups)
    nesting = guess_max_plate_nesting(model, batch)
    saved_grads = {id(p): p.grad for p in model.parameters()}
    batch_size = batch[0].shape[0]
    stats = []
    try:
        for spec in named:
            elbo = spec if not isinstance(spec, str) else make_estimator(
                spec, vectorize_particles=vectorize_particles, max_plate_nesting=nesting)
            label = spec if isinstance(spec, str) else type(spec).__name__
            if seed is not None:
                pyro.set_rng_seed(seed)
            moments = {name: _RunningMoments(sum(p.numel() for p in params), params[0].device)
                       for name, params in resolved.items()}
            for _ in range(warmup_draws):
                elbo.loss_and_grads(model.model, model.guide, *batch)
            for _ in range(num_draws):
                for p in model.parameters():
                    p.grad = None
                elbo.loss_and_grads(model.model, model.guide, *batch)
                for name, params in resolved.items():
                    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                                      .detach().reshape(-1) for p in params])
                    moments[name].update(flat.double() / batch_size)
            stats.extend(_summarise(label, name, m) for name, m in moments.items())
    finally:
        for p in model.parameters():
            p.grad = saved_grads.get(id(p))
    return GradientSNRResult(stats, {"num_draws": num_draws, "batch_size": batch_size,
                                     "seed": seed, "groups": list(resolved),
                                     "warmup_draws": warmup_draws})


# ---- PSIS k-hat ---------------------------------------------------------------------------
def khat_from_log_weights(log_weights, tie_tolerance: float = 1e-3) -> np.ndarray:
    """PSIS k-hat for every datapoint from log-weights of shape (K, N) -> (N,).

    Calls ``arviz.psislw`` (draws on the last axis). A datapoint whose K log-weights all lie
    within ``tie_tolerance`` nats of each other (weights equal to within a factor
    exp(tie_tolerance): the guide matches its posterior on these draws, up to rounding) has
    no tail to fit; arviz would fit rounding noise there or return +inf for lack of distinct
    tail values, so its k-hat is reported as -inf (perfectly reliable) instead.
    """
    import arviz as az

    lw = (log_weights.detach().cpu().double().numpy() if isinstance(log_weights, torch.Tensor)
          else np.asarray(log_weights, dtype=np.float64))
    if lw.ndim != 2:
        raise ValueError(f"log_weights must have shape (K draws, N datapoints); got shape "
                         f"{lw.shape}")
    if lw.shape[0] < MIN_KHAT_SAMPLES:
        raise ValueError(f"PSIS k-hat needs at least {MIN_KHAT_SAMPLES} draws per datapoint "
                         f"(1000 or more is advisable); got K={lw.shape[0]}")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError("log_weights contain NaN or +inf; check the model and the guide "
                         "(a weight of +inf means q(z|x) = 0 where the draw was made)")
    lw = lw.T
    top = lw.max(axis=1)
    if np.isneginf(top).any():
        raise ValueError(f"every weight is zero for datapoints "
                         f"{np.flatnonzero(np.isneginf(top))[:5].tolist()}: the guide proposes "
                         "only where the model has no density")
    khat = np.full(lw.shape[0], -np.inf)
    fit = top - lw.min(axis=1) > tie_tolerance
    if fit.any():
        with np.errstate(divide="ignore", invalid="ignore"):  # degenerate tails in gpdfit
            _, khat[fit] = az.psislw(lw[fit])
    return khat


@dataclass
class KHatResult:
    """PSIS k-hat per datapoint of a guide used as an importance-sampling proposal."""

    khat: np.ndarray
    num_samples: int

    @property
    def fraction_bad(self) -> float:
        """Share of datapoints with k-hat > 0.7: the guide is unreliable there."""
        return float(np.mean(self.khat > RELIABLE_KHAT))

    @property
    def fraction_ok(self) -> float:
        """Share with 0.5 < k-hat <= 0.7: usable but slow to converge."""
        return float(np.mean((self.khat > GOOD_KHAT) & (self.khat <= RELIABLE_KHAT)))

    @property
    def fraction_good(self) -> float:
        """Share with k-hat <= 0.5."""
        return float(np.mean(self.khat <= GOOD_KHAT))

    @property
    def sample_size_threshold(self) -> float:
        """Vehtari et al. (2024): with S draws, k-hat above min(1 - 1/log10 S, 0.7) is
        unreliable."""
        return min(1.0 - 1.0 / math.log10(self.num_samples), RELIABLE_KHAT)

    def summary(self) -> dict:
        finite = self.khat[np.isfinite(self.khat)]
        return {"num_datapoints": int(self.khat.size), "num_samples": self.num_samples,
                "fraction_khat_above_0.7": self.fraction_bad,
                "fraction_khat_0.5_to_0.7": self.fraction_ok,
                "fraction_khat_at_most_0.5": self.fraction_good,
                "khat_median": float(np.median(self.khat)),
                "khat_max": float(finite.max()) if finite.size else float(np.max(self.khat)),
                "sample_size_threshold": self.sample_size_threshold}


@restores_random_state
@torch.no_grad()
def importance_log_weights(model, data, num_samples: int = 1000, *,
                           batch_size: int | None = None, particle_budget: int = 2 ** 15,
                           seed: int | None = None) -> torch.Tensor:
    """All per-datapoint log-weights log p(x_n, z_kn) - log q(z_kn | x_n), shape (K, N).

    Uses the model's own ``importance_log_weights`` where it has one, and sums discrete
    sites out exactly inside every weight where they can be enumerated (as evaluation does).
    Memory is K x N numbers; work proceeds in chunks of ``particle_budget`` pairs.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    source = as_source(data)
    if seed is not None:
        pyro.set_rng_seed(seed)
    plan = _plan(model, source, MAX_ENUMERATION)
    batch_size, chunk = _chunking(len(source), num_samples, batch_size,
                                  _particle_budget(plan, particle_budget))
    nesting = guess_max_plate_nesting(model, next(ordered_batches(source, 2)))
    columns = []
    for batch in ordered_batches(source, batch_size):
        columns.append(torch.cat([
            _importance_chunk(model, batch, min(chunk, num_samples - start), nesting,
                              plan.enumerate)
            for start in range(0, num_samples, chunk)]))
    return torch.cat(columns, dim=1)


def psis_khat(model, data, num_samples: int = 1000, *, batch_size: int | None = None,
              particle_budget: int = 2 ** 15, seed: int | None = 0) -> KHatResult:
    """PSIS k-hat of the guide for every datapoint of ``data``, from ``num_samples`` guide
    draws each (Yao et al. 2018). See :class:`KHatResult` for the summary fractions."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        log_w = importance_log_weights(model, data, num_samples, batch_size=batch_size,
                                       particle_budget=particle_budget, seed=seed)
    finally:
        if was_training:
            model.train()
    return KHatResult(khat_from_log_weights(log_w), num_samples)


# ---- importance draws ---------------------------------------------------------------------
@dataclass
class ImportanceDraws:
    """Guide draws for a few datapoints and their weights; every tensor has the K draws
    first and the N datapoints second."""

    latents: dict[str, torch.Tensor]  # site -> (K, N, *event_shape)
    log_weights: torch.Tensor         # log p(x, z) - log q(z | x)
    log_likelihood: torch.Tensor      # log p(x | z)
    log_prior: torch.Tensor           # log p(z)
    log_guide: torch.Tensor           # log q(z | x)
    #: with ``replicate=True``: observed site -> (K, N, *event_shape), x_rep ~ p(x | z_k)
    replicates: dict[str, torch.Tensor] = field(default_factory=dict)

    def resample(self, num_draws: int, generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
        """Sampling-importance-resampling: for each datapoint, ``num_draws`` draws picked
        with replacement with probability proportional to w_k; approximately from p(z|x)."""
        probs = torch.softmax(self.log_weights.double(), dim=0).T.cpu()   # (N, K)
        picks = torch.multinomial(probs, num_draws, replacement=True, generator=generator).T
        columns = torch.arange(picks.shape[1]).expand_as(picks)
        return {name: value[picks.to(value.device), columns.to(value.device)]
                for name, value in self.latents.items()}


@restores_random_state
@torch.no_grad()
def importance_draws(model, data, num_draws: int = 1000, *, particle_budget: int = 2 ** 18,
                     seed: int | None = 0, replicate: bool = False) -> ImportanceDraws:
    """``num_draws`` draws z ~ q(z | x_n) for every datapoint of ``data`` (a few points:
    memory is K x N x latent size), with log p(x|z), log p(z), log q(z|x) and the weights;
    with ``replicate``, also x_rep ~ p(x | z) for each draw (posterior predictive)."""
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer; got {num_draws!r}")
    source = as_source(data)
    if seed is not None:
        pyro.set_rng_seed(seed)
    batch_size = max(1, min(len(source), particle_budget // num_draws))
    nesting = guess_max_plate_nesting(model, next(ordered_batches(source, 2)))
    parts = [log_density_terms(model, batch, num_draws, nesting, replicate=replicate)
             for batch in ordered_batches(source, batch_size)]

    def joined(values: Iterable[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(values), dim=1)

    return ImportanceDraws(
        latents={name: joined(p.latents[name] for p in parts) for name in parts[0].latents},
        log_weights=joined(p.log_weights for p in parts),
        log_likelihood=joined(p.log_likelihood for p in parts),
        log_prior=joined(p.log_prior for p in parts),
        log_guide=joined(p.log_guide for p in parts),
        replicates={name: joined(p.replicates[name] for p in parts)
                    for name in parts[0].replicates})


def score_gradient_variance(model, batch, baselines=("none", "avg", "nn"), *,
                            others=("enum",), num_draws: int = 100, warmup_draws: int = 20,
                            k: int = 1, seed: int | None = 0):
    """:func:`~pyro_vae.inference.gradient_snr` of ``score:baseline=B,k=K`` for every
    baseline B, beside the ``others`` specs (by default the exact-in-y ``enum``), at the
    model's current parameters on one fixed ``batch``; ``warmup_draws`` let the running
    averages settle first. The ``nn`` baseline uses the model's baseline network as it is
    (trained by a ``score:baseline=nn`` fit, or by :func:`train_baseline_network`)."""
    specs = [*others, *(f"score:baseline={b},k={k}" for b in baselines)]
    return gradient_snr(model, batch, specs, num_draws=num_draws, warmup_draws=warmup_draws,
                        seed=seed)
