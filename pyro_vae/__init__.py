"""pyro-vae: variational autoencoders as Bayesian models in Pyro.

The public API in one place::

    import pyro_vae as pv
    data = pv.load_dataset("digits", binarize=True)
    model = pv.VAE(data.x_dim, z_dim=8, prior="normal", likelihood="bernoulli")
    pv.fit(model, data.train, estimator="iwae:k=5", epochs=30)
    print(pv.evaluate(model, data.test, num_samples=1000).summary())
"""

from pyro_vae import inference, models
from pyro_vae.anomaly import AnomalyResult, run_anomaly_study
from pyro_vae.collapse import CollapseResult, run_collapse_study
from pyro_vae.conditional import plot_class_samples
from pyro_vae.data import Dataset, load_dataset
from pyro_vae.holes import HolesStudyResult, kl_check_table, run_holes_study
from pyro_vae.inference import (
    EvaluationResult,
    FitResult,
    FreeBitsELBO,
    NonFiniteLossError,
    active_units,
    elbo_terms,
    evaluate,
    fit,
    kl_per_dimension,
    log_likelihood,
    make_estimator,
    posterior_means,
)
from pyro_vae.inference.anomaly import anomaly_scores, roc_auc
from pyro_vae.inference.holes import hole_fractions
from pyro_vae.io import CheckpointError, load_model, save_model
from pyro_vae.models import (
    GUIDES,
    LIKELIHOODS,
    PRIORS,
    VAE,
    ConditionalVAE,
    DataSupportError,
    autoencoder,
)

__version__ = "0.1.0"

__all__ = [
    "models", "inference", "Dataset", "load_dataset", "VAE", "PRIORS", "LIKELIHOODS", "GUIDES",
    "DataSupportError", "fit", "evaluate", "log_likelihood", "elbo_terms", "active_units",
    "kl_per_dimension", "posterior_means", "make_estimator", "FitResult", "EvaluationResult",
    "NonFiniteLossError", "save_model", "load_model", "CheckpointError",
    # holes, posterior collapse, conditional VAE, anomaly scores
    "autoencoder", "ConditionalVAE", "FreeBitsELBO", "hole_fractions", "run_holes_study",
    "HolesStudyResult", "kl_check_table", "run_collapse_study", "CollapseResult",
    "plot_class_samples", "anomaly_scores", "roc_auc", "run_anomaly_study", "AnomalyResult",
]
