"""Joining the process group that ``torchrun`` describes, and rank-0 helpers.

``torchrun`` starts the processes and describes the group in environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
:func:`init_distributed` joins it (gloo on CPU, NCCL on CUDA, one GPU per process), and
``fit(..., distributed=True)`` joins it too when no group is set up yet.
:func:`rank_zero_only` wraps a function so it runs on rank 0 only, and :func:`on_rank_zero`
runs one there and hands its result, or its exception, to every rank.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pyro_vae.inference.devices import resolve_device

#: the variables torchrun sets for every process
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes, its rank on
    this machine, the backend and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the torchrun environment variables are set."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def get_rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank_zero() -> bool:
    return get_rank() == 0


def _local_rank() -> int:
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    count = torch.cuda.device_count() if torch.cuda.is_available() else 1
    return get_rank() % max(1, count)


def rank_device(device: str | torch.device = "auto") -> torch.device:
    """The device of this process: ``'auto'`` and ``'cuda'`` mean this process's GPU
    (``cuda:LOCAL_RANK``; ``'auto'`` falls back to the CPU without CUDA); ``'cuda:N'`` and
    ``'cpu'`` are taken as given."""
    if isinstance(device, str) and device in ("auto", "cuda"):
        if device == "auto" and not torch.cuda.is_available():
            return torch.device("cpu")
        resolve_device("cuda")   # a clear error without CUDA
        local_rank, count = _local_rank(), torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(f"this process has LOCAL_RANK={local_rank} but the machine has "
                               f"{count} GPU(s); start at most {count} processes per machine "
                               f"(torchrun --nproc_per_node={count}).")
        return torch.device("cuda", local_rank)
    return resolve_device(device)


def _context(device: torch.device) -> DistributedContext:
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              local_rank=_local_rank(), backend=str(dist.get_backend()),
                              device=device)


def init_distributed(backend: str | None = None, device: str | torch.device = "auto",
                     timeout_seconds: float = 1800) -> DistributedContext:
    """Join the process group that torchrun describes in the environment and return this
    process's :class:`DistributedContext`. Without an explicit ``backend``: NCCL when the
    process trains on CUDA (``device``, see :func:`rank_device`), gloo on the CPU. A group
    that is already initialised is used as it is. The group is destroyed at exit (or
    earlier by :func:`shutdown_distributed`)."""
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; install a build with "
                           "distributed support to train with several processes.")
    device = rank_device(device)
    if dist.is_initialized():
        return _context(device)
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"distributed training needs the process-group variables that torchrun sets, but "
            f"{missing} are not set. Launch every process with torchrun, e.g. `torchrun "
            "--standalone --nproc_per_node=2 train.py` on one machine (see the README for "
            "several machines), or train without distributed=True.")
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and (device.type != "cuda" or not dist.is_nccl_available()):
        raise ValueError(f"backend='nccl' needs CUDA (device {str(device)!r}, NCCL available: "
                         f"{dist.is_nccl_available()}); use backend='gloo' on the CPU.")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds),
                            device_id=device if device.type == "cuda" else None)
    atexit.register(shutdown_distributed)
    return _context(device)


def shutdown_distributed() -> None:
    """Leave and destroy the process group (nothing happens without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_session(backend: str | None = None, device: str | torch.device = "auto",
                        timeout_seconds: float = 1800) -> Iterator[DistributedContext]:
    """``with distributed_session() as ctx:`` joins the torchrun process group (see
    :func:`init_distributed`) and destroys it on leaving, if it set it up."""
    already = dist.is_available() and dist.is_initialized()
    context = init_distributed(backend, device, timeout_seconds)
    try:
        yield context
    finally:
        if not already:
            shutdown_distributed()


def barrier() -> None:
    """Wait until every rank arrives (nothing happens without a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def rank_zero_only(fn: Callable) -> Callable:
    """``fn`` run on rank 0 only (returning None on the other ranks): for logs, prints,
    figures and files, e.g. ``fit(..., monitor=Monitoring(callbacks=[rank_zero_only(print)]))``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_rank_zero() else None
    return wrapper


def on_rank_zero(fn: Callable, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on rank 0 and return its result on every rank; if it
    raises, every rank raises the same exception (so no rank waits for a partner that has
    failed). Every rank must call it. Without a process group it simply calls ``fn``."""
    if get_world_size() == 1:
        return fn(*args, **kwargs)
    outcome: list = [None]
    error = None
    if is_rank_zero():
        try:
            outcome[0] = ("result", fn(*args, **kwargs))
        except Exception as caught:
            error = caught
            outcome[0] = ("error", _shareable(caught))
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        raise error if error is not None else value
    return value


def _shareable(error: Exception) -> Exception:
    """``error`` itself if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__} on rank 0: {error}")
