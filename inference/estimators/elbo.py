"""The Trace_ELBO family: ``elbo`` (Monte Carlo, mean_k [log p(x, z_k) - log q(z_k|x)]) and
``meanfield`` (E_q log p(x|z) - KL(q||p), the KL in closed form where one is registered).
"""

from __future__ import annotations

import pyro
import pyro.infer
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import (
    check_fully_reparametrized,
    is_identically_zero,
    is_validation_enabled,
)
from torch.distributions import kl_divergence

from pyro_vae.inference.estimators._device_loss import DeviceLossMixin, _as_float64
from pyro_vae.inference.estimators.registry import (
    _JIT_OPTION,
    _particles_kwargs,
    register_estimator,
)


class SyncFreeTrace_ELBO(DeviceLossMixin, pyro.infer.Trace_ELBO):
    """``Trace_ELBO`` (score-function terms included) with :class:`DeviceLossMixin`."""

    def __init__(self, *args, jit: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = jit

    @staticmethod
    def _particle_terms(model_trace, guide_trace):
        # Pyro's Trace_ELBO._differentiable_loss_particle, with the ELBO kept on the device
        elbo_particle = None
        surrogate_elbo_particle = 0
        log_r = None
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                term = _as_float64(site["log_prob_sum"])
                elbo_particle = term if elbo_particle is None else elbo_particle + term
                surrogate_elbo_particle = surrogate_elbo_particle + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                term = _as_float64(site["log_prob_sum"])
                elbo_particle = -term if elbo_particle is None else elbo_particle - term
                if not is_identically_zero(entropy_term):
                    surrogate_elbo_particle = surrogate_elbo_particle - entropy_term.sum()
                if not is_identically_zero(score_function_term):
                    if log_r is None:
                        log_r = _compute_log_r(model_trace, guide_trace)
                    site_log_r = log_r.sum_to(site["cond_indep_stack"])
                    surrogate_elbo_particle = surrogate_elbo_particle + (
                        site_log_r * score_function_term).sum()
        if elbo_particle is None:
            elbo_particle = _as_float64(0.0)
        return elbo_particle, surrogate_elbo_particle


class SyncFreeTraceMeanField_ELBO(DeviceLossMixin, pyro.infer.TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` with :class:`DeviceLossMixin`."""

    def __init__(self, *args, jit: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = jit

    @staticmethod
    def _particle_terms(model_trace, guide_trace):
        # Pyro's TraceMeanField_ELBO._differentiable_loss_particle, ELBO kept on the device
        elbo_particle = 0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                elbo_particle = elbo_particle + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            try:
                kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
                kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"],
                                       mask=guide_site["mask"])
                if torch.is_tensor(kl_qp):
                    kl_qp_sum = kl_qp.sum()
                else:
                    kl_qp_sum = kl_qp * torch.Size(guide_site["fn"].batch_shape).numel()
                elbo_particle = elbo_particle - kl_qp_sum
            except NotImplementedError:
                entropy_term = guide_site["score_parts"].entropy_term
                elbo_particle = (elbo_particle + model_site["log_prob_sum"]
                                 - entropy_term.sum())
        for name, guide_site in guide_trace.nodes.items():
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                assert guide_site["infer"].get("is_auxiliary")
                if is_validation_enabled():
                    check_fully_reparametrized(guide_site)
                elbo_particle = elbo_particle - guide_site["score_parts"].entropy_term.sum()
        return _as_float64(elbo_particle), elbo_particle


register_estimator(
    "elbo", lambda k, vectorize_particles, max_plate_nesting, jit=None: SyncFreeTrace_ELBO(
        **_particles_kwargs(k, vectorize_particles, max_plate_nesting), jit=jit),
    {"k": (int, 1), "jit": _JIT_OPTION}, "Trace_ELBO: Monte Carlo ELBO")
register_estimator(
    "meanfield", lambda k, vectorize_particles, max_plate_nesting, jit=None:
    SyncFreeTraceMeanField_ELBO(**_particles_kwargs(k, vectorize_particles, max_plate_nesting),
                                jit=jit),
    {"k": (int, 1), "jit": _JIT_OPTION}, "TraceMeanField_ELBO: analytic KL where available")
