"""The loss left on the device: ``device_loss_and_grads`` and the ``jit`` option, shared by the
built-in Trace_ELBO and Renyi estimators.
"""

from __future__ import annotations

import pyro
import pyro.infer
import torch
from pyro.util import warn_if_nan

from pyro_vae.inference.estimators.compiled import CompiledObjective


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
