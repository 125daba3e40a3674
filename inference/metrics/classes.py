"""Class metrics for models with a discrete site y: the posterior over y, and accuracy.

* :func:`discrete_posterior`: per datapoint, the guide's q(y | x) (``method="guide"``) or the
  model's own posterior p(y | x) = p(x, y) / sum_y' p(x, y'), with each p(x, y) estimated by
  importance sampling the other latents while y is enumerated (``method="model"``).
* :func:`clustering_accuracy`: the share of points whose cluster maps to their label under
  the best one-to-one matching of clusters to labels (Hungarian algorithm on the confusion
  matrix, ``scipy.optimize.linear_sum_assignment``); clusters left unmatched count as errors.
  Chance level is the largest class's share (every point in one cluster).
* :func:`label_accuracy`: what :func:`~pyro_vae.inference.evaluate` reports with labels:
  plain accuracy of argmax_y q(y|x) for a model whose classes are the labels
  (``labels_identified = True``, e.g. M2), clustering accuracy otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_vae.inference.batching import _chunking, as_source, ordered_batches
from pyro_vae.inference.enumeration import (
    MAX_ENUMERATION,
    _particle_budget,
    _plan,
    enumerated_terms,
)
from pyro_vae.inference.log_densities import _data_dim, guess_max_plate_nesting, unwrap_distribution
from pyro_vae.inference.random_state import restores_random_state
from pyro_vae.models._validation import check_positive_int, unknown_name_error

POSTERIOR_METHODS = ("guide", "model")


def _class_probabilities(site) -> torch.Tensor:
    fn = unwrap_distribution(site["fn"])
    if not isinstance(fn, (dist.Categorical, dist.OneHotCategorical)):
        raise TypeError(f"site {site['name']!r} is a {type(fn).__name__}; a posterior over "
                        "classes needs a Categorical or OneHotCategorical site")
    probs = fn.probs
    return probs.expand(site["fn"].batch_shape + probs.shape[-1:])


@torch.no_grad()
def _guide_posterior(model, batch, site: str, num_samples: int, nesting: int) -> torch.Tensor:
    with poutine.block(), pyro.plate("_particles", num_samples, dim=-(nesting + 1)):
        trace = poutine.trace(model.guide).get_trace(*batch)
    if site not in trace.nodes or trace.nodes[site]["type"] != "sample":
        names = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
        raise KeyError(f"the guide has no sample site {site!r}; its sites are {names}. Pass "
                       "the name of its discrete site (site=...).")
    node = trace.nodes[site]
    if _data_dim(node) is None:
        raise ValueError(f"site {site!r} is not inside pyro.plate('data'); a per-datapoint "
                         "posterior needs it there")
    probs = _class_probabilities(node)                        # (K, ..., B, C)
    probs = probs.reshape((1,) * (nesting + 2 - probs.dim()) + tuple(probs.shape))
    other = tuple(d for d in range(1, nesting + 1) if d != nesting + 1 + _data_dim(node))
    if other:
        probs = probs.mean(other)
    return probs.mean(0).reshape(len(batch[0]), -1)


@torch.no_grad()
def _model_posterior(model, batch, site: str, num_samples: int, chunk: int,
                     nesting: int) -> torch.Tensor:
    running = None
    for start in range(0, num_samples, chunk):
        terms = enumerated_terms(model, batch, min(chunk, num_samples - start), nesting)
        if site not in terms.positions:
            raise KeyError(f"{site!r} is not an enumerated discrete site; enumerated sites "
                           f"are {sorted(terms.positions)}")
        position = terms.positions[site]
        log_w = terms.log_joint - terms.log_guide_sampled
        others = tuple(p for p in terms.positions.values() if p != position)
        if others:
            log_w = torch.logsumexp(log_w, dim=others, keepdim=True)
        log_w = torch.logsumexp(log_w, dim=-2)              # over the particles
        running = log_w if running is None else torch.logaddexp(running, log_w)
    log_joint = running.reshape(running.shape[position], -1) - math.log(num_samples)
    return torch.softmax(log_joint, dim=0).T


@restores_random_state
@torch.no_grad()
def discrete_posterior(model, data, site: str = "y", *, method: str = "guide",
                       num_samples: int | None = None, batch_size: int | None = None,
                       particle_budget: int = 2 ** 15, seed: int | None = 0) -> torch.Tensor:
    """Class probabilities of the discrete site ``site`` for every datapoint, shape (N, C).

    ``method="guide"``: q(y | x), averaged over ``num_samples`` (default 1) draws of any
    latent the guide samples before y. ``method="model"``: p(y | x) proportional to
    p(x, y) ~= (1/K) sum_k p(x, y, z_k) / q(z_k | x, y) with K = ``num_samples`` (default
    100) guide draws per class (needs the discrete sites to be enumerable).
    """
    if method not in POSTERIOR_METHODS:
        raise unknown_name_error("posterior method", method, POSTERIOR_METHODS)
    num_samples = check_positive_int(num_samples or (1 if method == "guide" else 100),
                                     "num_samples")
    source = as_source(data)
    if seed is not None:
        pyro.set_rng_seed(seed)
    first = next(ordered_batches(source, 2))
    nesting = guess_max_plate_nesting(model, first)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        if method == "guide":
            rows = batch_size or max(1, particle_budget // num_samples)
            return torch.cat([_guide_posterior(model, batch, site, num_samples, nesting)
                              for batch in ordered_batches(source, rows)])
        plan = _plan(model, source, MAX_ENUMERATION)
        if not plan.enumerate or site not in plan.sites:
            raise ValueError(f"method='model' sums over the discrete sites exactly, but "
                             f"{site!r} is not among the enumerable sites {sorted(plan.sites)} "
                             f"({plan.configurations} joint configurations); use "
                             "method='guide'.")
        rows, chunk = _chunking(len(source), num_samples, batch_size,
                                _particle_budget(plan, particle_budget))
        return torch.cat([_model_posterior(model, batch, site, num_samples, chunk, nesting)
                          for batch in ordered_batches(source, rows)])
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def _as_labels(labels, n: int) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers, one per datapoint; got an array of "
                         f"shape {labels.shape} and dtype {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise ValueError("labels must be >= 0 for an accuracy (found negative labels, i.e. "
                         "missing ones); evaluate on labelled points only")
    return labels


@dataclass
class ClusteringResult:
    """Clustering accuracy under the best one-to-one matching of clusters to labels."""

    accuracy: float
    mapping: dict[int, int]          # cluster -> label (matched clusters only)
    confusion: np.ndarray = field(repr=False)   # (clusters, labels) counts
    chance: float = 0.0              # the largest label's share


def clustering_accuracy(assignments, labels, num_clusters: int | None = None
                        ) -> ClusteringResult:
    """The best one-to-one matching of clusters to labels (Hungarian algorithm) and the
    share of points it labels correctly; unmatched clusters' points count as errors."""
    from scipy.optimize import linear_sum_assignment

    if isinstance(assignments, torch.Tensor):
        assignments = assignments.detach().cpu().numpy()
    assignments = np.asarray(assignments)
    labels = _as_labels(labels, len(assignments))
    if not len(labels):
        raise ValueError("clustering accuracy needs at least one datapoint")
    clusters = int(max(assignments.max() + 1, num_clusters or 0))
    classes = int(labels.max() + 1)
    confusion = np.zeros((clusters, classes), dtype=np.int64)
    np.add.at(confusion, (assignments, labels), 1)
    rows, cols = linear_sum_assignment(-confusion)
    matched = int(confusion[rows, cols].sum())
    return ClusteringResult(matched / len(labels), {int(r): int(c) for r, c in zip(
        rows, cols, strict=True)}, confusion, float(np.bincount(labels).max() / len(labels)))


@dataclass
class LabelAccuracy:
    accuracy: float
    kind: str                        # "classification" or "clustering"
    probs: torch.Tensor = field(repr=False)


def label_accuracy(model, data, labels, site: str = "y") -> LabelAccuracy:
    """Accuracy of argmax_y q(y | x) against ``labels``: plain when the model declares
    ``labels_identified = True`` (its class c is label c), else clustering accuracy."""
    source = as_source(data)
    labels = _as_labels(labels, len(source))
    probs = discrete_posterior(model, source, site)
    predicted = probs.argmax(-1).cpu().numpy()
    if getattr(model, "labels_identified", False):
        return LabelAccuracy(float(np.mean(predicted == labels)), "classification", probs)
    result = clustering_accuracy(predicted, labels, num_clusters=probs.shape[-1])
    return LabelAccuracy(result.accuracy, "clustering", probs)
