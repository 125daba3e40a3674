"""Runs: configurations (:mod:`.config`), the model builders that turn one into a dataset and
a model (:mod:`.builders`), and run directories with the job behind ``pyro-vae train``
(:mod:`.directory`). Imports go one way: errors <- builders <- config <- directory."""

from pyro_vae.runs.builders import (
    DEFAULT_BINARIZATION,
    DISCRETE_ESTIMATORS,
    DISCRETE_MODELS,
    MODEL_BUILDERS,
    build_categorical,
    build_gmvae,
    build_m2,
    build_model,
    build_vae,
    dataset_arguments,
    evaluation_labels,
    load_data,
    register_model_builder,
    resolve_likelihood,
    semi_supervised_labels,
    training_data,
    training_estimator,
)
from pyro_vae.runs.config import (
    OPTIONS,
    Option,
    add_option,
    check_option,
    defaults,
    parse_int_list,
    parse_key_values,
    read_config_file,
    resolve_config,
    to_toml,
)
from pyro_vae.runs.directory import (
    CONFIG_FILE,
    FIGURES_DIR,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RESUME_OVERRIDABLE,
    RUN_ARTIFACTS,
    ModelFactory,
    Run,
    default_run_dir,
    evaluate_split,
    open_run,
    prepare_run_dir,
    read_history,
    read_metrics,
    train_run,
    update_metrics,
    write_config,
    write_figures,
    write_history,
)
from pyro_vae.runs.errors import ConfigError, RunDirectoryError
from pyro_vae.runs.summary import summary_table

__all__ = [
    # errors
    "ConfigError", "RunDirectoryError",
    # configurations
    "OPTIONS", "Option", "add_option", "check_option", "defaults", "parse_int_list",
    "parse_key_values", "read_config_file", "resolve_config", "to_toml",
    # configuration -> data and model
    "DEFAULT_BINARIZATION", "DISCRETE_ESTIMATORS", "DISCRETE_MODELS", "MODEL_BUILDERS",
    "build_categorical", "build_gmvae", "build_m2", "build_model", "build_vae",
    "dataset_arguments", "evaluation_labels", "load_data", "register_model_builder",
    "resolve_likelihood", "semi_supervised_labels", "training_data", "training_estimator",
    # run directories and the train job
    "CONFIG_FILE", "FIGURES_DIR", "HISTORY_FILE", "METRICS_FILE", "MODEL_FILE",
    "RESUME_OVERRIDABLE", "RUN_ARTIFACTS", "ModelFactory", "Run", "default_run_dir",
    "evaluate_split", "open_run", "prepare_run_dir", "read_history", "read_metrics",
    "summary_table", "train_run", "update_metrics", "write_config", "write_figures",
    "write_history",
]
