"""Posterior predictive checks (Gelman, Meng & Stern 1996): do data replicated from the fitted
model look like the data? For each draw s of an ``InferenceData``'s predictive group (see
:func:`pyro_vae.to_inference_data`), the N replicated datapoints x_rep^s are summarised like
the observed ones: per-feature means and variances over the datapoints, and a test statistic
T chosen by the user; p = P(T(x_rep) >= T(x)) over the draws is the posterior predictive
p-value (near 0 or 1: the model does not reproduce T).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure


def mean_feature_variance(x: np.ndarray) -> float:
    """The default test statistic: the variance over datapoints of each feature, averaged
    over the features (a likelihood with the wrong noise level fails it)."""
    return float(x.reshape(len(x), -1).var(0).mean())


@dataclass
class PPCStatistics:
    """Observed and replicated summaries; ``replicated_*`` have the draws first."""

    observed_means: np.ndarray         # (features,)
    replicated_means: np.ndarray       # (draws, features)
    observed_variances: np.ndarray
    replicated_variances: np.ndarray
    observed_statistic: float
    replicated_statistic: np.ndarray   # (draws,)
    p_value: float                     # P(T(x_rep) >= T(x))


def ppc_statistics(idata, statistic: Callable[[np.ndarray], float] = mean_feature_variance,
                   group: str = "posterior_predictive", var: str = "x") -> PPCStatistics:
    """The summaries of the module docstring from ``idata[group][var]`` (chain, draw,
    datapoint, ...) against ``idata.observed_data[var]`` (datapoint, ...)."""
    if group not in idata.groups():
        raise ValueError(f"the InferenceData has no {group!r} group (it has {idata.groups()}); "
                         "make it with pyro_vae.to_inference_data(model, data), which adds "
                         "posterior_predictive and prior_predictive")
    observed = np.asarray(idata.observed_data[var].values, dtype=np.float64)
    replicated = np.asarray(idata[group][var].values, dtype=np.float64)
    replicated = replicated.reshape(-1, *replicated.shape[2:])     # (draws, datapoint, ...)
    flat_observed = observed.reshape(len(observed), -1)
    flat_replicated = replicated.reshape(len(replicated), replicated.shape[1], -1)
    replicated_statistic = np.array([statistic(draw) for draw in replicated])
    observed_statistic = float(statistic(observed))
    return PPCStatistics(
        flat_observed.mean(0), flat_replicated.mean(1), flat_observed.var(0),
        flat_replicated.var(1), observed_statistic, replicated_statistic,
        float(np.mean(replicated_statistic >= observed_statistic)))


def ppc_markdown(stats: PPCStatistics, name: str,
                 statistic_name: str = "mean feature variance") -> str:
    """A short Markdown table of a check: the statistic observed and replicated, p-value, and
    how far the replicated per-feature means and variances fall from the observed ones."""
    mean_gap = np.abs(stats.replicated_means.mean(0) - stats.observed_means).mean()
    variance_ratio = stats.replicated_variances.mean() / max(stats.observed_variances.mean(),
                                                             1e-12)
    replicated = stats.replicated_statistic
    return "\n".join([
        f"### Posterior predictive check: {name}", "",
        "| statistic | observed | replicated (mean, 5-95%) | p |", "|---|---|---|---|",
        f"| {statistic_name} | {stats.observed_statistic:.4g} | {replicated.mean():.4g} "
        f"({np.percentile(replicated, 5):.4g} to {np.percentile(replicated, 95):.4g}) | "
        f"{stats.p_value:.3f} |", "",
        f"Per feature: mean absolute gap between replicated and observed means "
        f"{mean_gap:.4g}; replicated variances {variance_ratio:.3g} times the observed "
        f"({len(replicated)} replicated datasets; p near 0 or 1 flags a statistic the model "
        "does not reproduce).", ""])


def plot_ppc(idata, statistic: Callable[[np.ndarray], float] = mean_feature_variance,
             statistic_name: str = "mean feature variance",
             group: str = "posterior_predictive", var: str = "x") -> Figure:
    """Three panels: replicated against observed per-feature means, the same for variances
    (median and 5-95% band over draws, the diagonal is agreement), and the distribution of
    T(x_rep) with T(x) and the p-value."""
    stats = ppc_statistics(idata, statistic, group, var)
    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, 3)
    for ax, observed, replicated, title in (
            (axes[0], stats.observed_means, stats.replicated_means, "per-feature mean"),
            (axes[1], stats.observed_variances, stats.replicated_variances,
             "per-feature variance")):
        low, mid, high = np.percentile(replicated, [5, 50, 95], axis=0)
        ax.errorbar(observed, mid, yerr=[mid - low, high - mid], fmt="o", ms=2, lw=0.5,
                    alpha=0.6)
        ends = [min(observed.min(), low.min()), max(observed.max(), high.max())]
        ax.plot(ends, ends, color="0.4", lw=0.8, ls="--")
        ax.set_xlabel("observed")
        ax.set_ylabel("replicated (median, 5-95%)")
        ax.set_title(title)
    axes[2].hist(stats.replicated_statistic, bins=30, color="0.6")
    axes[2].axvline(stats.observed_statistic, color="tab:red", label="observed")
    axes[2].set_title(f"{statistic_name}: p = {stats.p_value:.3f}")
    axes[2].legend(fontsize=8)
    label = "posterior" if group == "posterior_predictive" else "prior"
    fig.suptitle(f"{label} predictive check of {var!r} "
                 f"({stats.replicated_means.shape[0]} replicated datasets)")
    fig.tight_layout()
    return fig
