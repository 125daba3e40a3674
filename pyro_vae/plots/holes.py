"""The holes study's 2 x 4 figure: encoder means, training curves, the latent maps with their
holes, per-feature reconstructions, and the reconstruction-KL trade-off."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from pyro_vae.data import Dataset
from pyro_vae.inference.evaluation import gaussian_kl
from pyro_vae.inference.metrics.holes import (
    HoleReport,
)

if TYPE_CHECKING:
    from pyro_vae.studies.holes import HolesStudyResult


def _encoder_panel(ax, model, data: Dataset, label: str, num_points: int = 5) -> None:
    """q(z_1 | x) for a few test points against p(z_1) = N(0, 1), with KL(q(z_1|x) || p)."""
    from pyro_vae.inference.metrics.holes import encoder_distributions

    locs, scales = encoder_distributions(model, data.test)
    order = torch.argsort(locs[:, 0])
    picks = order[torch.linspace(0, len(order) - 1, num_points).round().long()]
    grid = torch.linspace(-4, 4, 400, dtype=torch.float64)
    ax.plot(grid.numpy(), torch.distributions.Normal(0.0, 1.0).log_prob(grid).exp().numpy(),
            "k", lw=2.5, label="prior N(0, 1)")
    for i in picks.tolist():
        mu, sigma = locs[i, 0].item(), scales[i, 0].item()
        density = torch.distributions.Normal(mu, sigma).log_prob(grid).exp()
        ax.plot(grid.numpy(), density.numpy(), lw=1.2,
                label=f"KL(q(z1|x) || p) = {gaussian_kl(mu, sigma):.2f}")
    ax.set_title(f"encoders q(z1|x) vs prior ({label})")
    ax.set_xlabel("z1")
    ax.legend(fontsize=7)

def _curves_panel(ax, histories: dict) -> None:
    for i, (label, history) in enumerate(histories.items()):
        color = f"C{i}"
        epochs = history.column("epoch")
        ax.plot(epochs, [-v for v in history.column("recon")], color=color, label=f"{label} -recon")
        kl = history.column("kl")
        if all(math.isfinite(v) for v in kl):
            ax.plot(epochs, kl, color=color, ls="--", label=f"{label} KL")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.set_title("training: -recon (solid), KL (dashed)")
    ax.legend(fontsize=6, ncol=2)

def _latent_panel(ax, report: HoleReport, labels, label: str) -> None:
    codes = report.codes[:, :2].cpu().numpy()
    draws = report.draws["prior"][:, :2].cpu().numpy()
    holes = report.data["prior"].is_hole.cpu().numpy()
    colors = None if labels is None else labels[report.train_index].cpu().numpy()
    ax.scatter(codes[:, 0], codes[:, 1], c=colors, cmap="tab10", s=4, alpha=0.35,
               label="codes (by label)")
    ax.scatter(draws[~holes, 0], draws[~holes, 1], s=3, c="k", marker=".",
               label="prior draw, fine")
    ax.scatter(draws[holes, 0], draws[holes, 1], s=8, c="red", marker="x", lw=0.6,
               label="prior draw, hole")
    ax.set_title(f"{label}: holes latent {100 * report.latent['prior'].fraction:.0f}%, "
                 f"data {100 * report.data['prior'].fraction:.0f}%", fontsize=9)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.legend(fontsize=6, loc="lower right")

def _features_panel(ax, reports: dict, data: Dataset) -> None:
    ax.plot(data.train.mean(0).cpu().numpy(), "k", lw=2.5, label="data mean")
    for i, (label, report) in enumerate(reports.items()):
        ax.plot(report.decoded["prior"].mean(0).cpu().numpy(), color=f"C{i}", lw=1,
                label=label)
    ax.set_xlabel("feature")
    ax.set_ylabel("mean value")
    ax.set_title("mean decoded prior draw vs data mean")
    ax.legend(fontsize=7)

def _tradeoff_panel(ax, sweep: list[dict]) -> None:
    if not sweep:
        ax.set_axis_off()
        ax.set_title("beta sweep skipped")
        return
    beta = [r["beta"] for r in sweep]
    ax.plot(beta, [r["kl"] for r in sweep], "o-", color="C0", label="KL")
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlabel("beta")
    ax.set_ylabel("KL (nats)", color="C0")
    twin = ax.twinx()
    twin.plot(beta, [r["recon_nll"] for r in sweep], "s-", color="C3", label="recon NLL")
    twin.set_ylabel("recon NLL (nats)", color="C3")
    ax.set_title("beta trade-off (test set)")

def holes_figure(result: HolesStudyResult, models: dict, data: Dataset,
                 autoencoder_label: str = "AE"):
    """The 2 x 4 comparison figure: encoders vs prior with KL; training curves; the latent
    spaces of (up to) four models with prior draws marked hole or not (data-space measure);
    mean decoded prior draw vs the data mean; the beta trade-off."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(20, 9.5))
    first = result.settings["seeds"][0]
    vae_labels = [label for label in models if label != autoencoder_label]
    encoder_label = "beta=1" if "beta=1" in models else (vae_labels[0] if vae_labels else None)
    if encoder_label is not None:
        _encoder_panel(axes[0, 0], models[encoder_label], data, encoder_label)
    _curves_panel(axes[0, 1], result.histories)
    latent_axes = [axes[0, 2], axes[0, 3], axes[1, 0], axes[1, 1]]
    shown = list(models)[:4]
    for ax, label in zip(latent_axes, shown, strict=False):
        _latent_panel(ax, result.reports[(label, first)], data.train_labels, label)
    for ax in latent_axes[len(shown):]:
        ax.set_axis_off()
    _features_panel(axes[1, 2], {k: result.reports[(k, first)] for k in models}, data)
    _tradeoff_panel(axes[1, 3], result.sweep)
    z_dim = result.settings["z_dim"]
    note = ", first two dims shown" if z_dim > 2 else ""
    fig.suptitle(f"Holes study on {result.dataset} (seed {first}; z_dim {z_dim}{note})")
    fig.tight_layout()
    return fig
