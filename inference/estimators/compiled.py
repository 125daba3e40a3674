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
``beta`` applied by :func:`~pyro_vae.models.handlers.scale_latent_sites`), and the values of
the public scalar attributes (numbers, strings, flags) of the model's module and its
submodules (a VAE's ``beta``, a likelihood's fixed ``sigma``), which a graph bakes in.
Anything else the model reads (a tensor attribute replaced later, data-dependent control
flow) is baked into the graph: compile only models whose structure is static (the built-in
models' is).

When :func:`pyro_vae.fit` compiles by default (``jit=auto``, the default of ``elbo``,
``meanfield``, ``iwae`` and ``renyi``): :func:`compilation_obstacle` says why a fit must step
eagerly, or None when it qualifies. A fit qualifies when

* the estimator has a compiled form (``elbo``, ``meanfield``, ``iwae``, ``renyi``);
* every latent site of the guide (and any the model samples itself) is reparameterised and
  not enumerated: discrete sites step eagerly;
* the model's structure is known to be static: the model sets ``static_structure = True``,
  or every module in it is defined by torch, Pyro or pyro-vae (the built-in models); a
  module of your own that does not declare it could branch on the data;
* it runs in one process (a distributed fit all-reduces Pyro's eager ``loss_and_grads``).

``jit=1`` compiles whenever the estimator and the sites allow it (the model's author vouches
for its structure) and is an error otherwise; ``jit=0`` always steps eagerly.

The recorded graph runs without the JIT optimiser (``torch.jit.optimized_execution(False)``),
so it performs the very operations the eager code performs: the same random draws from the
same generators and the same numbers, bit for bit on CPU. Compiling draws from the random
generators; their states are restored afterwards, so a compiled run consumes random numbers
exactly like an eager one. Distribution validation runs only while compiling.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.util import prune_subsample_sites

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


def _scalar_attributes(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(module, attribute name) of every public scalar attribute of ``module`` and its
    submodules (a VAE's ``beta``, a likelihood's fixed ``sigma``, ``training``)."""
    return [(sub, name) for sub in module.modules() for name, value in vars(sub).items()
            if isinstance(value, _SCALARS) and not name.startswith("_")]


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
        #: seconds spent compiling (tracing the objective), over all signatures
        self.compile_seconds = 0.0
        self._watched: dict[int, tuple] = {}

    def _watched_values(self, fn) -> tuple:
        """The current values of the scalar attributes of the module ``fn`` is a method of:
        a Python number the model reads (a KL weight changed by a callback, a likelihood's
        sigma) is baked into a graph, so each value gets its own graph."""
        owner = getattr(fn, "__self__", None)
        if not isinstance(owner, torch.nn.Module):
            return ()
        entry = self._watched.get(id(owner))
        if entry is None or entry[0] is not owner:
            entry = self._watched[id(owner)] = (owner, _scalar_attributes(owner))
        return tuple(getattr(module, name, None) for module, name in entry[1])

    def __len__(self) -> int:
        """How many signatures have been compiled."""
        return len(self._graphs)

    def __call__(self, model, guide, args: tuple, kwargs: dict):
        key = (_callable_key(model), _callable_key(guide),
               tuple(_argument_key(a) for a in args),
               tuple(sorted((name, _argument_key(v)) for name, v in kwargs.items())),
               _training_mode(model), _training_mode(guide), _handlers_key(),
               self._watched_values(model), self._watched_values(guide))
        entry = self._graphs.get(key)
        if entry is None:
            started = time.perf_counter()
            entry = self._graphs[key] = self._compile(model, guide, args, kwargs)
            self.compile_seconds += time.perf_counter() - started
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


_LIBRARIES = ("torch", "pyro", "pyro_vae")


def _structure_obstacle(model) -> str | None:
    """Why ``model``'s structure is not known to be static, or None."""
    declared = getattr(model, "static_structure", None)
    if declared is not None:
        return None if declared else (f"{type(model).__name__} sets static_structure = False")
    if not isinstance(model, torch.nn.Module):
        return (f"the model is a {type(model).__name__}, not a torch module, and does not "
                "declare static_structure = True")
    for role in ("model", "guide"):
        if getattr(getattr(model, role, None), "__self__", None) is not model:
            return (f"model.{role} is not a method of {type(model).__name__} (a function set "
                    "on the instance, which could do anything on each call)")
    for name, module in model.named_modules():
        declared = getattr(module, "static_structure", None)
        cls = type(module)
        where = f"module {name!r} ({cls.__qualname__})" if name else (
            f"the model class {cls.__qualname__}")
        if declared is False:
            return f"{where} sets static_structure = False"
        if declared is None and cls.__module__.split(".")[0] not in _LIBRARIES:
            return (f"{where} is defined outside torch, Pyro and pyro-vae (in "
                    f"{cls.__module__!r}) and does not declare static_structure = True, so it "
                    "could branch on the data; set that class attribute if it never does, or "
                    "pass jit=1")
    return None


class _RandomSubsamples(Messenger):
    """Records the plates that draw their subsample at random (no ``subsample=`` indices):
    a graph would replay one draw of indices forever."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def _pyro_sample(self, msg) -> None:
        fn = msg["fn"]
        if (isinstance(fn, _Subsample) and msg["value"] is None
                and fn.subsample_size is not None and fn.subsample_size < fn.size):
            self.names.append(msg["name"])


def _site_obstacle(model, args: tuple, kwargs: dict) -> str | None:
    """Why the sites rule out a compiled step (a latent site discrete, enumerated or not
    reparameterised; a plate subsampled at random), or None. Traces guide and model once on
    ``args``; the random state is left as it was."""
    with torch.random.fork_rng(devices=_cuda_indices(args)), torch.no_grad(), \
            poutine.block(), _RandomSubsamples() as random_subsamples:
        guide_trace = poutine.trace(model.guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(
            *args, **kwargs)
    if random_subsamples.names:
        return (f"the plate {random_subsamples.names[0]!r} draws its subsample at random (a "
                "graph would replay one draw); pass the batch's indices as "
                "pyro.plate(..., subsample=torch.arange(len(x), device=x.device))")
    guide_trace, model_trace = map(prune_subsample_sites, (guide_trace, model_trace))
    for trace, owner in ((guide_trace, "guide"), (model_trace, "model")):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if owner == "model" and name in guide_trace.nodes:
                continue
            if site["infer"].get("enumerate"):
                return f"the {owner}'s site {name!r} is enumerated"
            if not getattr(site["fn"], "has_rsample", False):
                return (f"the {owner}'s site {name!r} ({type(site['fn']).__name__}) is not "
                        "reparameterised (a discrete or score-function site)")
    return None


def compilation_obstacle(estimator, model, args: tuple, kwargs: dict, *,
                         distributed: bool = False) -> str | None:
    """Why a fit of ``model`` with ``estimator`` steps eagerly by default, or None when it
    compiles (the rules are in the module docstring). ``args`` is a small batch.

    With ``estimator.jit`` True (``jit=1``) only the estimator and the sites are checked,
    and an obstacle is a ValueError; with False it is ``"jit=0"``.
    """
    if not callable(getattr(estimator, "device_loss_and_grads", None)):
        return (f"the estimator {type(estimator).__name__} has no compiled form (elbo, "
                "meanfield, iwae and renyi have one)")
    requested = estimator.jit
    if requested is False:
        return "jit=0"
    obstacle = _site_obstacle(model, args, kwargs)
    if obstacle is None and requested is None:
        obstacle = _structure_obstacle(model) or (
            "a distributed fit steps eagerly (jit=1 compiles it)" if distributed else None)
    elif obstacle is not None and requested:
        raise ValueError(f"jit=1 asks for a compiled step, but {obstacle}; use jit=0 or "
                         "jit=auto (compile only when possible)")
    return obstacle
