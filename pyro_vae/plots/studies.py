"""Figures of the posterior-collapse and anomaly studies."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyro_vae.studies.anomaly import AnomalyResult
    from pyro_vae.studies.collapse import CollapseResult

import torch

from pyro_vae.inference.metrics.anomaly import roc_curve


def collapse_figure(result: CollapseResult):
    """Three panels: KL per latent dimension (sorted), the active-unit statistic
    Cov_x E_q[z_u|x] per dimension against the 0.01 threshold, and KL during training."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    width = 0.8 / len(result.rows)
    for i, row in enumerate(result.rows):
        kl = sorted(row["kl_per_dimension"], reverse=True)
        variances = sorted(row["unit_variances"], reverse=True)
        dims = np.arange(len(kl)) + (i - (len(result.rows) - 1) / 2) * width
        label = f"{row['variant']} ({row['active_units']} active)"
        axes[0].bar(dims, kl, width, label=label, color=f"C{i}")
        axes[1].bar(dims, variances, width, label=label, color=f"C{i}")
        history = result.histories[row["variant"]]
        axes[2].plot(history.column("epoch"), history.column("kl"), color=f"C{i}",
                     label=row["variant"])
    lam = result.settings["free_bits"]
    axes[0].axhline(lam, color="k", ls=":", lw=1, label=f"free bits lambda = {lam:g}")
    axes[0].set(xlabel="latent dimension (sorted)", ylabel="KL(q(z_j|x) || p(z_j)) (nats)",
                title="KL per dimension (test set)")
    axes[1].axhline(0.01, color="k", ls=":", lw=1, label="active threshold 0.01")
    axes[1].set_yscale("log")
    axes[1].set(xlabel="latent dimension (sorted)", ylabel="Cov_x E_q[z_j | x]",
                title="active units")
    axes[2].set(xlabel="epoch", ylabel="KL (nats, beta-free)", title="KL during training")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"Posterior collapse on {result.settings['dataset']}: beta = "
                 f"{result.settings['beta']:g}, z_dim = {result.settings['z_dim']}")
    fig.tight_layout()
    return fig


def anomaly_figure(result: AnomalyResult):
    """Score histograms (inliers vs the left-out population) per method, and the ROC curves."""
    import matplotlib.pyplot as plt

    methods = list(result.auc)
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(4.5 * (len(methods) + 1), 4))
    for ax, method in zip(axes, methods, strict=False):
        inlier, outlier = result.inlier_scores[method], result.outlier_scores[method]
        bins = torch.linspace(float(torch.cat([inlier, outlier]).min()),
                              float(torch.cat([inlier, outlier]).max()), 40)
        ax.hist(inlier.numpy(), bins=bins.numpy(), alpha=0.6, density=True, label="inliers")
        ax.hist(outlier.numpy(), bins=bins.numpy(), alpha=0.6, density=True,
                label=f"left out ({result.settings['holdout_label']})")
        ax.set(title=f"score: {method}", xlabel="score (nats)")
        ax.legend(fontsize=7)
    roc_ax = axes[-1]
    for method in methods:
        fpr, tpr = roc_curve(result.inlier_scores[method], result.outlier_scores[method])
        roc_ax.plot(fpr.numpy(), tpr.numpy(), label=f"{method} (AUC {result.auc[method]:.3f})")
    roc_ax.plot([0, 1], [0, 1], "k:", lw=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    roc_ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
