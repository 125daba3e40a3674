"""Every figure, each one function returning a matplotlib Figure: a fitted model's pictures
(:mod:`.figures`), comparisons and diagnostics (:mod:`.comparison`), class-conditional samples
(:mod:`.classes`), posterior predictive checks (:mod:`.ppc`), and the studies' figures
(:mod:`.holes`, :mod:`.studies`)."""

from pyro_vae.plots.classes import plot_class_samples
from pyro_vae.plots.comparison import (
    curve_metric,
    plot_gradient_snr,
    plot_khat,
    plot_khat_by_estimator,
    plot_khat_results,
    plot_learning_curves,
)
from pyro_vae.plots.figures import (
    is_image_shape,
    most_active_dimensions,
    plot_interpolation,
    plot_latent_space,
    plot_latent_traversal,
    plot_reconstructions,
    plot_sample_pairs,
    plot_samples,
    plot_training_curves,
    save_figures,
    standard_figures,
)
from pyro_vae.plots.holes import holes_figure
from pyro_vae.plots.ppc import (
    PPCStatistics,
    mean_feature_variance,
    plot_ppc,
    ppc_markdown,
    ppc_statistics,
)
from pyro_vae.plots.studies import anomaly_figure, collapse_figure

__all__ = [
    "plot_training_curves", "plot_samples", "plot_sample_pairs", "plot_reconstructions",
    "plot_latent_space", "plot_latent_traversal", "plot_interpolation", "most_active_dimensions",
    "is_image_shape", "standard_figures", "save_figures", "plot_class_samples",
    "curve_metric", "plot_learning_curves", "plot_khat", "plot_khat_by_estimator",
    "plot_gradient_snr", "plot_khat_results", "holes_figure", "collapse_figure",
    "anomaly_figure", "plot_ppc", "ppc_statistics", "PPCStatistics", "mean_feature_variance",
    "ppc_markdown",
]
