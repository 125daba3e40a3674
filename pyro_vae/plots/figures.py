"""Figures of a fitted model: one function per picture, each returning a matplotlib Figure.

Nothing here trains. Functions take a model with the VAE's conveniences (``encode``,
``decode``, ``sample_latent``, ``sample_observations``) and/or tensors, move inputs to the
model's device, and build a :class:`matplotlib.figure.Figure` without pyplot, so they work
headless (the CLI saves them as PNG) and display once in a notebook.

``feature_shape`` (C, H, W) draws rows as images; without it (or for 1-D shapes) rows are
tabular and the figures show feature values instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.inference.batching import as_source, first_tensor
from pyro_vae.inference.random_state import restores_random_state
from pyro_vae.io import atomic_write

TRAIN_COLOR, VALIDATION_COLOR, GRID_COLOR = "tab:blue", "tab:orange", "#c9d3dd"


# ---- helpers --------------------------------------------------------------------------------

def _reference(model) -> torch.Tensor:
    return next(model.parameters())


def _to_model(model, x: torch.Tensor) -> torch.Tensor:
    ref = _reference(model)
    return torch.as_tensor(x).to(device=ref.device, dtype=ref.dtype)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def is_image_shape(feature_shape) -> bool:
    return feature_shape is not None and len(feature_shape) == 3


def _as_images(rows: np.ndarray, feature_shape) -> np.ndarray:
    """(n, C*H*W) -> (n, H, W) for one channel, (n, H, W, 3) for RGB (first channel else)."""
    c, h, w = feature_shape
    images = rows.reshape(len(rows), c, h, w)
    return images.transpose(0, 2, 3, 1) if c == 3 else images[:, 0]


def _value_range(*arrays: np.ndarray) -> tuple[float | None, float | None]:
    """(0, 1) when every value lies in [0, 1] (pixels), else a shared data range."""
    low = min(float(np.nanmin(a)) for a in arrays)
    high = max(float(np.nanmax(a)) for a in arrays)
    return (0.0, 1.0) if low >= 0 and high <= 1 else (low, high)


def _tile(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """Lay ``images`` (n, H, W[, 3]) out on a grid of ``ncol`` columns; padding is NaN."""
    n, h, w = images.shape[:3]
    nrow = math.ceil(n / ncol)
    canvas = np.full((nrow * (h + pad) - pad, ncol * (w + pad) - pad) + images.shape[3:],
                     np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
    return canvas


def _show_grid(ax, images: np.ndarray, ncol: int, vrange) -> None:
    """Images on a grid, dark ink on white for pixels in [0, 1], separated by light lines
    (NaN pixels, e.g. blank cells, are drawn in the separator colour)."""
    cmap = matplotlib.colormaps["gray_r" if vrange == (0.0, 1.0) else "gray"]
    ax.imshow(_tile(images, ncol), cmap=cmap.with_extremes(bad=GRID_COLOR), vmin=vrange[0],
              vmax=vrange[1], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _feature_names(dim: int, names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None and len(names) == dim else [
        f"x{i}" for i in range(dim)]


def _records(history) -> list[dict]:
    if hasattr(history, "history"):
        history = history.history
    return list(history)


def _pca(z: np.ndarray, components: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(projection (n, components), the components (components, d), explained fractions)."""
    mean = z.mean(0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    explained = s ** 2 / max(float((s ** 2).sum()), 1e-300)
    return (z - mean) @ vt[:components].T, vt[:components], explained[:components]


def _label_colours(labels: np.ndarray):
    values = np.unique(labels)
    cmap = "tab10" if len(values) <= 10 else "tab20"
    return values, cmap


# ---- figures --------------------------------------------------------------------------------

def plot_training_curves(history, title: str | None = None) -> Figure:
    """Training curves per epoch: the objective and the ELBO (nats per datapoint, higher is
    better), the reconstruction term E_q log p(x|z) and the KL term; validation dashed.

    ``history`` is a :class:`~pyro_vae.FitResult` or a list of epoch records (as in
    ``history.csv``).
    """
    records = _records(history)
    if not records:
        raise ValueError("the history is empty; fit for at least one epoch")
    epochs = [r["epoch"] for r in records]

    def column(key):
        return [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in records]

    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [("total", "elbo", "ELBO (nats / datapoint)"),
              ("reconstruction", "recon", "E_q log p(x|z) (nats)"),
              ("KL", "kl", "KL(q(z|x) || p(z)) (nats)")]
    for ax, (name, key, ylabel) in zip(axes, panels, strict=True):
        if name == "total":
            ax.plot(epochs, [-v for v in column("loss")], color="0.6", lw=1,
                    label="training objective (-loss)")
        ax.plot(epochs, column(key), color=TRAIN_COLOR, label="train (monitored)")
        if any(f"val_{key}" in r for r in records):
            ax.plot(epochs, column(f"val_{key}"), color=VALIDATION_COLOR, ls="--",
                    label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


@restores_random_state
def plot_samples(model, n: int = 64, feature_shape: Sequence[int] = (1, 28, 28),
                 ncol: int | None = None, seed: int | None = 0) -> Figure:
    """A grid of E[x | z] for ``n`` draws z ~ p(z) (images)."""
    if seed is not None:
        torch.manual_seed(seed)
    means = _numpy(model.decode(model.sample_latent(n)))
    images = _as_images(means, feature_shape)
    ncol = ncol or math.ceil(math.sqrt(n))
    fig = Figure(figsize=(6, 6 * math.ceil(n / ncol) / ncol + 0.4), layout="constrained")
    ax = fig.subplots()
    _show_grid(ax, images, ncol, _value_range(means))
    ax.set_title(f"E[x | z] for {n} draws z ~ p(z)")
    return fig


@restores_random_state
def plot_sample_pairs(model, data, n: int | None = None, features: Sequence | None = None,
                      feature_names: Sequence[str] | None = None, seed: int | None = 0,
                      max_features: int = 5) -> Figure:
    """A corner plot of data against draws x ~ p(x|z), z ~ p(z) (tabular data): histograms on
    the diagonal, scatter plots below it, for up to ``max_features`` features
    (``features``: names or indices)."""
    x = _numpy(first_tensor(as_source(data)))
    n = n or len(x)
    names = _feature_names(x.shape[1], feature_names)
    if features is None:
        index = list(range(min(max_features, x.shape[1])))
    else:
        index = [names.index(f) if isinstance(f, str) else int(f) for f in features]
    if seed is not None:
        torch.manual_seed(seed)
    draws = _numpy(model.sample_observations(model.sample_latent(n)))
    k = len(index)
    fig = Figure(figsize=(2.2 * k + 0.5, 2.2 * k + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(k, k, squeeze=False))
    for i, fi in enumerate(index):
        for j, fj in enumerate(index):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                both = np.concatenate([x[:, fi], draws[:, fi]])
                bins = np.linspace(np.quantile(both, 0.005), np.quantile(both, 0.995), 30)
                ax.hist(x[:, fi], bins, density=True, color="0.5", alpha=0.6, label="data")
                ax.hist(draws[:, fi], bins, density=True, histtype="step", color="tab:red",
                        lw=1.5, label="model")
            else:
                ax.scatter(x[:, fj], x[:, fi], s=3, color="0.4", alpha=0.4, lw=0)
                ax.scatter(draws[:, fj], draws[:, fi], s=3, color="tab:red", alpha=0.4, lw=0)
            if i == k - 1:
                ax.set_xlabel(names[fj], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(names[fi], fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"data (grey) and {n} draws x ~ p(x|z), z ~ p(z) (red)")
    return fig


def plot_reconstructions(model, x: torch.Tensor, feature_shape: Sequence[int] | None = None,
                         feature_names: Sequence[str] | None = None) -> Figure:
    """Originals beside their reconstructions E[x | z = E_q[z|x]]: for images, originals on
    odd rows and reconstructions below them; for tables, one panel per feature
    (reconstruction against original, with the identity line and R^2)."""
    x = _to_model(model, x)
    original, recon = _numpy(x), _numpy(model.reconstruct(x))
    if is_image_shape(feature_shape):
        ncol = min(len(original), 10)
        rows = []
        for start in range(0, len(original), ncol):
            rows += [original[start:start + ncol], recon[start:start + ncol]]
        width = max(len(r) for r in rows)
        padded = [np.concatenate([r, np.full((width - len(r), r.shape[1]), np.nan)])
                  for r in rows]
        vrange = _value_range(original, recon)
        images = _as_images(np.concatenate(padded), feature_shape)
        fig = Figure(figsize=(1.0 * ncol + 0.5, 1.0 * len(rows) + 0.6), layout="constrained")
        ax = fig.subplots()
        _show_grid(ax, images, ncol, vrange)
        ax.set_title("originals (odd rows) and reconstructions E[x | E_q[z|x]] (even rows)")
        return fig
    names = _feature_names(original.shape[1], feature_names)
    d = original.shape[1]
    ncol = min(d, 4)
    nrow = math.ceil(d / ncol)
    fig = Figure(figsize=(3 * ncol, 2.6 * nrow + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= d:
            ax.set_axis_off()
            continue
        a, b = original[:, i], recon[:, i]
        ax.scatter(a, b, s=4, alpha=0.5, lw=0)
        lim = [min(a.min(), b.min()), max(a.max(), b.max())]
        ax.plot(lim, lim, color="0.3", lw=0.8)
        r2 = 1 - ((a - b) ** 2).sum() / max(((a - a.mean()) ** 2).sum(), 1e-300)
        ax.set_title(f"{names[i]}  R² = {r2:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("reconstruction E[x | E_q[z|x]] (y) against original (x)")
    return fig


def plot_latent_space(model, x: torch.Tensor, labels: torch.Tensor | None = None,
                      label_names: Sequence[str] | None = None, max_points: int = 5000
                      ) -> Figure:
    """Posterior means E_q[z|x] in 2-D, coloured by label: the latent space itself when
    z_dim <= 2, its first two principal components otherwise."""
    x = _to_model(model, x[:max_points])
    z = _numpy(model.encode(x))
    y = None if labels is None else np.asarray(labels[:max_points].cpu())
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    if z.shape[1] == 1:
        groups = [z[:, 0]] if y is None else [z[y == v, 0] for v in np.unique(y)]
        bins = np.linspace(z.min(), z.max(), 40)
        names = ["data"] if y is None else [
            (label_names[int(v)] if label_names is not None and int(v) < len(label_names)
             else str(v)) for v in np.unique(y)]
        for group, name in zip(groups, names, strict=True):
            ax.hist(group, bins, histtype="step", label=name)
        ax.set_xlabel("z")
        ax.set_ylabel("count")
        ax.legend(fontsize=8)
        ax.set_title("posterior means E_q[z|x] (z_dim = 1)")
        return fig
    if z.shape[1] == 2:
        points, xlabel, ylabel = z, "z1", "z2"
        title = "posterior means E_q[z|x]"
    else:
        points, _, explained = _pca(z)
        xlabel, ylabel = (f"PC{i + 1} ({100 * e:.0f}% of variance)"
                          for i, e in enumerate(explained))
        title = f"posterior means E_q[z|x], first two principal components of {z.shape[1]}"
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.6, lw=0)
    else:
        values, cmap = _label_colours(y)
        colours = matplotlib.colormaps[cmap].colors
        for i, v in enumerate(values):
            name = (label_names[int(v)] if label_names is not None and int(v) < len(label_names)
                    else str(v))
            mask = y == v
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, lw=0,
                       color=colours[i % len(colours)], label=name)
        ax.legend(fontsize=8, markerscale=2, loc="best",
                  ncol=1 if len(values) <= 5 else 2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def most_active_dimensions(model, data=None, num_dims: int = 4, num_prior_draws: int = 1000
                           ) -> tuple[list[int], np.ndarray]:
    """The ``num_dims`` latent dimensions with the largest variance of E_q[z_u|x] over
    ``data`` (Burda et al.'s activity; prior draws without data), and the posterior means
    (or prior draws) they were ranked on, shape (n, z_dim)."""
    if data is None:
        z = _numpy(model.sample_latent(num_prior_draws))
    else:
        z = _numpy(model.encode(_to_model(model, first_tensor(as_source(data)))))
    order = np.argsort(-z.var(0), kind="stable")
    return order[:min(num_dims, z.shape[1])].tolist(), z


def plot_latent_traversal(model, data=None, num_dims: int = 4, steps: int = 9,
                          feature_shape: Sequence[int] | None = None,
                          feature_names: Sequence[str] | None = None,
                          dims: Sequence[int] | None = None) -> Figure:
    """Decoded means E[x | z] as one latent dimension moves and the others stay at the median
    code: for each of the ``num_dims`` most active dimensions (or ``dims``), ``steps`` values
    from its 5th to its 95th percentile over the data's posterior means."""
    chosen, z = most_active_dimensions(model, data, num_dims)
    if dims is not None:
        chosen = list(dims)
    base = np.median(z, 0)
    grids = []
    for u in chosen:
        values = np.linspace(np.quantile(z[:, u], 0.05), np.quantile(z[:, u], 0.95), steps)
        codes = np.repeat(base[None], steps, 0)
        codes[:, u] = values
        grids.append((u, values, _numpy(model.decode(_to_model(model, torch.from_numpy(codes))))))
    if is_image_shape(feature_shape):
        decoded = np.concatenate([g[2] for g in grids])
        fig = Figure(figsize=(0.8 * steps + 0.8, 0.8 * len(grids) + 0.7), layout="constrained")
        ax = fig.subplots()
        _show_grid(ax, _as_images(decoded, feature_shape), steps, _value_range(decoded))
        h = feature_shape[1] + 1
        ax.set_yticks([h * i + h / 2 - 1 for i in range(len(grids))],
                      [f"z{u + 1}" for u, _, _ in grids])
        ax.set_title("latent traversal: rows vary one dimension (5th to 95th percentile)")
        return fig
    names = _feature_names(grids[0][2].shape[1], feature_names)
    fig = Figure(figsize=(3.2 * len(grids) + 1, 0.28 * len(names) + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(grids), squeeze=False)).ravel()
    limit = max(float(np.abs(g[2]).max()) for g in grids)
    image = None
    for ax, (u, values, decoded) in zip(axes, grids, strict=True):
        image = ax.imshow(decoded.T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks([0, steps - 1], [f"{values[0]:.2g}", f"{values[-1]:.2g}"])
        ax.set_xlabel(f"z{u + 1}")
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [], fontsize=7)
    fig.colorbar(image, ax=list(axes), label="E[x | z]")
    fig.suptitle("latent traversal: decoded features as one dimension varies")
    return fig


def plot_interpolation(model, x_start: torch.Tensor, x_end: torch.Tensor, steps: int = 10,
                       feature_shape: Sequence[int] | None = None,
                       feature_names: Sequence[str] | None = None) -> Figure:
    """Decoded means along the straight line between the posterior means of two datapoints
    (or two batches of them, one row each): z_t = (1 - t) E_q[z|a] + t E_q[z|b]."""
    a = _to_model(model, x_start).reshape(-1, x_start.shape[-1])
    b = _to_model(model, x_end).reshape(-1, x_end.shape[-1])
    za, zb = model.encode(a), model.encode(b)
    t = torch.linspace(0, 1, steps, device=za.device, dtype=za.dtype)[None, :, None]
    path = (1 - t) * za[:, None] + t * zb[:, None]                  # (pairs, steps, z)
    decoded = _numpy(model.decode(path))
    if is_image_shape(feature_shape):
        ends_a, ends_b = _numpy(a), _numpy(b)
        rows = [np.concatenate([ends_a[i:i + 1], decoded[i], ends_b[i:i + 1]])
                for i in range(len(decoded))]
        stacked = np.concatenate(rows)
        fig = Figure(figsize=(0.8 * (steps + 2) + 0.4, 0.8 * len(rows) + 0.7),
                     layout="constrained")
        ax = fig.subplots()
        _show_grid(ax, _as_images(stacked, feature_shape), steps + 2, _value_range(stacked))
        ax.set_title("interpolation: original, decoded path between codes, original")
        return fig
    names = _feature_names(decoded.shape[-1], feature_names)
    fig = Figure(figsize=(7, 0.28 * len(names) + 1.6), layout="constrained")
    ax = fig.subplots()
    limit = float(np.abs(decoded[0]).max())
    image = ax.imshow(decoded[0].T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xticks([0, steps - 1], ["start", "end"])
    ax.set_xlabel("t along the latent path")
    fig.colorbar(image, ax=ax, label="E[x | z_t]")
    ax.set_title("interpolation between two encoded datapoints")
    return fig


def standard_figures(model, dataset, history=None, split: str = "test", seed: int = 0
                     ) -> dict[str, Figure]:
    """The figures a run writes, by file stem: training curves (with ``history``), samples
    (image grid or pair plot), reconstructions, latent space, traversal and interpolation."""
    x = dataset.tensor(split)
    labels = dataset.labels(split)
    shape = dataset.feature_shape if dataset.kind == "image" else None
    names = dataset.info.get("feature_names")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x), generator=generator)
    figures: dict[str, Figure] = {}
    if history is not None and _records(history):
        figures["training_curves"] = plot_training_curves(history)
    if shape is not None:
        figures["samples"] = plot_samples(model, 64, shape, seed=seed)
    else:
        figures["samples"] = plot_sample_pairs(model, x, feature_names=names, seed=seed,
                                               features=dataset.info.get("pair_features"))
    figures["reconstructions"] = plot_reconstructions(
        model, x[pick[:20 if shape is not None else 1000]], shape, names)
    figures["latent_space"] = plot_latent_space(
        model, x, labels, dataset.info.get("label_names"))
    figures["latent_traversal"] = plot_latent_traversal(model, x, 4, 9, shape, names)
    ends = pick[:2] if shape is None else pick[:8]
    half = len(ends) // 2
    figures["interpolation"] = plot_interpolation(model, x[ends[:half]], x[ends[half:]], 10,
                                                  shape, names)
    return figures


def save_figures(figures: Mapping[str, Figure], directory, dpi: int = 100) -> list[Path]:
    """Save each figure as ``directory/<name>.png`` (atomically); returns the paths."""
    directory = Path(directory)
    return [atomic_write(directory / f"{name}.png",
                         lambda handle, fig=fig: fig.savefig(handle, format="png", dpi=dpi))
            for name, fig in figures.items()]
