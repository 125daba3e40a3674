"""Anomaly detection with a VAE: leave one population out of training, score it, read the ROC.

:func:`run_anomaly_study` trains a VAE on every population (label) but one, scores the held-out
test points of the trained populations (inliers) and of the left-out one (outliers) with
-ELBO, importance-sampled -log p(x) and -E_q log p(x|z) (:mod:`pyro_vae.inference.metrics.anomaly`),
and reports the ROC AUC of each score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from pyro_vae.data import Dataset
from pyro_vae.inference import fit
from pyro_vae.inference.metrics.anomaly import SCORE_METHODS, anomaly_scores, roc_auc
from pyro_vae.models import VAE
from pyro_vae.plots.studies import anomaly_figure
from pyro_vae.studies._common import as_dataset


@dataclass
class AnomalyResult:
    """ROC AUC per score method, the scores themselves and the figure."""

    auc: dict[str, float]
    inlier_scores: dict[str, torch.Tensor] = field(repr=False)
    outlier_scores: dict[str, torch.Tensor] = field(repr=False)
    settings: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)
    figure: object = field(default=None, repr=False)

    def to_markdown(self) -> str:
        s = self.settings
        lines = [f"## Anomaly scores on {s['dataset']}: population {s['holdout_label']} left "
                 f"out of training ({s['num_inliers']} inliers, {s['num_outliers']} outliers "
                 f"in the test split)", "", "| score | ROC AUC |", "|---|---|"]
        lines += [f"| {method} | {auc:.3f} |" for method, auc in self.auc.items()]
        return "\n".join(lines) + "\n"


def _split_by_label(x: torch.Tensor, labels: torch.Tensor, holdout) -> tuple:
    outlier = labels == holdout
    return x[~outlier], x[outlier]


def run_anomaly_study(dataset: Dataset | str = "digits", *, holdout_label: int | None = None,
                      z_dim: int = 8, hidden=(256, 256), epochs: int = 100,
                      batch_size: int = 128, lr: float = 1e-3, likelihood: str | None = None,
                      methods: Sequence[str] = SCORE_METHODS, num_samples: int = 1000,
                      seed: int = 0, device: str = "cpu", quiet: bool = True,
                      figure: bool = True) -> AnomalyResult:
    """Train on all labels but ``holdout_label`` (default: the largest label) and report the
    ROC AUC of each anomaly score for the left-out population against held-out inliers."""
    dataset = as_dataset(dataset)
    if dataset.train_labels is None or dataset.test_labels is None:
        raise ValueError(f"dataset {dataset.name!r} has no labels; the anomaly study leaves "
                         "one labelled population out of training")
    present = sorted(set(dataset.train_labels.tolist()))
    holdout_label = present[-1] if holdout_label is None else holdout_label
    if holdout_label not in present:
        raise ValueError(f"holdout_label {holdout_label!r} is not a label of {dataset.name!r}; "
                         f"labels are {present}")
    train, _ = _split_by_label(dataset.train, dataset.train_labels, holdout_label)
    inliers, outliers = _split_by_label(dataset.test, dataset.test_labels, holdout_label)
    likelihood = likelihood or dataset.suggested_likelihood
    torch.manual_seed(seed)
    model = VAE(dataset.x_dim, z_dim, hidden=tuple(hidden), likelihood=likelihood)
    fit(model, train, epochs=epochs, batch_size=min(batch_size, len(train)), lr=lr, seed=seed,
        device=device, quiet=quiet, estimator="meanfield")
    model.to("cpu")
    inlier_scores, outlier_scores, auc = {}, {}, {}
    for method in methods:
        inlier_scores[method] = anomaly_scores(model, inliers, method, num_samples, seed)
        outlier_scores[method] = anomaly_scores(model, outliers, method, num_samples, seed)
        auc[method] = roc_auc(inlier_scores[method], outlier_scores[method])
    settings = {"dataset": dataset.name, "holdout_label": holdout_label, "z_dim": z_dim,
                "epochs": epochs, "likelihood": likelihood, "seed": seed,
                "num_samples": num_samples, "num_train": len(train),
                "num_inliers": len(inliers), "num_outliers": len(outliers)}
    result = AnomalyResult(auc, inlier_scores, outlier_scores, settings, model)
    if figure:
        result.figure = anomaly_figure(result)
    return result
