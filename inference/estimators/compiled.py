"""Compiling an estimator's objective with ``torch.jit.trace``, parameters as graph inputs.

Pyro's own ``JitTrace_ELBO`` reads every parameter from the global param store
(``pyro.param(name)``), which ``module_local_params=True`` (this package's setting: every
model keeps its parameters) leaves empty, so it fails. :class:`CompiledObjective` does the
same job for module-local parameters: it runs the objective once under a parameter-only
trace to find the parameter tensors, then traces ``(parameters, *tensor args) -> (loss,
surrogate)`` once per call signature and afterwards runs only the recorded graph, with none
of Pyro's Python per step.

A signature is: the model and guide (bound methods are keyed on their module and function,
so ``model.model`` fetched afresh is the same signature), the shapes, dtypes and devices of
the tensor arguments, the other arguments and keyword arguments, the module's train/eval
mode, and the scalar settings of every effect handler active around the call (a KL weight
``beta`` applied by :func:`~pyro_vae.models.handlers.scale_latent_sites`). Anything else the
model reads (a Python attribute changed later, data-dependent control flow) is baked into
the graph: compile only models whose structure is static (the built-in VAE's is).

The recorded graph runs without the JIT optimiser (``torch.jit.optimized_execution(False)``),
so it performs the very operations the eager code performs: the same random draws from the
same generators and the same numbers, bit for bit on CPU. Compiling draws from the random
generators; their states are restored afterwards, so a compiled run consumes random numbers
exactly like an eager one. Distribution validation runs only while compiling.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.runtime import _PYRO_STACK

_SCALARS = (bool, int, float, str, type(None))


def _callable_key(fn) -> tuple:
    owner = getattr(fn, "__self__", None)
    return (id(owner), getattr(fn, "__func__", fn)) if owner is not None else (id(fn),)


def _handlers_key() -> tuple:
    """The active effect handlers with their scalar settings (e.g. a KL weight)."""
    return tuple((type(handler), tuple(sorted(
        (name, value) for name, value in vars(handler).items() if isinstance(value, _SCALARS))))
        for handler in _PYRO_STACK)


def _argument_key(value) -> tuple:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device, value.requires_grad)
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"a compiled estimator needs tensors or hashable values as arguments; "
                        f"got a {type(value).__name__}. Pass jit=0, or make it a tensor."
                        ) from None
    return ("value", value)


def _training_mode(fn):
    owner = getattr(fn, "__self__", None)
    return getattr(owner, "training", None)


def _cuda_indices(values) -> list[int]:
    return sorted({v.device.index or 0 for v in values
                   if isinstance(v, torch.Tensor) and v.device.type == "cuda"})


class CompiledObjective:
    """``objective(model, guide, args, kwargs) -> (loss, surrogate)``, traced once per call
    signature (see the module docstring) and replayed afterwards."""

    def __init__(self, objective: Callable):
        self.objective = objective
        self._graphs: dict[tuple, tuple] = {}

    def __len__(self) -> int:
        """How many signatures have been compiled."""
        return len(self._graphs)

    def __call__(self, model, guide, args: tuple, kwargs: dict):
        key = (_callable_key(model), _callable_key(guide),
               tuple(_argument_key(a) for a in args),
               tuple(sorted((name, _argument_key(v)) for name, v in kwargs.items())),
               _training_mode(model), _training_mode(guide), _handlers_key())
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._compile(model, guide, args, kwargs)
        graph, parameters = entry[0], entry[1]
        inputs = (*parameters, *(a for a in args if isinstance(a, torch.Tensor)))
        with torch.jit.optimized_execution(False):
            return graph(*inputs)

    def _parameters(self, model, guide, args, kwargs) -> list[torch.Tensor]:
        """The leaf tensors behind the param sites (unconstrained values), and the
        parameters of the modules model and guide are methods of."""
        with torch.no_grad(), poutine.block(), poutine.trace(param_only=True) as capture:
            self.objective(model, guide, args, kwargs)
        found: dict[int, torch.Tensor] = {}
        for site in capture.trace.nodes.values():
            value = site["value"]
            unconstrained = getattr(value, "unconstrained", None)
            value = unconstrained() if callable(unconstrained) else value
            if isinstance(value, torch.Tensor):
                found.setdefault(id(value), value)
        for fn in (model, guide):
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, torch.nn.Module):
                for parameter in owner.parameters():
                    found.setdefault(id(parameter), parameter)
        return list(found.values())

    def _compile(self, model, guide, args, kwargs) -> tuple:
        with torch.random.fork_rng(devices=_cuda_indices(args)):
            parameters = self._parameters(model, guide, args, kwargs)
            count = len(parameters)
            positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

            def run(*inputs):
                call_args = list(args)
                for position, tensor in zip(positions, inputs[count:], strict=True):
                    call_args[position] = tensor
                return self.objective(model, guide, tuple(call_args), kwargs)

            inputs = (*parameters, *(args[i] for i in positions))
            with pyro.validation_enabled(False), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # torch.jit.trace still works in torch 2.x but announces its deprecation
                warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated",
                                        DeprecationWarning)
                try:
                    graph = torch.jit.trace(run, inputs, check_trace=False)
                except RuntimeError as error:
                    if "requires grad" not in str(error):
                        raise
                    raise RuntimeError(
                        "the compiled estimator met a tensor that requires grad but is not a "
                        "parameter of the model or guide (no Pyro param site and not in the "
                        "modules whose methods they are), so it cannot be a graph input. Are "
                        "model and guide decorated with @pyro_method? Otherwise use jit=0. ("
                        f"{error})") from None
        # keep model and guide alive: their ids are part of the key
        return graph, parameters, model, guide
