"""pyro-vae: variational autoencoders as Bayesian models in Pyro.

The public API in one place::

    import pyro_vae as pv
    data = pv.load_dataset("digits", binarize=True)
    model = pv.VAE(data.x_dim, z_dim=8, prior="normal", likelihood="bernoulli")
    pv.fit(model, data.train, estimator="iwae:k=5", epochs=30)
    print(pv.evaluate(model, data.test, num_samples=1000).summary())
"""

from pyro_vae import _moved, distributed, inference, models
from pyro_vae._version import __version__
from pyro_vae.arviz_export import save_inference_data, to_inference_data
from pyro_vae.checkpoints import CheckpointFiles, load_checkpoint, save_checkpoint
from pyro_vae.data import Dataset, DatasetError, MissingDataError, load_dataset
from pyro_vae.inference import (
    ComparisonResult,
    EvaluationResult,
    FitResult,
    FreeBitsELBO,
    NonFiniteLossError,
    ResumeError,
    active_units,
    clustering_accuracy,
    compare,
    discrete_posterior,
    elbo_terms,
    evaluate,
    fit,
    gradient_snr,
    kl_per_dimension,
    log_likelihood,
    make_estimator,
    posterior_means,
    psis_khat,
    score_gradient_variance,
    train_baseline_network,
)
from pyro_vae.inference.fitting import (
    Checkpointing,
    KLSchedule,
    Monitoring,
    NonFinitePolicy,
    Optimization,
)
from pyro_vae.inference.metrics.anomaly import anomaly_scores, roc_auc
from pyro_vae.inference.metrics.holes import hole_fractions
from pyro_vae.io import CheckpointError, load_model, save_model
from pyro_vae.models import (
    GUIDES,
    LIKELIHOODS,
    PRIORS,
    VAE,
    BayesianDecoderVAE,
    CategoricalVAE,
    ConditionalVAE,
    DataSupportError,
    GaussianMixtureVAE,
    HierarchicalVAE,
    SemiSupervisedVAE,
    autoencoder,
)
from pyro_vae.plots.classes import plot_class_samples
from pyro_vae.runs import Run, build_model, load_data, open_run, train_run
from pyro_vae.runs.builders import semi_supervised_labels
from pyro_vae.runs.config import ConfigError, resolve_config
from pyro_vae.studies.anomaly import AnomalyResult, run_anomaly_study
from pyro_vae.studies.collapse import CollapseResult, run_collapse_study
from pyro_vae.studies.comparison import run_comparison, save_comparison
from pyro_vae.studies.holes import HolesStudyResult, kl_check_table, run_holes_study

_moved.install()   # the 0.1 module paths keep importing for one release, with a warning

__all__ = [
    "__version__",
    "models", "inference", "Dataset", "load_dataset", "VAE", "PRIORS", "LIKELIHOODS", "GUIDES",
    "DataSupportError", "fit", "evaluate", "log_likelihood", "elbo_terms", "active_units",
    "kl_per_dimension", "posterior_means", "make_estimator", "FitResult", "EvaluationResult",
    "NonFiniteLossError", "ResumeError", "save_model", "load_model", "CheckpointError",
    "save_checkpoint", "load_checkpoint", "CheckpointFiles", "Checkpointing", "KLSchedule",
    "Monitoring", "NonFinitePolicy", "Optimization",
    "compare", "ComparisonResult", "run_comparison", "save_comparison", "gradient_snr",
    "psis_khat", "to_inference_data", "save_inference_data", "distributed",
    "DatasetError", "MissingDataError", "ConfigError", "resolve_config", "Run", "train_run",
    "open_run", "load_data", "build_model",
    # holes, posterior collapse, conditional VAE, anomaly scores
    "autoencoder", "ConditionalVAE", "HierarchicalVAE", "BayesianDecoderVAE", "FreeBitsELBO",
    "hole_fractions",
    "run_holes_study",
    "HolesStudyResult", "kl_check_table", "run_collapse_study", "CollapseResult",
    "plot_class_samples", "anomaly_scores", "roc_auc", "run_anomaly_study", "AnomalyResult",
    # discrete latents
    "GaussianMixtureVAE", "SemiSupervisedVAE", "CategoricalVAE", "discrete_posterior",
    "clustering_accuracy", "semi_supervised_labels", "score_gradient_variance",
    "train_baseline_network",
]


def __getattr__(name: str):
    """``pyro_vae.reports`` and the other 0.1 submodules, as attributes (with a warning)."""
    if f"pyro_vae.{name}" in _moved.MOVED:
        import importlib
        return importlib.import_module(f"pyro_vae.{name}")
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
