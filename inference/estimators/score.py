"""``score:baseline=B,decay=D`` (``k=K``): TraceGraph_ELBO's score-function (REINFORCE) term
(c - b) grad log q(y|x) for discrete sites y, c the cost downstream of y (Pyro's dependency
tracking) and b a baseline.

Baselines (all keep the gradient unbiased; they are computed before the current batch's costs
are seen, per datapoint c_n / s with s the subsample scale N/B):

* ``none``: b = 0;
* ``avg``: b = the running average of the per-datapoint downstream cost over past steps,
  m <- D m + (1 - D) mean_n c_n, bias-corrected (m / (1 - D^t)) as in Adam;
* ``nn``: NVIL (Mnih & Gregor 2014): that running average plus an input-dependent
  correction b(x_n) from the model's ``baseline_network`` (one output column per discrete
  site), trained with the other parameters by minimising s sum_n (c_n / s - avg - b(x_n))^2
  (:func:`train_baseline_network` fits it alone first).

Unlike Pyro's built-in decaying-average baseline (one value per batch position, kept in the
global parameter store), these work for a smaller last batch, keep their state in the
estimator (``state_dict``, so checkpoints resume them) and never touch the param store.
"""

from __future__ import annotations

from collections import defaultdict

import pyro
import pyro.infer
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.util import MultiFrameTensor
from pyro.ops.provenance import detach_provenance, get_provenance

from pyro_vae.inference.batching import as_source
from pyro_vae.inference.estimators.registry import Choice, _particles_kwargs, register_estimator
from pyro_vae.inference.random_state import restores_random_state
from pyro_vae.models._validation import check_positive_int

BASELINES = ("none", "avg", "nn")


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


register_estimator(
    "score", lambda baseline, decay, k, vectorize_particles, max_plate_nesting: ScoreELBO(
        baseline, decay, **_particles_kwargs(k, vectorize_particles, max_plate_nesting)),
    {"baseline": (Choice(*BASELINES), "none"), "decay": (float, 0.9), "k": (int, 1)},
    "TraceGraph_ELBO: score-function gradients with a baseline (none, avg, nn)",
    check=_check_score_options)


@restores_random_state
def train_baseline_network(model, data, *, steps: int = 200, batch_size: int = 128,
                           lr: float = 3e-3, decay: float = 0.9, seed: int | None = 0
                           ) -> list[float]:
    """Fit only ``model.baseline_network`` (every other parameter stays as it is) to the
    score-function costs at the current parameters: ``steps`` Adam steps of the NVIL
    regression of ``score:baseline=nn`` on random minibatches of ``data``. Use it to
    compare baselines at the parameters of a model fitted another way (e.g. by ``enum``),
    whose baseline network was never trained. Returns the regression loss per step."""
    network = getattr(model, "baseline_network", None)
    if network is None:
        raise ValueError(f"{type(model).__name__} has no baseline_network to train; the "
                         "built-in discrete models have one")
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    source = as_source(data)
    if seed is not None:
        pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    estimator = ScoreELBO(baseline="nn", decay=decay)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    saved = {id(p): p.grad for p in model.parameters()}
    device = getattr(source, "device", None)
    losses = []
    try:
        for _ in range(steps):
            index = torch.randperm(len(source), generator=generator)[:batch_size]
            batch = source.get(index.to(device) if device is not None else index)
            for p in model.parameters():
                p.grad = None
            estimator.baseline_losses = []
            estimator.loss_and_grads(model.model, model.guide, *batch)
            optimizer.step()
            losses.append(sum(estimator.baseline_losses) / len(batch[0]))
    finally:
        for p in model.parameters():
            p.grad = saved.get(id(p))
    return losses
