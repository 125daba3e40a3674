"""Gradient estimators, named by short specs; one family per module.

=========================  ===============================================================
spec                       objective (per datapoint x, K particles z_k ~ q(z|x))
=========================  ===============================================================
``elbo`` / ``elbo:k=K``    Trace_ELBO: mean_k [log p(x, z_k) - log q(z_k|x)]  (:mod:`.elbo`)
``meanfield``              TraceMeanField_ELBO: E_q log p(x|z) - KL(q||p), KL in closed form
                           where one is registered (Monte Carlo otherwise)  (:mod:`.elbo`)
``iwae:k=K``               IWAE (Burda et al. 2015): log (1/K) sum_k w_k,
                           w_k = p(x, z_k) / q(z_k|x); Renyi bound with alpha = 0
                           (:mod:`.renyi`)
``renyi:alpha=A,k=K``      Renyi bound (Li & Turner 2016):
                           1/(1-A) log (1/K) sum_k w_k^(1-A)  (:mod:`.renyi`)
``freebits:lambda=L``      free bits (Kingma et al. 2016): E_q log p(x|z) - sum_j max(L, KL_j)
                           (:mod:`.free_bits`)
``enum``                   TraceEnum_ELBO: discrete sites summed exactly  (:mod:`.enum`)
``score:baseline=B``       TraceGraph_ELBO: score-function gradients with a baseline
                           (:mod:`.score`)
``relaxed:t0=T,tmin=M``    Gumbel-softmax relaxation of discrete sites  (:mod:`.relaxed`)
=========================  ===============================================================

Particles are vectorised by default. :func:`register_estimator` adds further names
(:mod:`.registry`).

The ``elbo``, ``meanfield``, ``iwae`` and ``renyi`` estimators also offer
``device_loss_and_grads``: the same gradients and the same loss as ``loss_and_grads``, bit for
bit, but the loss is returned as a float64 tensor on the data's device instead of being read to
the host site by site, so a training loop can keep running sums without waiting for the device.
Their ``jit`` option decides whether :func:`pyro_vae.fit` compiles the objective once per batch
shape (:mod:`.compiled`: the same numbers without Pyro's per-step Python): ``auto`` (default)
when the fit qualifies (a static model, reparameterised sites, one process), ``1`` always
(an error where impossible), ``0`` never.
"""

from pyro_vae.inference.estimators.registry import (  # noqa: I001 - registry first
    ESTIMATORS,
    Choice,
    EstimatorSpec,
    make_estimator,
    parse_estimator,
    register_estimator,
    valid_specs,
)
from pyro_vae.inference.estimators._device_loss import DeviceLossMixin
from pyro_vae.inference.estimators.elbo import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO
from pyro_vae.inference.estimators.renyi import MinibatchRenyiELBO
from pyro_vae.inference.estimators.free_bits import FreeBitsELBO
from pyro_vae.inference.estimators.enum import EnumELBO
from pyro_vae.inference.estimators.score import BASELINES, ScoreELBO
from pyro_vae.inference.estimators.relaxed import GumbelSoftmax, RelaxedELBO, relax_discrete_sites

__all__ = [
    "ESTIMATORS", "Choice", "EstimatorSpec", "make_estimator", "parse_estimator",
    "register_estimator", "valid_specs", "DeviceLossMixin", "SyncFreeTrace_ELBO",
    "SyncFreeTraceMeanField_ELBO", "MinibatchRenyiELBO", "FreeBitsELBO", "EnumELBO", "BASELINES",
    "ScoreELBO", "GumbelSoftmax", "RelaxedELBO", "relax_discrete_sites",
]
