"""Gradient estimators for the ELBO family, named by short specs.

=========================  ===============================================================
spec                       objective (per datapoint x, K particles z_k ~ q(z|x))
=========================  ===============================================================
``elbo`` / ``elbo:k=K``    Trace_ELBO: mean_k [log p(x, z_k) - log q(z_k|x)]
``meanfield``              TraceMeanField_ELBO: E_q log p(x|z) - KL(q||p), KL in closed form
                           where one is registered (Monte Carlo otherwise)
``iwae:k=K``               IWAE (Burda et al. 2015): log (1/K) sum_k w_k,
                           w_k = p(x, z_k) / q(z_k|x); Renyi bound with alpha = 0
``renyi:alpha=A,k=K``      Renyi bound (Li & Turner 2016):
                           1/(1-A) log (1/K) sum_k w_k^(1-A)
=========================  ===============================================================

Particles are vectorised by default. :func:`register_estimator` adds further names (the
discrete-latent estimators do).

The four built-in estimators also offer ``device_loss_and_grads``: the same gradients and
the same loss as ``loss_and_grads``, bit for bit, but the loss is returned as a float64
tensor on the data's device instead of being read to the host site by site, so a training
loop can keep running sums without waiting for the device. The option ``jit=1`` (e.g.
``elbo:jit=1``) compiles the objective once per batch shape (:mod:`.compiled`): the same
numbers without Pyro's per-step Python, for models whose structure is static.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.infer
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import (
    check_fully_reparametrized,
    get_dependent_plate_dims,
    is_identically_zero,
    is_validation_enabled,
    torch_sum,
)
from pyro.util import warn_if_nan
from torch.distributions import kl_divergence

from pyro_vae.inference.compiled import CompiledObjective
from pyro_vae.models._validation import unknown_name_error


def _as_float64(value) -> torch.Tensor:
    """A log-density sum as a float64 tensor: exactly the float ``torch_item`` would give."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


class DeviceLossMixin:
    """``device_loss_and_grads``: ``loss_and_grads`` with the loss left on the device, and
    the ``jit`` option (see the module docstring).

    Subclasses implement ``_particle_terms(model_trace, guide_trace) -> (elbo, surrogate
    elbo)`` for one particle, ``elbo`` a detached float64 tensor holding what Pyro's
    ``loss_and_grads`` sums on the host; or override :meth:`_objective` and
    :meth:`_eager_device_loss_and_grads` whole.
    """

    jit = False

    def _vectorized_num_particles(self, fn):
        """Pyro's particles plate, its size also given as ``subsample_size``: the same plate
        (scale 1), but when compiled the size stays a Python number instead of a traced
        tensor that would turn every site's scale into a float32 tensor."""
        if self.num_particles == 1:
            return fn
        return pyro.plate("num_particles_vectorized", self.num_particles,
                          subsample_size=self.num_particles,
                          dim=-self.max_plate_nesting)(fn)

    def _objective(self, model, guide, args, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, surrogate loss) of one step, all particles: what gets compiled."""
        loss = surrogate = None
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle, surrogate_particle = self._particle_terms(model_trace, guide_trace)
            loss_particle = -elbo_particle / self.num_particles
            surrogate_loss = -surrogate_particle / self.num_particles
            loss = loss_particle if loss is None else loss + loss_particle
            surrogate = surrogate_loss if surrogate is None else surrogate + surrogate_loss
        return loss, surrogate

    def _eager_device_loss_and_grads(self, model, guide, args, kwargs) -> torch.Tensor:
        """Pyro's ``Trace_ELBO.loss_and_grads`` step for step (one backward per particle,
        none without trainable params), the host sums done in float64 on the device."""
        loss = None
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle, surrogate_particle = self._particle_terms(model_trace, guide_trace)
            loss_particle = -elbo_particle / self.num_particles
            loss = loss_particle if loss is None else loss + loss_particle
            trainable = any(site["type"] == "param" for trace in (model_trace, guide_trace)
                            for site in trace.nodes.values())
            surrogate_loss = -surrogate_particle
            if trainable and getattr(surrogate_loss, "requires_grad", False):
                (surrogate_loss / self.num_particles).backward(retain_graph=self.retain_graph)
        return loss

    def device_loss_and_grads(self, model, guide, *args, compiled: bool | None = None,
                              **kwargs) -> torch.Tensor:
        """Accumulate the gradients of the surrogate loss, as ``loss_and_grads`` does, and
        return the loss as a 0-dim float64 tensor on the data's device, equal to the float
        ``loss_and_grads`` returns. ``compiled`` overrides the ``jit`` option for this call
        (the numbers are the same either way)."""
        if self.jit if compiled is None else compiled:
            if getattr(self, "_compiled", None) is None:
                self._compiled = CompiledObjective(self._objective)
            loss, surrogate = self._compiled(model, guide, args, kwargs)
            if getattr(surrogate, "requires_grad", False):
                surrogate.backward()
            return loss
        return self._eager_device_loss_and_grads(model, guide, args, kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        if not self.jit:
            return super().loss_and_grads(model, guide, *args, **kwargs)
        loss = float(self.device_loss_and_grads(model, guide, *args, **kwargs))
        warn_if_nan(loss, "loss")
        return loss


class SyncFreeTrace_ELBO(DeviceLossMixin, pyro.infer.Trace_ELBO):
    """``Trace_ELBO`` (score-function terms included) with :class:`DeviceLossMixin`."""

    def __init__(self, *args, jit: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = bool(jit)

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

    def __init__(self, *args, jit: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = bool(jit)

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

    def __init__(self, *args, jit: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.jit = bool(jit)

    @staticmethod
    def _common_subsample_scale(model_trace, guide_trace) -> float:
        stacks = [set(site["cond_indep_stack"]) for trace in (model_trace, guide_trace)
                  for site in trace.nodes.values() if site["type"] == "sample"]
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


@dataclass(frozen=True)
class EstimatorSpec:
    """A parsed estimator spec such as ``iwae:k=5`` -> name 'iwae', options {'k': 5}."""

    name: str
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        # on/off flags are shown only when on, as 1 (``elbo:k=1,jit=1``)
        shown = [f"{k}={int(v)}" if isinstance(v, bool) else f"{k}={v}"
                 for k, v in self.options.items() if v is not False]
        return self.name + ":" + ",".join(shown) if shown else self.name


@dataclass(frozen=True)
class _EstimatorEntry:
    factory: Callable[..., pyro.infer.ELBO]
    options: dict  # option name -> (type, default)
    description: str
    check: Callable[[dict], None] | None = None


ESTIMATORS: dict[str, _EstimatorEntry] = {}


class Choice:
    """An option type accepting one of a few names: ``{"baseline": (Choice("none", "avg"),
    "none")}``; any other value is a ValueError naming the valid ones."""

    def __init__(self, *names: str):
        self.names = names
        self.__name__ = f"one of {list(names)}"

    def __call__(self, value: str) -> str:
        if value not in self.names:
            raise ValueError(value)
        return value


def register_estimator(name: str, factory: Callable[..., pyro.infer.ELBO], options: dict,
                       description: str, check: Callable[[dict], None] | None = None) -> None:
    """Register ``name``; ``factory(**options, vectorize_particles=..., max_plate_nesting=...)``
    builds the ELBO; ``options`` maps each option to ``(type, default)`` (a type is any
    callable turning the spec's text into a value, e.g. :class:`Choice`); ``check(options)``,
    if given, raises ValueError for values the types accept but the estimator does not."""
    ESTIMATORS[name] = _EstimatorEntry(factory, dict(options), description, check)


def _flag(text: str) -> bool:
    """An on/off option: 1/0, true/false, yes/no, on/off."""
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0 (or true/false); got {text!r}")


_flag.__name__ = "1 or 0"


def _particles_kwargs(k: int, vectorize: bool, max_plate_nesting: float) -> dict:
    return {"num_particles": k, "vectorize_particles": bool(vectorize and k > 1),
            "max_plate_nesting": max_plate_nesting}


register_estimator(
    "elbo", lambda k, vectorize_particles, max_plate_nesting, jit=False: SyncFreeTrace_ELBO(
        **_particles_kwargs(k, vectorize_particles, max_plate_nesting), jit=jit),
    {"k": (int, 1), "jit": (_flag, False)}, "Trace_ELBO: Monte Carlo ELBO")
register_estimator(
    "meanfield", lambda k, vectorize_particles, max_plate_nesting, jit=False:
    SyncFreeTraceMeanField_ELBO(**_particles_kwargs(k, vectorize_particles, max_plate_nesting),
                                jit=jit),
    {"k": (int, 1), "jit": (_flag, False)}, "TraceMeanField_ELBO: analytic KL where available")
register_estimator(
    "iwae", lambda k, vectorize_particles, max_plate_nesting, jit=False: MinibatchRenyiELBO(
        alpha=0.0, **_particles_kwargs(k, vectorize_particles, max_plate_nesting), jit=jit),
    {"k": (int, 5), "jit": (_flag, False)}, "importance-weighted bound (Renyi alpha=0)")
register_estimator(
    "renyi", lambda alpha, k, vectorize_particles, max_plate_nesting, jit=False: MinibatchRenyiELBO(
        alpha=alpha, **_particles_kwargs(k, vectorize_particles, max_plate_nesting), jit=jit),
    {"alpha": (float, 0.5), "k": (int, 5), "jit": (_flag, False)}, "Renyi alpha-bound")


def valid_specs() -> list[str]:
    """Examples of every registered spec, for error messages and help."""
    out = []
    for name, entry in ESTIMATORS.items():
        opts = ",".join(f"{k}={default}" for k, (_, default) in entry.options.items()
                        if not isinstance(default, bool))
        out.append(f"{name}:{opts}" if opts else name)
    return out


def parse_estimator(spec: str | EstimatorSpec) -> EstimatorSpec:
    """Parse ``'name'`` or ``'name:key=value,...'``, checking the name and every option."""
    if isinstance(spec, EstimatorSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an estimator spec must be a non-empty string such as 'elbo' or "
                         f"'iwae:k=5'; got {spec!r}. Valid: {valid_specs()}")
    name, _, rest = spec.strip().partition(":")
    if name not in ESTIMATORS:
        raise unknown_name_error("estimator", name, ESTIMATORS, valid_specs())
    entry = ESTIMATORS[name]
    # on/off flags appear only when given (``iwae:k=5`` parses to {'k': 5})
    options = {key: default for key, (kind, default) in entry.options.items()
               if kind is not _flag}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in entry.options:
            raise ValueError(f"bad option {item!r} in estimator spec {spec!r}; {name} takes "
                             f"{sorted(entry.options) or 'no options'} as key=value, e.g. "
                             f"{valid_specs()[list(ESTIMATORS).index(name)]!r}")
        kind = entry.options[key][0]
        try:
            options[key] = kind(value)
        except ValueError:
            raise ValueError(f"option {key} in estimator spec {spec!r} must be "
                             f"{kind.__name__}; got {value!r}") from None
    if "k" in options and options["k"] < 1:
        raise ValueError(f"the number of particles k must be >= 1; got k={options['k']} "
                         f"in {spec!r}")
    if name == "renyi" and options["alpha"] == 1.0:
        raise ValueError("renyi with alpha=1 is the ordinary ELBO; use 'elbo' instead")
    if entry.check is not None:
        try:
            entry.check(options)
        except ValueError as error:
            raise ValueError(f"bad estimator spec {spec!r}: {error}") from None
    return EstimatorSpec(name, options)


def make_estimator(spec: str | EstimatorSpec | pyro.infer.ELBO = "elbo", *,
                   vectorize_particles: bool = True,
                   max_plate_nesting: float = float("inf")) -> pyro.infer.ELBO:
    """Build a Pyro ELBO from a spec; an ELBO instance is returned unchanged.

    ``max_plate_nesting=inf`` lets Pyro infer it from one trace of the model.
    """
    if isinstance(spec, pyro.infer.ELBO):
        return spec
    parsed = parse_estimator(spec)
    return ESTIMATORS[parsed.name].factory(
        **parsed.options, vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting)
