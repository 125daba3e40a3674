"""Pieces shared by the discrete-latent models: one-hot sites, labels, baselines, groups.

Every discrete latent of these models is a ``OneHotCategorical`` sample site inside the
``"data"`` plate: its value is a one-hot vector (C,) per datapoint, so the same model code
runs when the site is

* enumerated in parallel (value shape (C, 1, ..., 1, C): every class at once, in its own
  tensor dim left of the plates; see :mod:`pyro_vae.inference.estimators`),
* sampled (a one-hot draw per datapoint, for score-function gradients), or
* relaxed (a point on the simplex, Gumbel-softmax / Concrete, reparameterised).

Networks see y through ``torch.cat`` after broadcasting (:func:`concat_broadcast`), and
class-dependent parameters through ``y @ table`` (a row of the table for a one-hot y, a
convex combination for a relaxed one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.models.networks import MLP


def concat_broadcast(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last dim after broadcasting every leading dim:
    ``x`` (B, D) with an enumerated ``y`` (C, 1, K) gives (C, B, D + K)."""
    lead = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(lead + t.shape[-1:]) for t in tensors], dim=-1)


def one_hot_table(num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """The identity matrix (C, C) in the dtype/device of ``like``: every class as a one-hot."""
    return torch.eye(num_classes, dtype=like.dtype, device=like.device)


def check_labels(labels, num_rows: int, num_classes: int, device=None) -> torch.Tensor | None:
    """Labels for a batch: None (no labels), or a 1-D integer tensor of ``num_rows`` values in
    {-1, 0, ..., C - 1} where -1 marks a datapoint without a label."""
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() != 1:
        got = (f"dtype {labels.dtype}, shape {tuple(labels.shape)}"
               if isinstance(labels, torch.Tensor) else type(labels).__name__)
        raise TypeError(f"labels must be a 1-D integer tensor with one entry per datapoint (-1 "
                        f"where the label is missing); got {got}. Use labels.long().")
    if len(labels) != num_rows:
        raise ValueError(f"got {len(labels)} labels for {num_rows} datapoints; pass one label "
                         "per row (-1 where it is missing)")
    if len(labels) and (int(labels.min()) < -1 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in -1..{num_classes - 1} (-1: no label); got values "
                         f"from {int(labels.min())} to {int(labels.max())}. Remap the labels or "
                         f"build the model with num_classes={int(labels.max()) + 1}.")
    return labels.to(device) if device is not None else labels


def pin_to_labels(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The guide's logits with every labelled row replaced by a point mass on its label
    (logit 0 there, -inf elsewhere): q(y | x, label) = onehot(label). Unlabelled rows (-1)
    keep ``logits``. Enumeration gives the other classes probability exactly 0."""
    if labels is None:
        return logits
    labelled = labels >= 0
    if not bool(labelled.any()):
        return logits
    hot = F.one_hot(labels.clamp(min=0), logits.shape[-1]).bool()
    pinned = torch.full_like(logits, float("-inf")).masked_fill(hot, 0.0)
    return torch.where(labelled.unsqueeze(-1), pinned, logits)


class BaselineNetwork(nn.Module):
    """b(x): a learned, input-dependent baseline per discrete site and datapoint for
    score-function (REINFORCE) gradients (Mnih & Gregor 2014). Output (..., num_sites),
    one column per name in ``sites``. The last layer starts at zero, so the network starts
    as "no correction" on top of the running-average baseline it refines. Only the
    ``score`` estimator with ``baseline='nn'`` trains or uses it. Tanh units (as NVIL's):
    while a fit improves, the running average lags the costs, the regression target keeps
    one sign, and ReLU units fed non-negative pixels were seen to die all together."""

    def __init__(self, x_dim: int, sites: Sequence[str], hidden: Sequence[int] = (64,),
                 activation: str = "tanh"):
        super().__init__()
        self.sites = tuple(sites)
        self.net = MLP(x_dim, list(hidden), len(self.sites), activation)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def split_parameters(model: nn.Module, groups: dict[str, Sequence[nn.Module]],
                     exclude: Sequence[nn.Module] = ()) -> dict[str, list[nn.Parameter]]:
    """Parameter groups for gradient diagnostics: each named group gets its modules'
    parameters; ``"decoder"`` gets every other parameter of ``model`` except ``exclude``."""
    out, taken = {}, set()
    for name, modules in groups.items():
        params = [p for m in modules for p in m.parameters()]
        out[name] = params
        taken |= {id(p) for p in params}
    for module in exclude:
        taken |= {id(p) for p in module.parameters()}
    out["decoder"] = [p for p in model.parameters() if id(p) not in taken]
    return out


class ClassSiteModel:
    """What the models with one class site y share (mixed into a PyroModule that has
    ``classifier`` (logits of q(y|x)), ``guide_family`` (q(z|x,y)) and ``baseline_network``)."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``classifier`` (q(y|x)), ``encoder`` (q(z|x,y)) and ``decoder`` (everything of the
        generative model); the score-function baseline network is in none of them."""
        return split_parameters(self, {"classifier": [self.classifier],
                                       "encoder": [self.guide_family]},
                                exclude=[self.baseline_network])

    @torch.no_grad()
    def y_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """q(y | x), the classifier's class probabilities, shape (N, C)."""
        return torch.softmax(self.classifier(x), -1)
