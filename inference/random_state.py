"""The global random states (Python, NumPy, torch CPU and CUDA): captured and restored as plain
values, and kept as they were around a function that seeds its own draws.

A measuring function called with ``seed=s`` gives the same number for the same s, and leaves
the caller's random streams exactly where they were: ``torch.manual_seed(1); evaluate(model,
x, seed=0); torch.rand(3)`` draws what ``torch.manual_seed(1); torch.rand(3)`` draws.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Mapping

import numpy as np
import torch


def capture_rng_state() -> dict:
    """Every global random state (Python, NumPy, torch CPU and CUDA) as tensors and plain
    values, so it loads with ``torch.load(weights_only=True)``."""
    py_version, py_internal, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_cached)},
        "python": {"version": py_version, "internal": torch.tensor(py_internal),
                   "gauss_next": py_gauss},
    }


def restore_rng_state(state: Mapping) -> None:
    """Set every global random state from :func:`capture_rng_state`'s output. CUDA states
    are restored when CUDA is available (as many devices as both sides have)."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()),
                     python["gauss_next"]))


def restores_random_state(fn: Callable) -> Callable:
    """``fn`` with a ``seed`` argument: when called with a seed, every global random state is
    captured first and restored afterwards (also on an error), so the seed fixes ``fn``'s own
    draws without resetting the caller's. With ``seed=None`` ``fn`` draws from the caller's
    streams as any unseeded code does."""
    signature = inspect.signature(fn)
    if "seed" not in signature.parameters:
        raise TypeError(f"{fn.__name__} has no seed argument")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        seed = bound.arguments.get("seed", signature.parameters["seed"].default)
        if seed is None:
            return fn(*args, **kwargs)
        saved = capture_rng_state()
        try:
            return fn(*args, **kwargs)
        finally:
            restore_rng_state(saved)
    return wrapper
