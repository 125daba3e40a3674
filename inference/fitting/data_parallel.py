"""Synchronous data parallelism over a ``torch.distributed`` process group, for any estimator.

Every rank holds the same model and the same data order. A step's global batch of b points
(drawn from the shared permutation) is split into contiguous shards of b_r points, one per
rank. Each rank runs ``elbo.loss_and_grads`` on its shard with ``num_data = N``, so its
loss L_r estimates the full-data objective with scale N / b_r; the ranks then combine

    g = sum_r (b_r / b) grad L_r,        L = sum_r (b_r / b) L_r,

which is the gradient and the loss of the single-process estimate on the whole global batch
(scale N / b), for every bound that is a sum of per-datapoint terms (ELBO, IWAE/Renyi per
datapoint, TraceGraph, TraceEnum with local discrete latents); a term outside the data plate
(a global latent) is counted once, since the weights sum to one. A model without ``num_data``
is unscaled (its loss is a sum over its batch), so there the weights are 1 and the ranks'
gradients are summed. Because only gradients are exchanged (an all-reduce after
``loss_and_grads``), estimators without a differentiable loss work unchanged, which
``DistributedDataParallel`` (a wrapper of ``forward``) cannot offer.

Nothing here reads environment variables or writes files: the process group is set up by
the caller (see :mod:`pyro_vae.distributed`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist


def particle_seed(seed: int, rank: int, step: int | None = None) -> int:
    """The seed of rank ``rank``'s random streams (particles, dropout, random batches):
    ``seed`` itself on rank 0, so a one-process run repeats a plain fit, and an independent
    stream derived from ``(seed, rank)`` (or ``(seed, rank, step)``, for a rank that joins
    a resumed run) by NumPy's ``SeedSequence`` otherwise."""
    if rank == 0 and step is None:
        return seed
    entropy = [seed % 2 ** 64, rank] + ([] if step is None else [step])
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def _by_dtype_and_device(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """Positions of ``tensors`` grouped by (dtype, device), in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for position, tensor in enumerate(tensors):
        groups.setdefault((tensor.dtype, tensor.device), []).append(position)
    return list(groups.values())


class DataParallel:
    """The ranks of the default process group, training one model together.

    Collective methods must be called by every rank in the same order (each does).
    """

    def __init__(self):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True needs an initialised torch.distributed process group, but "
                "there is none. Launch with torchrun (torchrun --nproc_per_node=2 "
                "script.py) and call pyro_vae.distributed.init_distributed() first, or use "
                "pyro_vae.fit(..., distributed=True), which does it for you.")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.backend = str(dist.get_backend())
        # NCCL reduces CUDA tensors only; the other backends take CPU tensors
        self.device = (torch.device("cuda", torch.cuda.current_device())
                       if self.backend == "nccl" else torch.device("cpu"))

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, world_size={self.world_size}, " \
               f"backend={self.backend!r})"

    # -- data -------------------------------------------------------------------------------
    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch's indices (sizes differ by at most
        one, larger shards first; a shard is empty when the batch has fewer points than
        there are ranks)."""
        return torch.tensor_split(indices, self.world_size)[self.rank]

    # -- parameters -------------------------------------------------------------------------
    @torch.no_grad()
    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``, in place."""
        tensors = [t for t in itertools.chain(module.parameters(), module.buffers())]
        for group in _by_dtype_and_device(tensors):
            members = [tensors[i] for i in group]
            flat = self._to_comm(torch.cat([t.detach().reshape(-1) for t in members]))
            dist.broadcast(flat, src=0)
            for tensor, part in zip(members, self._split(flat, members), strict=True):
                tensor.copy_(part.view_as(tensor))

    def combine_gradients(self, parameters: Iterable[torch.Tensor], loss: float,
                          weight: float) -> float:
        """Replace every rank's gradients by sum_r weight_r * grad_r and return
        sum_r weight_r * loss_r (identical on every rank). A parameter without a gradient
        counts as zero; one without a gradient on every rank keeps ``grad = None`` (so an
        optimizer leaves it alone, as it would in one process). A NaN or inf anywhere
        reaches every rank, so every rank takes the same decision about the step."""
        params = list(parameters)
        has_grad = [p.grad is not None for p in params]
        meta = torch.tensor([loss * weight, *map(float, has_grad)],
                            dtype=torch.float64, device=self.device)
        dist.all_reduce(meta)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for group in _by_dtype_and_device(grads):
            members = [grads[i] for i in group]
            flat = torch.cat([g.reshape(-1) for g in members])
            if weight != 1.0:
                flat.mul_(weight)
            flat = self._to_comm(flat)
            dist.all_reduce(flat)
            for position, part in zip(group, self._split(flat, members), strict=True):
                if meta[1 + position] > 0:
                    params[position].grad = part.to(grads[position].device).view_as(
                        grads[position])
                else:
                    params[position].grad = None
        return float(meta[0])

    # -- decisions and metrics --------------------------------------------------------------
    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on some rank."""
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor)
        return bool(tensor.item() > 0)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks of a float64 vector (returned on the CPU)."""
        tensor = values.to(self.device, torch.float64)
        dist.all_reduce(tensor)
        return tensor.cpu()

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def check_same(self, description: dict, what: str) -> None:
        """Raise ValueError on every rank unless all ranks pass the same ``description``
        (e.g. settings and a data checksum): ranks that disagree would deadlock or train
        different models."""
        everyone = self.gather(description)
        differing = sorted({key for other in everyone[1:] for key in set(other) | set(
            everyone[0]) if other.get(key) != everyone[0].get(key)})
        if differing:
            detail = "; ".join(f"{key}: " + ", ".join(
                f"rank {rank} {d.get(key)!r}" for rank, d in enumerate(everyone))
                for key in differing[:5])
            raise ValueError(f"the {self.world_size} ranks disagree about {what} ({detail}). "
                             "Every rank must run the same fit on the same data: pass the "
                             "same arguments and load the same dataset (same seed and "
                             "split) on every rank.")

    # -- helpers ----------------------------------------------------------------------------
    def _to_comm(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.backend != "nccl" else tensor.to(self.device)

    @staticmethod
    def _split(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return torch.split(flat, [t.numel() for t in like])
