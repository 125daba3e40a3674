"""Anomaly scores rank planted outliers above inliers; the ROC AUC is the Mann-Whitney statistic."""

import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

import pyro_vae as pv
from pyro_vae.inference.metrics.anomaly import anomaly_scores, roc_auc, roc_curve


def test_roc_matches_scikit_learn_with_ties():
    g = torch.Generator().manual_seed(0)
    inlier = torch.randint(0, 6, (70,), generator=g).double()
    outlier = torch.randint(3, 9, (40,), generator=g).double()
    labels = [0] * 70 + [1] * 40
    scores = torch.cat([inlier, outlier]).numpy()
    assert roc_auc(inlier, outlier) == pytest.approx(roc_auc_score(labels, scores))
    fpr, tpr = roc_curve(inlier, outlier)
    expected_fpr, expected_tpr, _ = sklearn_roc_curve(labels, scores)
    assert fpr.tolist() == pytest.approx(expected_fpr.tolist())
    assert tpr.tolist() == pytest.approx(expected_tpr.tolist())
    assert roc_auc([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5


@pytest.mark.parametrize("method", ["elbo", "log_likelihood", "recon"])
def test_planted_outliers_rank_above_inliers(ppca, method):
    """Probabilistic PCA with the exact posterior as guide; outliers are model draws moved
    orthogonally to the model's subspace by 5 noise standard deviations, so log p(x) drops by
    about 12.5 nats, against an inlier spread of about 1.6 nats (chi-square, 5 dof, / 2)."""
    model = ppca.exact_posterior_vae()
    inliers = ppca.sample(200, seed=1)
    direction = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    direction = direction - ppca.W @ torch.linalg.lstsq(ppca.W, direction).solution
    shift = 5 * ppca.sigma * direction / direction.norm()
    outliers = ppca.sample(20, seed=2) + shift
    scores_in = anomaly_scores(model, inliers, method, num_samples=50)
    scores_out = anomaly_scores(model, outliers, method, num_samples=50)
    assert roc_auc(scores_in, scores_out) > 0.95
    if method == "log_likelihood":   # the exact posterior makes the estimate exact
        assert torch.allclose(-scores_in, ppca.exact_log_prob(inliers), atol=1e-3)


def test_autoencoder_scores(binary_digits):
    model = pv.models.autoencoder(64, 2, hidden=(8,))
    with pytest.raises(ValueError, match="method='recon'"):
        anomaly_scores(model, binary_digits.test, "elbo", num_samples=2)
    assert torch.isfinite(anomaly_scores(model, binary_digits.test, "recon")).all()
    with pytest.raises(ValueError, match="unknown anomaly score method"):
        anomaly_scores(model, binary_digits.test, "entropy")
