"""``relaxed:t0=T,tmin=M,rate=R`` (``k=K``): the Gumbel-softmax / Concrete relaxation (Jang, Gu &
Poole 2016; Maddison, Mnih & Teh 2016) of discrete sites.

Each discrete site y is replaced, in guide and model alike, by a reparameterised relaxed sample
softmax((log q + g) / tau), g ~ Gumbel(0, 1), and KL(q(y|x) || p(y)) of the *categorical*
distributions enters in closed form (TraceMeanField_ELBO; continuous sites get their
closed-form KL where one is registered). tau = max(tmin, t0 exp(-rate * step)), stepped once
per ``loss_and_grads``. This is not the discrete model's ELBO: the numbers
:func:`~pyro_vae.inference.evaluate` and ``fit``'s monitoring report are the discrete model's
(y summed exactly where it can be enumerated).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pyro.infer
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import constraints
from torch.distributions.kl import register_kl

from pyro_vae.inference.estimators.registry import _particles_kwargs, register_estimator


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


register_estimator(
    "relaxed", lambda t0, tmin, rate, k, vectorize_particles, max_plate_nesting: RelaxedELBO(
        t0, tmin, rate, **_particles_kwargs(k, vectorize_particles, max_plate_nesting)),
    {"t0": (float, 1.0), "tmin": (float, 0.5), "rate": (float, 1e-3), "k": (int, 1)},
    "Gumbel-softmax relaxation with temperature max(tmin, t0 exp(-rate step))",
    check=_check_relaxed_options)
