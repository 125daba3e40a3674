"""How models are fitted and judged: estimators, training, evaluation.

Works with any object that has Pyro ``model(*batch)`` / ``guide(*batch)`` methods and torch
parameters, not only :class:`pyro_vae.models.VAE`. Nothing here knows about the CLI or files.
"""

from pyro_vae.inference.collapse import FreeBitsELBO
from pyro_vae.inference.estimators import (
    ESTIMATORS,
    EstimatorSpec,
    MinibatchRenyiELBO,
    make_estimator,
    parse_estimator,
    register_estimator,
    valid_specs,
)
from pyro_vae.inference.evaluation import (
    EvaluationResult,
    NotPerDatapointError,
    PointMassGuideError,
    active_units,
    elbo_terms,
    evaluate,
    kl_per_dimension,
    log_density_terms,
    log_likelihood,
    posterior_means,
)
from pyro_vae.inference.training import (
    FitResult,
    NonFiniteLossError,
    fit,
    resolve_device,
    scale_latent_sites,
)

__all__ = [
    "ESTIMATORS", "EstimatorSpec", "MinibatchRenyiELBO", "make_estimator", "parse_estimator",
    "register_estimator", "valid_specs", "FreeBitsELBO",
    "EvaluationResult", "NotPerDatapointError", "PointMassGuideError",
    "active_units", "elbo_terms", "evaluate",
    "kl_per_dimension", "log_density_terms", "log_likelihood", "posterior_means",
    "FitResult", "NonFiniteLossError", "fit", "resolve_device", "scale_latent_sites",
]
