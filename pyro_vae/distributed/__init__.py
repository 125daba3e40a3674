"""Data-parallel training under ``torchrun``: process-group set-up and rank-0-only I/O.

One machine, two processes (``--nproc_per_node`` = number of GPUs, or of CPU workers)::

    torchrun --standalone --nproc_per_node=2 -m pyro_vae train --distributed --out runs/d

Several machines (the same command on every machine; HOST0 is one of them)::

    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST0:29400 \\
             --rdzv_id=vae1 -m pyro_vae train --distributed --device cuda --out runs/d

``torchrun`` starts the processes and describes the group in environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
:func:`init_distributed` joins it (gloo on CPU, NCCL on CUDA, one GPU per process; it lives in
:mod:`pyro_vae.inference.fitting.process_group`) and ``pyro_vae.fit(..., distributed=True)``
trains one model with all processes (see :mod:`pyro_vae.inference.fitting.data_parallel`
for the mathematics). Every process runs the same script; only rank 0 should write files
and logs: :func:`rank_zero_only` wraps a function so it runs there only, and
:func:`on_rank_zero` runs one there and hands its result, or its exception, to every rank.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro_vae.inference.fitting.process_group import (
    TORCHRUN_VARIABLES,
    DistributedContext,
    barrier,
    distributed_session,
    get_rank,
    get_world_size,
    init_distributed,
    is_rank_zero,
    launched_by_torchrun,
    on_rank_zero,
    rank_device,
    rank_zero_only,
    shutdown_distributed,
)


def file_work_runner(distributed: bool) -> Callable:
    """How a fit runs its file work ``fn(*args)``: :func:`on_rank_zero` in a distributed fit
    (rank 0 does it, every rank gets the result or the error), a plain call otherwise."""
    return on_rank_zero if distributed else _call


def _call(fn: Callable, *args, **kwargs):
    return fn(*args, **kwargs)


__all__ = [
    "DistributedContext", "TORCHRUN_VARIABLES", "barrier", "distributed_session",
    "file_work_runner", "get_rank", "get_world_size", "init_distributed", "is_rank_zero",
    "launched_by_torchrun", "on_rank_zero", "rank_device", "rank_zero_only",
    "shutdown_distributed",
]
