"""Gradient estimators for models with discrete latent sites, registered by name.

========================================  ====================================================
spec                                      how the discrete sites y enter the gradient
========================================  ====================================================
``enum`` (``enum:k=K``)                   TraceEnum_ELBO with every discrete site of model and
                                          guide enumerated in parallel: the expectation over y
                                          is an exact sum, only continuous latents are drawn
``score:baseline=B,decay=D`` (``k=K``)    TraceGraph_ELBO: the score-function (REINFORCE) term
                                          (c - b) grad log q(y|x), with c the cost downstream
                                          of y (Pyro's dependency tracking) and baseline b
``relaxed:t0=T,tmin=M,rate=R`` (``k=K``)  Gumbel-softmax / Concrete relaxation (Jang, Gu &
                                          Poole 2016; Maddison, Mnih & Teh 2016), tau annealed
========================================  ====================================================

Baselines for ``score`` (all keep the gradient unbiased; they are computed before the
current batch's costs are seen, per datapoint c_n / s with s the subsample scale N/B):

* ``none``: b = 0;
* ``avg``: b = the running average of the per-datapoint downstream cost over past steps,
  m <- D m + (1 - D) mean_n c_n, bias-corrected (m / (1 - D^t)) as in Adam;
* ``nn``: NVIL (Mnih & Gregor 2014): that running average plus an input-dependent
  correction b(x_n) from the model's ``baseline_network`` (one output column per discrete
  site), trained with the other parameters by minimising s sum_n (c_n / s - avg - b(x_n))^2.

Unlike Pyro's built-in decaying-average baseline (one value per batch position, kept in the
global parameter store), these work for a smaller last batch, keep their state in the
estimator (``state_dict``, so checkpoints resume them) and never touch the param store.

``relaxed`` trains Jang et al.'s objective: each discrete site y is replaced, in guide and
model alike, by a reparameterised relaxed sample softmax((log q + g) / tau), g ~ Gumbel(0, 1),
and KL(q(y|x) || p(y)) of the *categorical* distributions enters in closed form
(TraceMeanField_ELBO; continuous sites get their closed-form KL where one is registered).
tau = max(tmin, t0 exp(-rate * step)), stepped once per ``loss_and_grads``. This is not the
discrete model's ELBO: the numbers :func:`~pyro_vae.inference.evaluate` and ``fit``'s
monitoring report are the discrete model's (y summed exactly where it can be enumerated).
"""

from __future__ import annotations

import math
from collections import defaultdict

import pyro.distributions as dist
import pyro.infer
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.enum import config_enumerate
from pyro.infer.util import MultiFrameTensor
from pyro.ops.provenance import detach_provenance, get_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import constraints
from torch.distributions.kl import register_kl

from pyro_vae.inference.estimators import Choice, _particles_kwargs, register_estimator
from pyro_vae.inference.evaluation import (
    MAX_ENUMERATION,
    _rng_untouched,
    discrete_site_sizes,
)

BASELINES = ("none", "avg", "nn")


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


# ---- score function -------------------------------------------------------------------------
def _subsample_scale(site) -> float:
    """N/B over the site's subsampled plates (1 without subsampling)."""
    scale = 1.0
    for frame in site["cond_indep_stack"]:
        if frame.full_size is not None and frame.size and frame.full_size != frame.size:
            scale *= frame.full_size / frame.size
    return scale


class ScoreELBO(pyro.infer.TraceGraph_ELBO):
    """TraceGraph_ELBO (score-function gradients for non-reparameterised sites) with the
    baselines of the module docstring: ``baseline`` in 'none', 'avg', 'nn'; ``decay`` is
    the running average's decay D."""

    def __init__(self, baseline: str = "none", decay: float = 0.9, num_particles: int = 1,
                 vectorize_particles: bool = False, max_plate_nesting: float = float("inf")):
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles,
                         max_plate_nesting=max_plate_nesting)
        _check_score_options({"baseline": baseline, "decay": decay})
        self.baseline, self.decay = baseline, float(decay)
        #: per discrete site: the (biased) running mean m of c_n / s and its step count t
        self.averages: dict[str, dict] = {}
        self._network_output: tuple | None = None
        #: set it to a list to collect the baseline network's regression loss (per datapoint
        #: sum over sites and points, unscaled) of every step
        self.baseline_losses: list | None = None

    # -- state (saved in checkpoints by fit) ----------------------------------------------
    def state_dict(self) -> dict:
        return {"baseline": self.baseline, "decay": self.decay,
                "averages": {name: dict(state) for name, state in self.averages.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("baseline") != self.baseline or state.get("decay") != self.decay:
            raise ValueError(f"this state belongs to score:baseline={state.get('baseline')},"
                             f"decay={state.get('decay')}, not score:baseline={self.baseline},"
                             f"decay={self.decay}")
        self.averages = {name: {"mean": float(s["mean"]), "steps": int(s["steps"])}
                         for name, s in state["averages"].items()}

    # -- the gradient -----------------------------------------------------------------------
    def loss_and_grads(self, model, guide, *args, **kwargs):
        if self.baseline == "nn":
            self._network_output = _run_baseline_network(guide, args)
        try:
            return super().loss_and_grads(model, guide, *args, **kwargs)
        finally:
            self._network_output = None

    def _baseline(self, name: str, guide_site, cost: torch.Tensor):
        """(baseline b with the cost's shape, or None; the baseline network's loss)."""
        if self.baseline == "none":
            return None, 0.0
        scale = _subsample_scale(guide_site)
        per_point = cost.detach() / scale
        state = self.averages.setdefault(name, {"mean": 0.0, "steps": 0})
        steps = state["steps"]
        average = state["mean"] / (1.0 - self.decay ** steps) if steps else 0.0
        state["mean"] = self.decay * state["mean"] + (1.0 - self.decay) * float(
            per_point.mean())
        state["steps"] = steps + 1
        baseline = torch.full_like(per_point, average)
        loss = 0.0
        if self.baseline == "nn":
            if self._network_output is None:
                raise RuntimeError("score:baseline=nn computes its baseline network in "
                                   "loss_and_grads; use that method to train with it")
            sites, output = self._network_output
            if name not in sites:
                raise ValueError(f"the model's baseline_network has columns for {list(sites)} "
                                 f"but not for the discrete site {name!r}; list every discrete "
                                 "guide site in baseline_network.sites")
            correction = output[..., sites.index(name)]
            baseline = baseline + correction
            loss = scale * (per_point - baseline).pow(2).sum()
            if self.baseline_losses is not None:
                self.baseline_losses.append(float(loss.detach()) / scale)
        return scale * baseline, loss

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        """Pyro's TraceGraph surrogate (pyro/infer/tracegraph_elbo.py, ``_compute_elbo``)
        with this estimator's baselines."""
        elbo, surrogate_elbo, baseline_loss = 0.0, 0.0, 0.0
        downstream_costs = defaultdict(MultiFrameTensor)
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
                surrogate_elbo = surrogate_elbo + site["log_prob_sum"]
                for key in get_provenance(site["log_prob_sum"]):
                    downstream_costs[key].add((site["cond_indep_stack"], site["log_prob"]))
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo - site["log_prob_sum"]
                entropy_term = site["score_parts"].entropy_term
                if not is_identically_zero(entropy_term):
                    surrogate_elbo = surrogate_elbo - entropy_term.sum()
                for key in get_provenance(site["log_prob_sum"]):
                    downstream_costs[key].add((site["cond_indep_stack"], -site["log_prob"]))
        for name, downstream in downstream_costs.items():
            guide_site = guide_trace.nodes[name]
            cost = downstream.sum_to(guide_site["cond_indep_stack"])
            baseline, loss_term = self._baseline(name, guide_site, detach_provenance(cost))
            if baseline is not None:
                cost = cost - baseline
                baseline_loss = baseline_loss + loss_term
            score_function = guide_site["score_parts"].score_function
            surrogate_elbo = surrogate_elbo + (score_function * cost.detach()).sum()
        return detach_provenance(elbo), detach_provenance(-surrogate_elbo + baseline_loss)


def _run_baseline_network(guide, args) -> tuple[tuple[str, ...], torch.Tensor]:
    owner = getattr(guide, "__self__", None)
    network = getattr(owner, "baseline_network", None)
    if network is None:
        raise ValueError("score:baseline=nn needs a model that owns a `baseline_network` "
                         "module (x -> one value per discrete site, its `sites` naming the "
                         "columns), so that fit trains it with the other parameters; the "
                         "built-in discrete models (GaussianMixtureVAE, SemiSupervisedVAE, "
                         "CategoricalVAE) have one. Use score:baseline=avg for other models.")
    if not args or not isinstance(args[0], torch.Tensor):
        raise TypeError("score:baseline=nn feeds the first model argument (the data x) to "
                        "the baseline network; it must be a tensor")
    return tuple(network.sites), network(args[0])


def _check_score_options(options: dict) -> None:
    if options["baseline"] not in BASELINES:
        raise ValueError(f"baseline must be one of {list(BASELINES)}; got "
                         f"{options['baseline']!r}")
    if not 0.0 < options["decay"] < 1.0:
        raise ValueError(f"the running average's decay must lie in (0, 1); got "
                         f"decay={options['decay']}")


# ---- relaxation -----------------------------------------------------------------------------
class GumbelSoftmax(dist.TorchDistribution):
    """The Gumbel-softmax (Concrete) relaxation of a one-hot categorical with probabilities
    softmax(logits): y = softmax((logits + g) / tau), g ~ Gumbel(0, 1) i.i.d., a point on the
    simplex, reparameterised. log_prob is the Concrete density (Maddison et al. 2016, eq. 20);
    KL between two of them is registered as the KL of their categoricals (Jang et al.)."""

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, temperature: float, logits: torch.Tensor, validate_args=None):
        if not temperature > 0:
            raise ValueError(f"the temperature must be > 0; got {temperature!r}")
        self.temperature = float(temperature)
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GumbelSoftmax, _instance)
        batch_shape = torch.Size(batch_shape)
        new.temperature = self.temperature
        new.logits = self.logits.expand(batch_shape + self.event_shape)
        super(GumbelSoftmax, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        uniform = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(uniform.dtype).tiny)))
        return torch.softmax((self.logits + gumbel) / self.temperature, dim=-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        k = self.event_shape[-1]
        log_y = value.clamp(min=torch.finfo(value.dtype).tiny).log()
        tau = self.temperature
        return (math.lgamma(k) + (k - 1) * math.log(tau)
                + (self.logits - (tau + 1) * log_y).sum(-1)
                - k * torch.logsumexp(self.logits - tau * log_y, dim=-1))


@register_kl(GumbelSoftmax, GumbelSoftmax)
def _kl_categoricals(q: GumbelSoftmax, p: GumbelSoftmax) -> torch.Tensor:
    """sum_c q_c (log q_c - log p_c), with 0 log 0 = 0 (a guide pinned to a label)."""
    q_probs = q.logits.exp()
    terms = torch.where(q_probs > 0, q_probs * (q.logits - p.logits), 0.0)
    return terms.sum(-1)


class relax_discrete_sites(Messenger):
    """Replace every unobserved ``OneHotCategorical`` site by its :class:`GumbelSoftmax`
    relaxation at ``temperature`` (in a guide and in the model replayed against it)."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if (msg["is_observed"] or isinstance(fn, _Subsample) or fn.has_rsample
                or not getattr(fn, "has_enumerate_support", False)):
            return
        if not isinstance(fn, dist.OneHotCategorical):
            raise ValueError(f"the relaxed estimator replaces one-hot categorical sites by "
                             f"their Gumbel-softmax relaxation, but site {msg['name']!r} is a "
                             f"{type(fn).__name__}. Write the site as OneHotCategorical (values "
                             "one-hot vectors), or use the 'enum' or 'score' estimator.")
        msg["fn"] = GumbelSoftmax(self.temperature, fn.logits)


class RelaxedELBO(pyro.infer.TraceMeanField_ELBO):
    """Jang et al.'s Gumbel-softmax objective (module docstring) with the temperature
    schedule tau_t = max(``final_temperature``, ``initial_temperature`` exp(-``rate`` t)),
    t = number of ``loss_and_grads`` calls so far (saved by ``state_dict``)."""

    def __init__(self, initial_temperature: float = 1.0, final_temperature: float = 0.5,
                 rate: float = 1e-3, num_particles: int = 1, vectorize_particles: bool = False,
                 max_plate_nesting: float = float("inf")):
        _check_relaxed_options({"t0": initial_temperature, "tmin": final_temperature,
                                "rate": rate})
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles,
                         max_plate_nesting=max_plate_nesting)
        self.initial_temperature = float(initial_temperature)
        self.final_temperature = float(final_temperature)
        self.rate = float(rate)
        self.steps = 0

    @property
    def temperature(self) -> float:
        return max(self.final_temperature,
                   self.initial_temperature * math.exp(-self.rate * self.steps))

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])

    def _relaxed(self, model, guide):
        tau = self.temperature
        return relax_discrete_sites(tau)(model), relax_discrete_sites(tau)(guide)

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(*self._relaxed(model, guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(*self._relaxed(model, guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = super().loss_and_grads(*self._relaxed(model, guide), *args, **kwargs)
        self.steps += 1
        return loss


def _check_relaxed_options(options: dict) -> None:
    for key in ("t0", "tmin"):
        if not options[key] > 0:
            raise ValueError(f"temperature {key} must be > 0; got {key}={options[key]}")
    if options["tmin"] > options["t0"]:
        raise ValueError(f"the final temperature tmin={options['tmin']} exceeds the initial "
                         f"t0={options['t0']}; anneal downwards (tmin <= t0)")
    if not options["rate"] >= 0:
        raise ValueError(f"the annealing rate must be >= 0; got rate={options['rate']}")


# ---- registration -----------------------------------------------------------------------------
register_estimator(
    "enum", lambda k, vectorize_particles, max_plate_nesting: EnumELBO(
        **_particles_kwargs(k, vectorize_particles, max_plate_nesting)),
    {"k": (int, 1)}, "TraceEnum_ELBO: discrete sites summed exactly (parallel enumeration)")
register_estimator(
    "score", lambda baseline, decay, k, vectorize_particles, max_plate_nesting: ScoreELBO(
        baseline, decay, **_particles_kwargs(k, vectorize_particles, max_plate_nesting)),
    {"baseline": (Choice(*BASELINES), "none"), "decay": (float, 0.9), "k": (int, 1)},
    "TraceGraph_ELBO: score-function gradients with a baseline (none, avg, nn)",
    check=_check_score_options)
register_estimator(
    "relaxed", lambda t0, tmin, rate, k, vectorize_particles, max_plate_nesting: RelaxedELBO(
        t0, tmin, rate, **_particles_kwargs(k, vectorize_particles, max_plate_nesting)),
    {"t0": (float, 1.0), "tmin": (float, 0.5), "rate": (float, 1e-3), "k": (int, 1)},
    "Gumbel-softmax relaxation with temperature max(tmin, t0 exp(-rate step))",
    check=_check_relaxed_options)
