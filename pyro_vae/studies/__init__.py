"""Experiments that fit several models and report on them: filling the holes of the latent
space (:mod:`.holes`), posterior collapse and its remedies (:mod:`.collapse`), anomaly
detection with the ELBO (:mod:`.anomaly`), and estimator comparisons written to a directory
(:mod:`.comparison`). Each calls the inference layer and the figures of :mod:`pyro_vae.plots`."""

from pyro_vae.studies.anomaly import AnomalyResult, run_anomaly_study
from pyro_vae.studies.collapse import CollapseResult, run_collapse_study
from pyro_vae.studies.comparison import run_comparison, save_comparison
from pyro_vae.studies.holes import HolesStudyResult, kl_check_table, run_holes_study

__all__ = ["AnomalyResult", "run_anomaly_study", "CollapseResult", "run_collapse_study",
           "run_comparison", "save_comparison", "HolesStudyResult", "kl_check_table",
           "run_holes_study"]
