"""Measures of a fitted model beyond the bound: hole fractions in the latent space
(:mod:`.holes`), anomaly scores and ROC curves (:mod:`.anomaly`), and the posterior over a
discrete site with classification and clustering accuracy (:mod:`.classes`)."""

from pyro_vae.inference.metrics.anomaly import SCORE_METHODS, anomaly_scores, roc_auc, roc_curve
from pyro_vae.inference.metrics.classes import (
    ClusteringResult,
    LabelAccuracy,
    clustering_accuracy,
    discrete_posterior,
    label_accuracy,
)
from pyro_vae.inference.metrics.holes import HoleReport, hole_fractions

__all__ = ["SCORE_METHODS", "anomaly_scores", "roc_auc", "roc_curve", "ClusteringResult",
           "LabelAccuracy", "clustering_accuracy", "discrete_posterior", "label_accuracy",
           "HoleReport", "hole_fractions"]
