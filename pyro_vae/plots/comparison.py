"""Figures for comparisons and diagnostics; every function returns a matplotlib ``Figure``.

Figures are built without pyplot (no global state, no GUI backend needed): show one in a
notebook by leaving it as a cell's value, or save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from pyro_vae.inference.comparison import ComparisonResult
from pyro_vae.inference.diagnostics import (
    GOOD_KHAT,
    RELIABLE_KHAT,
    GradientSNRResult,
    KHatResult,
)
from pyro_vae.inference.estimators import parse_estimator


def _colours(names) -> dict:
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def curve_metric(result: ComparisonResult) -> str:
    """``val_elbo`` when the comparison monitored validation data, else ``elbo`` (the
    training-monitor ELBO); both beta-free, per datapoint."""
    rows = result.curves()
    return "val_elbo" if rows and all("val_elbo" in row for row in rows) else "elbo"


def plot_learning_curves(result: ComparisonResult, metric: str | None = None) -> Figure:
    """``metric`` (default :func:`curve_metric`) against epochs and against cumulative
    wall-clock seconds; one colour per estimator, one line per seed."""
    metric = metric or curve_metric(result)
    rows = result.curves()
    if rows and metric not in rows[0]:
        raise KeyError(f"the learning curves have no {metric!r}; they have "
                       f"{sorted(k for k in rows[0] if k not in ('estimator', 'seed'))}")
    fig = Figure(figsize=(11, 4), layout="constrained")
    by_epoch, by_time = fig.subplots(1, 2, sharey=True)
    colours = _colours(result.estimators)
    for run in result.runs:
        epochs = [r["epochs_done"] for r in run.history]
        seconds = [r["wall_seconds"] for r in run.history]
        values = [r.get(metric, math.nan) for r in run.history]
        label = run.estimator if run.seed == result.seeds[0] else None
        for ax, x in ((by_epoch, epochs), (by_time, seconds)):
            ax.plot(x, values, color=colours[run.estimator], alpha=0.8, lw=1.2, label=label,
                    marker="." if len(x) < 30 else None)
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("wall-clock seconds of training (monitoring included)")
    by_epoch.set_ylabel(f"{metric} (nats per datapoint)")
    by_epoch.legend(title=f"estimator ({len(result.seeds)} seeds)", fontsize="small")
    for ax in (by_epoch, by_time):
        ax.grid(alpha=0.3)
    fig.suptitle(f"Learning curves: {metric}")
    return fig


def _khat_values(khat) -> np.ndarray:
    values = khat.khat if isinstance(khat, KHatResult) else np.asarray(khat, dtype=float)
    return np.asarray(values, dtype=float).ravel()


def plot_khat(khat: KHatResult | np.ndarray, *, title: str | None = None, ax=None) -> Figure:
    """PSIS k-hat per datapoint with the 0.5 and 0.7 thresholds and the share of points in
    each band. k-hat = -inf (all weights equal) is drawn at the bottom edge."""
    values = _khat_values(khat)
    if ax is None:
        fig = Figure(figsize=(8, 3.5), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    floor = min(-0.5, np.min(values[np.isfinite(values)], initial=0.0) - 0.1)
    shown = np.clip(values, floor, None)
    bad, ok = values > RELIABLE_KHAT, (values > GOOD_KHAT) & (values <= RELIABLE_KHAT)
    colour = np.where(bad, "C3", np.where(ok, "C1", "C0"))
    ax.scatter(np.arange(values.size), shown, c=colour, s=8, marker="+")
    for level, style in ((GOOD_KHAT, ":"), (RELIABLE_KHAT, "--")):
        ax.axhline(level, color="grey", ls=style, lw=1)
    ax.set_xlabel("datapoint")
    ax.set_ylabel("PSIS k-hat")
    ax.set_title(title or (f"k-hat > 0.7: {bad.mean():.1%}   0.5 < k-hat <= 0.7: "
                           f"{ok.mean():.1%}   ({values.size} datapoints)"), fontsize="medium")
    ax.grid(alpha=0.3)
    return fig


def plot_khat_by_estimator(result: ComparisonResult) -> Figure:
    """Empirical CDF of the guide's k-hat over test points, per estimator (seeds pooled)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    colours = _colours(result.estimators)
    for estimator in result.estimators:
        values = np.concatenate([np.asarray(run.khat, dtype=float) for run in result.runs
                                 if run.estimator == estimator and run.khat is not None]
                                or [np.array([])])
        if not values.size:
            continue
        values = np.sort(np.clip(values, -1.0, None))
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                color=colours[estimator], label=estimator)
    for level, style in ((GOOD_KHAT, ":"), (RELIABLE_KHAT, "--")):
        ax.axvline(level, color="grey", ls=style, lw=1)
    ax.set_xlabel("PSIS k-hat of the guide (clipped at -1)")
    ax.set_ylabel("share of test datapoints")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _snr_axis(estimators: list[str]) -> tuple[list, str, bool]:
    """x positions for the estimators: K when they differ only in k, else their order."""
    parsed = [parse_estimator(e) if isinstance(e, str) else None for e in estimators]
    if all(p is not None and "k" in p.options for p in parsed) and len(
            {(p.name, tuple((k, v) for k, v in p.options.items() if k != "k"))
             for p in parsed}) == 1:
        return [p.options["k"] for p in parsed], f"K (particles of {parsed[0].name})", True
    return list(range(len(estimators))), "estimator", False


def plot_gradient_snr(result: GradientSNRResult) -> Figure:
    """Gradient SNR (mean and median over elements) and mean per-element variance, per
    parameter group, against the number of particles K (or per estimator)."""
    estimators = list(dict.fromkeys(s.estimator for s in result.stats))
    groups = list(dict.fromkeys(s.group for s in result.stats))
    xs, xlabel, numeric = _snr_axis(estimators)
    fig = Figure(figsize=(11, 4), layout="constrained")
    snr_ax, var_ax = fig.subplots(1, 2)
    colours = _colours(groups)
    for group in groups:
        stats = [result.get(e, group) for e in estimators]
        snr_ax.plot(xs, [s.snr_mean for s in stats], "o-", color=colours[group],
                    label=f"{group}: mean over elements")
        snr_ax.plot(xs, [s.snr_median for s in stats], "s--", color=colours[group],
                    label=f"{group}: median over elements")
        var_ax.plot(xs, [s.variance_mean for s in stats], "o-", color=colours[group],
                    label=group)
    for ax in (snr_ax, var_ax):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
        if numeric:
            ax.set_xscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
        else:
            ax.set_xticks(xs, estimators, rotation=20)
    snr_ax.set_ylabel("SNR = |mean| / std of the gradient")
    var_ax.set_ylabel("mean per-element gradient variance")
    snr_ax.legend(fontsize="small")
    var_ax.legend(fontsize="small")
    fig.suptitle(f"Gradient signal-to-noise at fixed parameters "
                 f"({result.settings.get('num_draws')} draws, batch "
                 f"{result.settings.get('batch_size')})")
    return fig


def plot_khat_results(results: Mapping[str, KHatResult]) -> Figure:
    """One :func:`plot_khat` panel per named k-hat result (e.g. one per fitted guide)."""
    fig = Figure(figsize=(8, 2.8 * len(results)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(results), 1, sharex=True, squeeze=False)[:, 0])
    for ax, (name, khat) in zip(axes, results.items(), strict=True):
        plot_khat(khat, ax=ax)
        ax.set_title(f"{name}: " + ax.get_title(), fontsize="medium")
    return fig
