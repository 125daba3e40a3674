"""How models are fitted and judged: estimators, training, evaluation, comparison, diagnostics.

Works with any object that has Pyro ``model(*batch)`` / ``guide(*batch)`` methods and torch
parameters, not only :class:`pyro_vae.models.VAE`. Nothing here knows about the CLI or files.
"""

from pyro_vae.inference.comparison import ComparisonResult, PeakMemory, RunResult, compare
from pyro_vae.inference.data_parallel import DataParallel, particle_seed
from pyro_vae.inference.diagnostics import (
    GradientSNRResult,
    GradientStats,
    ImportanceDraws,
    KHatResult,
    gradient_snr,
    importance_draws,
    importance_log_weights,
    khat_from_log_weights,
    parameter_groups,
    psis_khat,
    score_gradient_variance,
)
from pyro_vae.inference.enumeration import EnumeratedTerms, EnumerationPlan, enumeration_plan
from pyro_vae.inference.estimators import (
    ESTIMATORS,
    EnumELBO,
    EstimatorSpec,
    GumbelSoftmax,
    MinibatchRenyiELBO,
    RelaxedELBO,
    ScoreELBO,
    SyncFreeTrace_ELBO,
    SyncFreeTraceMeanField_ELBO,
    make_estimator,
    parse_estimator,
    register_estimator,
    relax_discrete_sites,
    valid_specs,
)
from pyro_vae.inference.estimators.free_bits import FreeBitsELBO
from pyro_vae.inference.estimators.score import train_baseline_network
from pyro_vae.inference.evaluation import (
    MAX_ENUMERATION,
    EvaluationResult,
    PointMassGuideError,
    active_units,
    elbo_terms,
    enumerated_terms,
    evaluate,
    kl_per_dimension,
    log_density_terms,
    log_likelihood,
    posterior_means,
)
from pyro_vae.inference.log_densities import NotPerDatapointError
from pyro_vae.inference.metrics.classes import (
    ClusteringResult,
    clustering_accuracy,
    discrete_posterior,
    label_accuracy,
)
from pyro_vae.inference.training import (
    FitResult,
    NonFiniteLossError,
    ResumeError,
    capture_rng_state,
    find_non_finite_site,
    fit,
    non_finite_entries,
    resolve_device,
    restore_rng_state,
    scale_latent_sites,
)

__all__ = [
    "ESTIMATORS", "EstimatorSpec", "MinibatchRenyiELBO", "SyncFreeTrace_ELBO",
    "SyncFreeTraceMeanField_ELBO", "make_estimator", "parse_estimator",
    "register_estimator", "valid_specs", "FreeBitsELBO",
    "EvaluationResult", "NotPerDatapointError", "PointMassGuideError",
    "active_units", "elbo_terms", "evaluate",
    "kl_per_dimension", "log_density_terms", "log_likelihood", "posterior_means",
    "FitResult", "NonFiniteLossError", "ResumeError", "capture_rng_state",
    "find_non_finite_site", "fit", "non_finite_entries", "resolve_device", "restore_rng_state",
    "scale_latent_sites",
    "compare", "ComparisonResult", "RunResult", "PeakMemory",
    "gradient_snr", "GradientSNRResult", "GradientStats", "parameter_groups",
    "psis_khat", "KHatResult", "khat_from_log_weights", "importance_log_weights",
    "importance_draws", "ImportanceDraws", "DataParallel", "particle_seed",
    # discrete latent sites
    "EnumELBO", "ScoreELBO", "RelaxedELBO", "GumbelSoftmax", "relax_discrete_sites",
    "MAX_ENUMERATION", "EnumerationPlan", "EnumeratedTerms", "enumeration_plan",
    "enumerated_terms", "discrete_posterior", "label_accuracy", "clustering_accuracy",
    "ClusteringResult", "score_gradient_variance", "train_baseline_network",
]
