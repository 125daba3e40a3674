"""How models are fitted and judged: objectives, fitting, measuring.

* objectives: :mod:`.estimators` (one estimator family per module, named by specs such as
  ``"iwae:k=5"``);
* fitting: :mod:`.fitting` (:func:`fit` and its option objects, the loop, the non-finite
  guard, training state and resume, data parallelism);
* measuring: :mod:`.evaluation` (log p(x), ELBO terms, active units) over
  :mod:`.log_densities` and :mod:`.enumeration`, :mod:`.diagnostics` (gradient SNR, PSIS
  k-hat), :mod:`.metrics` (hole fractions, anomaly scores, class accuracy), and
  :mod:`.comparison` (estimators side by side).

Works with any object that has Pyro ``model(*batch)`` / ``guide(*batch)`` methods and torch
parameters, not only :class:`pyro_vae.models.VAE`. Nothing here knows about the CLI or files.
"""

from pyro_vae.inference.comparison import ComparisonResult, PeakMemory, RunResult, compare
from pyro_vae.inference.devices import resolve_device
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
from pyro_vae.inference.enumeration import (
    MAX_ENUMERATION,
    EnumeratedTerms,
    EnumerationPlan,
    enumerated_terms,
    enumeration_plan,
)
from pyro_vae.inference.estimators import (
    ESTIMATORS,
    EnumELBO,
    EstimatorSpec,
    FreeBitsELBO,
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
from pyro_vae.inference.estimators.score import train_baseline_network
from pyro_vae.inference.evaluation import (
    EvaluationResult,
    active_units,
    elbo_terms,
    evaluate,
    kl_per_dimension,
    log_likelihood,
    posterior_means,
)
from pyro_vae.inference.fitting import (
    Checkpointing,
    DataParallel,
    FitResult,
    KLSchedule,
    Monitoring,
    NonFiniteLossError,
    NonFinitePolicy,
    Optimization,
    ResumeError,
    capture_rng_state,
    find_non_finite_site,
    fit,
    non_finite_entries,
    particle_seed,
    restore_rng_state,
)
from pyro_vae.inference.log_densities import (
    NotPerDatapointError,
    PointMassGuideError,
    log_density_terms,
)
from pyro_vae.inference.metrics import (
    ClusteringResult,
    anomaly_scores,
    clustering_accuracy,
    discrete_posterior,
    hole_fractions,
    label_accuracy,
    roc_auc,
)
from pyro_vae.models.handlers import scale_latent_sites

__all__ = [
    # objectives
    "ESTIMATORS", "EstimatorSpec", "MinibatchRenyiELBO", "SyncFreeTrace_ELBO",
    "SyncFreeTraceMeanField_ELBO", "make_estimator", "parse_estimator",
    "register_estimator", "valid_specs", "FreeBitsELBO",
    "EnumELBO", "ScoreELBO", "RelaxedELBO", "GumbelSoftmax", "relax_discrete_sites",
    "train_baseline_network",
    # fitting
    "fit", "FitResult", "Optimization", "KLSchedule", "Monitoring", "Checkpointing",
    "NonFinitePolicy", "NonFiniteLossError", "ResumeError", "capture_rng_state",
    "find_non_finite_site", "non_finite_entries", "resolve_device", "restore_rng_state",
    "scale_latent_sites", "DataParallel", "particle_seed",
    # measuring
    "EvaluationResult", "NotPerDatapointError", "PointMassGuideError",
    "active_units", "elbo_terms", "evaluate",
    "kl_per_dimension", "log_density_terms", "log_likelihood", "posterior_means",
    "MAX_ENUMERATION", "EnumerationPlan", "EnumeratedTerms", "enumeration_plan",
    "enumerated_terms",
    "gradient_snr", "GradientSNRResult", "GradientStats", "parameter_groups",
    "psis_khat", "KHatResult", "khat_from_log_weights", "importance_log_weights",
    "importance_draws", "ImportanceDraws", "score_gradient_variance",
    "hole_fractions", "anomaly_scores", "roc_auc",
    "discrete_posterior", "label_accuracy", "clustering_accuracy", "ClusteringResult",
    "compare", "ComparisonResult", "RunResult", "PeakMemory",
]
