"""How fit and evaluate draw batches: plain tensors, tuples of tensors, or batch sources.

A batch is a tuple of positional arguments for ``model(*batch)`` and ``guide(*batch)``:
``(x,)`` for a VAE, ``(x, y)`` for a labelled model. Anything with ``__len__``, ``get(index)``
(returning such a tuple for a LongTensor of row indices), ``to(device)`` and ``device`` is a
batch source; :mod:`pyro_vae.data` uses that to binarise MNIST afresh for every batch. A
source whose batches are random draws also offers ``identity()``: a fixed tensor that
identifies its data (a resumed fit checks it is given the same data).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorSource:
    """Rows of one or more equally long tensors; ``get`` indexes all of them."""

    def __init__(self, *tensors: torch.Tensor):
        if not tensors:
            raise ValueError("no data given; expected a tensor of shape (N, features)")
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"data must be torch tensors; got {type(t).__name__}. Convert "
                                "with torch.as_tensor(array, dtype=torch.float32).")
        lengths = {len(t) for t in tensors}
        if len(lengths) != 1:
            raise ValueError(f"all data tensors must have the same number of rows (one per "
                             f"datapoint); got {[len(t) for t in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def to(self, device) -> TensorSource:
        return TensorSource(*(t.to(device) for t in self.tensors))

    def first(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device


class JoinedSource:
    """Several equally long sources side by side: ``get(index)`` is the concatenation of
    their batches, e.g. dynamically binarised images with a fixed tensor of labels."""

    def __init__(self, *sources):
        if not sources:
            raise ValueError("JoinedSource needs at least one source")
        self.sources = tuple(as_source(s) for s in sources)
        lengths = {len(s) for s in self.sources}
        if len(lengths) != 1:
            raise ValueError(f"all joined sources must have the same number of rows (one per "
                             f"datapoint); got {[len(s) for s in self.sources]}")

    def __len__(self) -> int:
        return len(self.sources[0])

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for source in self.sources for t in source.get(index))

    def to(self, device) -> JoinedSource:
        return JoinedSource(*(source.to(device) for source in self.sources))

    def first(self) -> torch.Tensor:
        return first_tensor(self.sources[0])

    def identity(self) -> torch.Tensor:
        return identity_tensor(self.sources[0])

    @property
    def device(self) -> torch.device:
        return self.sources[0].device


class LabelledInEveryBatch:
    """Stratified batches for semi-supervised training: an epoch runs over the rows whose
    label is missing (-1), and every batch also gets ``per_batch`` of the labelled rows,
    drawn at random without replacement (torch's global generator) each time.

    ``source`` gives ``(x, labels)`` batches. ``len`` is the number of unlabelled rows (the
    epoch); ``num_datapoints`` is all of them, N = n_u + n_l, the size the model's objective
    sums over. A model fitted on it scales its unlabelled rows by n_u / B_u and its labelled
    rows by n_l / per_batch, so every batch estimates the full objective without bias
    (:class:`~pyro_vae.models.SemiSupervisedVAE` with ``labelled_per_batch``).
    """

    def __init__(self, source, per_batch: int):
        self.source = as_source(source)
        if isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1:
            raise ValueError(f"per_batch (labelled rows in every batch) must be a positive "
                             f"integer; got {per_batch!r}")
        labels = self.source.get(torch.arange(len(self.source),
                                              device=self.source.device))[-1]
        self.unlabelled = (labels < 0).nonzero().flatten()
        self.labelled = (labels >= 0).nonzero().flatten()
        if len(self.labelled) < per_batch:
            raise ValueError(f"{per_batch} labelled rows per batch, but the data hold "
                             f"{len(self.labelled)} labelled rows; use at most that many")
        if not len(self.unlabelled):
            raise ValueError("every row is labelled: train on the plain source instead")
        self.per_batch = per_batch
        self.num_datapoints = len(self.source)

    def __len__(self) -> int:
        return len(self.unlabelled)

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        draw = torch.randperm(len(self.labelled))[:self.per_batch].to(self.labelled.device)
        rows = torch.cat([self.unlabelled[index.to(self.unlabelled.device)],
                          self.labelled[draw]])
        return self.source.get(rows.to(self.source.device))

    def to(self, device) -> LabelledInEveryBatch:
        return LabelledInEveryBatch(self.source.to(device), self.per_batch)

    def first(self) -> torch.Tensor:
        return first_tensor(self.source)

    def identity(self) -> torch.Tensor:
        return identity_tensor(self.source)

    @property
    def device(self) -> torch.device:
        return self.source.device


def objective_size(source) -> int:
    """N, the number of datapoints a fit's objective sums over: the source's length (an
    epoch), unless it says otherwise (``num_datapoints``, e.g. :class:`LabelledInEveryBatch`,
    whose epoch runs over the unlabelled rows only)."""
    return getattr(source, "num_datapoints", len(source))


def as_source(data) -> TensorSource:
    """Turn a tensor, a tuple/list of tensors, or a batch source into a batch source."""
    if isinstance(data, torch.Tensor):
        return TensorSource(data)
    if isinstance(data, (tuple, list)):
        return TensorSource(*data)
    if all(hasattr(data, attr) for attr in ("__len__", "get", "to", "device")):
        return data
    raise TypeError(f"data must be a tensor (N, features), a tuple of tensors, or a batch "
                    f"source with __len__, get(index), to(device) and device; got "
                    f"{type(data).__name__}")


def ordered_batches(source, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The whole source in order, ``batch_size`` rows at a time."""
    n = len(source)
    device = getattr(source, "device", None)
    for start in range(0, n, batch_size):
        yield source.get(torch.arange(start, min(start + batch_size, n), device=device))


def first_tensor(source) -> torch.Tensor:
    """The first data tensor of a source, whole (for input checks)."""
    if hasattr(source, "first"):
        return source.first()
    return source.get(torch.arange(len(source), device=getattr(source, "device", None)))[0]


def identity_tensor(source) -> torch.Tensor:
    """A tensor that identifies a source's data without drawing from it: its ``identity()``
    where it has one (a dynamically binarised source: its grey levels), else its first
    tensor."""
    identity = getattr(source, "identity", None)
    return identity() if callable(identity) else first_tensor(source)


#: how many numbers one chunk's temporaries of the data's size (pairs x features of a
#: datapoint) hold when the chunk is sized automatically. CPU: 2**22 float32 (16 MiB, about
#: 5350 pairs at 784 features) measured fastest: larger chunks' temporaries fall out of the
#: caches, smaller ones pay Pyro's tracing (about a millisecond) more often. A GPU needs many
#: more rows per kernel to be busy. Pairs per chunk are kept within the given bounds (the
#: hidden layers, which the size of the data does not show, set them for narrow data).
CHUNK_NUMBERS = {"cpu": 2 ** 22, "gpu": 2 ** 25}
CHUNK_PAIRS = {"cpu": (1024, 8192), "gpu": (8192, 2 ** 17)}


def automatic_particle_budget(batch: tuple[torch.Tensor, ...]) -> int:
    """(particle, datapoint) pairs per chunk for data like ``batch`` (a few of its rows):
    :data:`CHUNK_NUMBERS` over the numbers in one datapoint's row, within :data:`CHUNK_PAIRS`,
    for the batch's device (CPU, or any other taken as a GPU)."""
    kind = "cpu" if batch[0].device.type == "cpu" else "gpu"
    features = max(1, sum(t[0].numel() for t in batch if t.dim() > 0))
    low, high = CHUNK_PAIRS[kind]
    return min(high, max(low, CHUNK_NUMBERS[kind] // features))


def _chunking(n_total: int, num_samples: int, batch_size: int | None,
              particle_budget: int) -> tuple[int, int]:
    """(datapoints per batch, particles per chunk) with their product near the budget."""
    batch = min(n_total, batch_size or max(1, particle_budget // min(num_samples, 64)))
    return batch, max(1, min(num_samples, particle_budget // batch))
