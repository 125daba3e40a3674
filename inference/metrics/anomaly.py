"""Anomaly scores from a fitted model, and the ROC AUC that judges them.

A datapoint's score is how surprising the model finds it (higher = more anomalous):

=================  =====================================================================
method             score_n
=================  =====================================================================
``elbo``           -ELBO_n = -(E_q log p(x_n|z) - KL(q(z|x_n) || p(z))), K guide draws
``log_likelihood`` -log p(x_n), importance-sampled with K guide draws (Burda et al. 2015)
``recon``          -E_q log p(x_n|z); the only one defined for a point-mass guide (an AE)
=================  =====================================================================

ROC AUC = P(s_out > s_in) + P(s_out = s_in) / 2 for a random outlier and inlier (the
Mann-Whitney statistic): 1 ranks every outlier above every inlier, 0.5 is chance.
"""

from __future__ import annotations

import torch

from pyro_vae.inference.evaluation import elbo_terms, log_likelihood
from pyro_vae.inference.random_state import restores_random_state
from pyro_vae.models._validation import unknown_name_error

SCORE_METHODS = ("elbo", "log_likelihood", "recon")


@restores_random_state
@torch.no_grad()
def anomaly_scores(model, data, method: str = "log_likelihood", num_samples: int = 1000,
                   seed: int | None = 0, particle_budget: int = 2 ** 15) -> torch.Tensor:
    """Per-datapoint anomaly scores (N,), higher = more anomalous, in nats (see module doc),
    with ``num_samples`` guide draws per datapoint (``recon`` uses one). ``data`` is a
    tensor, a tuple ``(x, c)`` for a conditional model, or a batch source."""
    if method not in SCORE_METHODS:
        raise unknown_name_error("anomaly score method", method, SCORE_METHODS)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        if method == "log_likelihood":
            return -log_likelihood(model, data, num_samples, seed=seed,
                                   particle_budget=particle_budget)
        if seed is not None:
            torch.manual_seed(seed)
        particles = num_samples if method == "elbo" else 1
        terms = elbo_terms(model, data, num_particles=particles,
                           batch_size=max(1, particle_budget // particles))
        if method == "recon":
            return -terms["recon"]
        scores = -terms["elbo"]
    finally:
        if was_training:
            model.train()
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("the ELBO is not finite for this model (a point-mass guide has "
                         "KL = +inf); use method='recon' for an autoencoder")
    return scores


def _check_scores(inlier, outlier) -> tuple[torch.Tensor, torch.Tensor]:
    inlier, outlier = torch.as_tensor(inlier).flatten(), torch.as_tensor(outlier).flatten()
    if len(inlier) == 0 or len(outlier) == 0:
        raise ValueError(f"ROC needs at least one inlier and one outlier score; got "
                         f"{len(inlier)} inliers and {len(outlier)} outliers")
    if not (bool(torch.isfinite(inlier).all()) and bool(torch.isfinite(outlier).all())):
        raise ValueError("anomaly scores must be finite to be ranked")
    return inlier.double().cpu(), outlier.double().cpu()


def roc_auc(inlier_scores, outlier_scores) -> float:
    """Area under the ROC curve for outliers scored above inliers (ties count one half)."""
    inlier, outlier = _check_scores(inlier_scores, outlier_scores)
    scores = torch.cat([inlier, outlier])
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    average_rank = torch.cumsum(counts, 0).double() - (counts.double() - 1) / 2  # 1-based
    outlier_rank_sum = average_rank[inverse[len(inlier):]].sum().item()
    n_in, n_out = len(inlier), len(outlier)
    return (outlier_rank_sum - n_out * (n_out + 1) / 2) / (n_in * n_out)


def roc_curve(inlier_scores, outlier_scores) -> tuple[torch.Tensor, torch.Tensor]:
    """(false positive rate, true positive rate) at every distinct threshold, highest first,
    from (0, 0) to (1, 1): a point is flagged when its score is >= the threshold."""
    inlier, outlier = _check_scores(inlier_scores, outlier_scores)
    scores = torch.cat([inlier, outlier])
    is_outlier = torch.cat([torch.zeros_like(inlier), torch.ones_like(outlier)])
    order = torch.argsort(scores, descending=True, stable=True)
    scores, is_outlier = scores[order], is_outlier[order]
    last_of_each = torch.cat([torch.nonzero(scores[1:] != scores[:-1]).flatten(),
                              torch.tensor([len(scores) - 1])])
    tpr = torch.cumsum(is_outlier, 0)[last_of_each] / len(outlier)
    fpr = torch.cumsum(1 - is_outlier, 0)[last_of_each] / len(inlier)
    zero = fpr.new_zeros(1)
    return torch.cat([zero, fpr]), torch.cat([zero, tpr])
