"""Importance-weighted bounds, w_k = p(x, z_k) / q(z_k|x): ``iwae:k=K`` (Burda et al. 2015,
log (1/K) sum_k w_k) and ``renyi:alpha=A,k=K`` (Li & Turner 2016,
1/(1-A) log (1/K) sum_k w_k^(1-A)), kept per-datapoint bounds under minibatch subsampling.
"""

from __future__ import annotations

import math

import pyro
import pyro.infer
import torch
from pyro.infer.util import (
    get_dependent_plate_dims,
    is_identically_zero,
    torch_sum,
)
from pyro.util import warn_if_nan

from pyro_vae.inference.estimators._device_loss import DeviceLossMixin, _as_float64
from pyro_vae.inference.estimators.registry import (
    _JIT_OPTION,
    _particles_kwargs,
    register_estimator,
)


class MinibatchRenyiELBO(DeviceLossMixin, pyro.infer.RenyiELBO):
    """RenyiELBO that stays a per-datapoint bound under minibatch subsampling.

    Pyro's ``RenyiELBO`` forms log-weights from *scaled* log-densities, so with a data
    plate subsampled at scale s = N/B it computes sum_n log mean_k w_{kn}^s instead of
    s sum_n log mean_k w_{kn}: a different quantity that can exceed log p(x). This class
    divides the scale of the plates common to every site out of the log-weights, applies
    the Renyi log-mean-exp per datapoint, and multiplies the scale back in, as NumPyro's
    RenyiELBO does for local variables (numpyro#1608). Other scales (a KL weight beta)
    stay inside the weights. Without subsampling it is identical to ``RenyiELBO``.
    """

    def __init__(self, *args, jit: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = jit

    @staticmethod
    def _common_subsample_scale(model_trace, guide_trace) -> float:
        sites = [site for trace in (model_trace, guide_trace)
                 for site in trace.nodes.values() if site["type"] == "sample"]
        stacks = [set(site["cond_indep_stack"]) for site in sites]
        subsampled = {frame for stack in stacks for frame in stack
                      if frame.full_size is not None and frame.size
                      and frame.full_size != frame.size}
        for site, stack in zip(sites, stacks, strict=True):
            outside = [frame.name for frame in subsampled if frame not in stack]
            if outside:
                raise ValueError(
                    f"iwae and renyi over minibatches are per-datapoint bounds, which need "
                    f"every sample site inside the subsampled plate(s) {sorted(outside)}; "
                    f"site {site['name']!r} is outside (a global latent variable, such as a "
                    "Bayesian decoder's weights), and no importance-weighted bound over a "
                    "minibatch counts it correctly. Fit such a model with 'elbo' or "
                    "'meanfield' (they count its KL once per pass over the data), or on the "
                    "full data in one batch.")
        scale = 1.0
        for frame in set.intersection(*stacks) if stacks else ():
            if frame.full_size is not None and frame.size and frame.full_size != frame.size:
                # int(): under tracing a plate size may be a traced 0-dim tensor
                scale *= int(frame.full_size) / int(frame.size)
        return scale

    def _particle_terms(self, model_trace, guide_trace):
        """Unscaled per-datapoint log-weights (detached) and their surrogate, and the scale."""
        scale = self._common_subsample_scale(model_trace, guide_trace)
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        elbo_particle = 0.0
        surrogate_particle = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_prob = torch_sum(site["log_prob"], sum_dims) / scale
                elbo_particle = elbo_particle + log_prob.detach()
                surrogate_particle = surrogate_particle + log_prob
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                log_prob = torch_sum(site["log_prob"], sum_dims) / scale
                elbo_particle = elbo_particle - log_prob.detach()
                if not is_identically_zero(entropy_term):
                    surrogate_particle = surrogate_particle - log_prob
                    if not is_identically_zero(score_function_term):
                        raise NotImplementedError(
                            "RenyiELBO with a partially reparameterised guide site "
                            "(pyro-ppl/pyro#1222)")
                if not is_identically_zero(score_function_term):
                    surrogate_particle = surrogate_particle + (
                        self.alpha / (1.0 - self.alpha)) * log_prob
        return elbo_particle, surrogate_particle, scale

    def _stacked_terms(self, model, guide, args, kwargs):
        elbos, surrogates = [], []
        scale = 1.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo, surrogate, scale = self._particle_terms(model_trace, guide_trace)
            elbos.append(elbo)
            surrogates.append(surrogate)
        if self.vectorize_particles and self.num_particles > 1:
            return elbos[0], surrogates[0], scale
        return torch.stack(elbos), torch.stack(surrogates), scale

    def _bound(self, log_weights: torch.Tensor, scale: float) -> torch.Tensor:
        log_mean = torch.logsumexp(log_weights, dim=0) - math.log(self.num_particles)
        return scale * log_mean.sum() / (1.0 - self.alpha)

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs):
        elbo_particles, _, scale = self._stacked_terms(model, guide, args, kwargs)
        loss = -self._bound((1.0 - self.alpha) * elbo_particles, scale).item()
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_surrogate(self, model, guide, *args, **kwargs):
        """(loss tensor, surrogate loss tensor): backward on the surrogate gives the gradient."""
        elbo_particles, surrogate_particles, scale = self._stacked_terms(
            model, guide, args, kwargs)
        log_weights = (1.0 - self.alpha) * elbo_particles
        log_mean = torch.logsumexp(log_weights, dim=0, keepdim=True) - math.log(
            self.num_particles)
        weights = (log_weights - log_mean).exp()
        surrogate = scale * (weights * surrogate_particles).sum() / self.num_particles
        return -self._bound(log_weights, scale), -surrogate

    def _objective(self, model, guide, args, kwargs):
        loss, surrogate_loss = self.differentiable_surrogate(model, guide, *args, **kwargs)
        return _as_float64(loss), surrogate_loss

    def _eager_device_loss_and_grads(self, model, guide, args, kwargs):
        loss, surrogate_loss = self._objective(model, guide, args, kwargs)
        if getattr(surrogate_loss, "requires_grad", False):
            surrogate_loss.backward()
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.device_loss_and_grads(model, guide, *args, **kwargs).item()
        warn_if_nan(loss, "loss")
        return loss


register_estimator(
    "iwae", lambda k, vectorize_particles, max_plate_nesting, jit=None: MinibatchRenyiELBO(
        alpha=0.0, **_particles_kwargs(k, vectorize_particles, max_plate_nesting), jit=jit),
    {"k": (int, 5), "jit": _JIT_OPTION}, "importance-weighted bound (Renyi alpha=0)")
register_estimator(
    "renyi", lambda alpha, k, vectorize_particles, max_plate_nesting, jit=None: MinibatchRenyiELBO(
        alpha=alpha, **_particles_kwargs(k, vectorize_particles, max_plate_nesting), jit=jit),
    {"alpha": (float, 0.5), "k": (int, 5), "jit": _JIT_OPTION}, "Renyi alpha-bound")
