"""Pictures of a conditional VAE: samples generated per class."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def plot_class_samples(model, num_per_class: int = 8, feature_shape: Sequence[int] | None = None,
                       class_names: Sequence[str] | None = None, data=None):
    """Draw ``num_per_class`` samples E[x | z, c], z ~ p(z | c), for every class c of a
    :class:`~pyro_vae.models.ConditionalVAE`.

    With an image ``feature_shape`` (C, H, W) or (H, W) the figure is a grid, one row per
    class. Otherwise it plots each class's mean generated features, and with ``data`` =
    ``(x, labels)`` the class means of the data dashed beside them.
    """
    import matplotlib.pyplot as plt

    classes = range(model.num_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in classes]
    samples = [model.sample(num_per_class, c).cpu() for c in classes]
    if feature_shape is not None and len(feature_shape) >= 2:
        height, width = feature_shape[-2], feature_shape[-1]
        fig, axes = plt.subplots(model.num_classes, num_per_class, squeeze=False,
                                 figsize=(0.9 * num_per_class, 0.9 * model.num_classes))
        for c, row in zip(classes, axes, strict=True):
            for k, ax in enumerate(row):
                ax.imshow(samples[c][k].reshape(height, width).numpy(), cmap="gray_r", vmin=0,
                          vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            row[0].set_ylabel(names[c], rotation=0, labelpad=12)
        fig.suptitle("samples per class: E[x | z, c], z ~ p(z | c)")
        return fig
    fig, ax = plt.subplots(figsize=(8, 4))
    for c in classes:
        ax.plot(samples[c].mean(0).numpy(), color=f"C{c % 10}", label=f"{names[c]} generated")
        if data is not None:
            x, labels = data
            ax.plot(x[labels == c].mean(0).cpu().numpy(), color=f"C{c % 10}", ls="--",
                    label=f"{names[c]} data")
    ax.set(xlabel="feature", ylabel="mean value",
           title=f"mean of {num_per_class} samples per class")
    ax.legend(fontsize=7, ncol=2)
    return fig
