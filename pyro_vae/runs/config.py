"""Run configurations: one flat table of named options, read from and written to TOML.

Every option has a default, a type, a help line and a check; ``pyro-vae train`` turns each
into a flag (``z_dim`` -> ``--z-dim``) and a config file may set any of them. Precedence:
defaults < config file < flags. :func:`resolve_config` merges and checks them, raising
:class:`ConfigError` (one line: what is wrong, what was given, how to fix it).

TOML has no null, so "unset" is spelled ``""`` (``data_dir``) or ``0`` (``clip_norm``,
``max_seconds``). Add an option with :func:`add_option`; it then appears as a flag, in config
files and in every run's resolved ``config.toml``.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from pyro_vae.runs.builders import DISCRETE_ESTIMATORS, MODEL_BUILDERS
from pyro_vae.runs.errors import ConfigError

KINDS = ("str", "int", "float", "bool", "int_list", "table")


@dataclass(frozen=True)
class Option:
    """One configuration key. ``choices`` returns the valid names (lazily, so registries can
    grow); ``check`` returns an error message for a bad value, or None."""

    name: str
    default: object
    help: str
    kind: str
    choices: Callable[[], Iterable[str]] | None = None
    check: Callable[[object], str | None] | None = None
    group: str = "options"
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: dict[str, Option] = {}


def add_option(name: str, default, help: str, *, kind: str | None = None, choices=None,
               check=None, group: str = "options", metavar: str | None = None) -> Option:
    """Register a configuration option (and so a ``pyro-vae train`` flag)."""
    kind = kind or {bool: "bool", int: "int", float: "float", str: "str", dict: "table",
                    list: "int_list"}[type(default)]
    if kind not in KINDS:
        raise ValueError(f"unknown option kind {kind!r}; expected one of {KINDS}")
    OPTIONS[name] = Option(name, default, help, kind, choices, check, group, metavar)
    return OPTIONS[name]


def defaults() -> dict:
    """Every option at its default value (fresh copies of lists and tables)."""
    return {name: json.loads(json.dumps(o.default)) for name, o in OPTIONS.items()}


# ---- checks ---------------------------------------------------------------------------------

def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _finite(value) -> str | None:
    return None if math.isfinite(value) else "must be finite"


def _both(*checks):
    def check(value):
        return next((m for m in (c(value) for c in checks) if m), None)
    return check


# ---- the options ----------------------------------------------------------------------------

def _dataset_names():
    from pyro_vae.data import LOADERS
    return list(LOADERS)


def _check_dataset(value) -> str | None:
    from pyro_vae.data import LOADERS, is_array_path
    if value in LOADERS or is_array_path(value):
        return None
    close = difflib.get_close_matches(value, LOADERS, n=1)
    return (f"must be one of {sorted(LOADERS)} or a path ending in .npy, .npz or .csv"
            + (f". Did you mean {close[0]!r}?" if close else ""))


def _check_binarize(value) -> str | None:
    from pyro_vae.data import BINARIZATIONS
    valid = ("auto",) + BINARIZATIONS
    return None if value in valid else f"must be one of {list(valid)}"


def _registry(kind: str):
    def names():
        from pyro_vae.models import registry
        return list(getattr(registry, kind))
    return names


def _likelihood_names():
    return ["auto"] + _registry("LIKELIHOODS")()


def _network_names():
    from pyro_vae.models.vae import NETWORKS
    return list(NETWORKS)


def _activation_names():
    from pyro_vae.models.networks import ACTIVATIONS
    return list(ACTIVATIONS)


def _model_names():
    return list(MODEL_BUILDERS)


def _optimizer_names():
    from pyro_vae.inference.fitting.options import OPTIMIZERS
    return list(OPTIMIZERS)


def _check_estimator(value) -> str | None:
    from pyro_vae.inference import parse_estimator
    try:
        parse_estimator(value)
    except ValueError as error:
        return str(error)
    return None


def _check_discrete(value) -> str | None:
    if value == "auto":
        return None
    from pyro_vae.inference import parse_estimator
    try:
        name = parse_estimator(value).name
    except ValueError as error:
        return str(error)
    if name not in DISCRETE_ESTIMATORS:
        return f"must be auto or one of {list(DISCRETE_ESTIMATORS)} (optionally with options)"
    return None


def _check_device(value) -> str | None:
    from pyro_vae.inference import resolve_device
    try:
        resolve_device(value)
    except (ValueError, RuntimeError) as error:
        return str(error)
    return None


def _check_hidden(value) -> str | None:
    if not value or any(h <= 0 for h in value):
        return "must be one or more positive layer widths, e.g. 256 or 512,256"
    return None


add_option("dataset", "digits", "dataset name (digits, mnist, gw) or a .npy/.npz/.csv path",
           check=_check_dataset, group="data", metavar="NAME|PATH")
add_option("data_dir", "", "directory holding local data files (mnist); default: "
           "$PYRO_VAE_DATA", group="data", metavar="DIR")
add_option("binarize", "auto", "none, threshold, static or dynamic; auto: threshold for "
           "digits, dynamic for mnist, none otherwise", check=_check_binarize, group="data")
add_option("data_seed", 0, "seed of the train/validation/test split and of fixed "
           "binarisations (independent of --seed)", group="data")
add_option("data_options", {}, "further options of the dataset's loader", group="data")
add_option("model", "vae", "model family", choices=_model_names, group="model")
add_option("z_dim", 8, "number of latent dimensions", check=positive, group="model")
add_option("prior", "normal", "prior p(z)", choices=_registry("PRIORS"), group="model")
add_option("prior_options", {}, "options of the prior, e.g. num_components=20", group="model")
add_option("likelihood", "auto", "likelihood p(x|z); auto: the dataset's suggestion",
           choices=_likelihood_names, group="model")
add_option("likelihood_options", {}, "options of the likelihood, e.g. sigma=0.5",
           group="model")
add_option("guide", "diagonal", "guide family q(z|x)", choices=_registry("GUIDES"),
           group="model")
add_option("guide_options", {}, "options of the guide, e.g. num_flows=4", group="model")
add_option("network", "mlp", "encoder/decoder networks", choices=_network_names, group="model")
add_option("num_classes", 0, "values of y: gmvae components, m2 classes (0: the dataset's "
           "number of classes, else 10), categorical classes per latent (0: 10)",
           check=non_negative, group="model")
add_option("layers", [100, 50], "hvae: sizes of the stochastic layers z_1, ..., z_L (z_1 nearest "
           "the data), e.g. 100,50", kind="int_list", check=_check_hidden, group="model")
add_option("hvae_guide", "bottom_up", "hvae: bottom_up (q(z_1|x) q(z_2|z_1) ...) or top_down "
           "(the ladder VAE's guide, sharing the generative path)",
           choices=lambda: ("bottom_up", "top_down"), group="model")
add_option("weight_prior_scale", 1.0, "bayesian_decoder: prior sd s of every decoder weight "
           "and bias, N(0, s^2)", check=_both(positive, _finite), group="model")
add_option("learn_weight_prior_scale", False, "bayesian_decoder: learn s per layer (type-II "
           "maximum likelihood) instead of fixing it", group="model")
add_option("weight_init_scale", 1e-3, "bayesian_decoder: initial sd of q(W) around PyTorch's "
           "usual initial weights", check=_both(positive, _finite), group="model")
add_option("num_latents", 20, "categorical: number of categorical latent variables",
           check=positive, group="model")
add_option("labels", 100, "m2: labelled training points (balanced over classes; the others "
           "unlabelled)", check=non_negative, group="model")
add_option("alpha", 0.1, "m2: weight of the auxiliary classification term, Kingma et al.'s "
           "alpha as a multiple of N: each labelled point's log q(y|x) weighs alpha N / labels",
           check=_both(non_negative, _finite), group="model")
add_option("aux_weight", 0.0, "m2: the weight of each labelled point's log q(y|x) directly "
           "(Pyro's ss_vae_M2 --aux-loss-multiplier, 46 there); 0: from --alpha",
           check=_both(non_negative, _finite), group="model")
add_option("labelled_batch_size", 0, "m2: labelled rows added to every batch (drawn at random "
           "each step; the epoch runs over the unlabelled rows, each part scaled to its own "
           "count, the objective unchanged); 0: the labelled points mixed into the batches",
           check=non_negative, group="model")
add_option("balance_labelled", False, "m2 with --labelled-batch-size: weigh the labelled rows "
           "like the unlabelled ones (n_u / n_l times Kingma et al.'s weight), as "
           "implementations averaging a labelled and an unlabelled batch per step do",
           group="model")
add_option("hidden", [256], "hidden layer widths, e.g. 512,256", kind="int_list",
           check=_check_hidden, group="model")
add_option("activation", "relu", "activation function", choices=_activation_names,
           group="model")
add_option("estimator", "elbo", "gradient estimator: elbo, elbo:k=K, meanfield, iwae:k=K, "
           "renyi:alpha=A,k=K", check=_check_estimator, group="training", metavar="SPEC")
add_option("discrete", "auto", "discrete latents (gmvae, m2, categorical): enum, score, "
           "relaxed or a full spec (relaxed:tmin=0.3); auto: enum where the discrete sites can "
           "be enumerated, else relaxed", check=_check_discrete, group="training",
           metavar="SPEC")
add_option("baseline", "none", "score-function baseline of --discrete score",
           choices=lambda: ("none", "avg", "nn"), group="training")
add_option("epochs", 150, "passes over the training data", check=positive, group="training")
add_option("batch_size", 64, "datapoints per step", check=positive, group="training")
add_option("lr", 3e-3, "learning rate", check=_both(positive, _finite), group="training")
add_option("optimizer", "adam", "torch optimizer", choices=_optimizer_names, group="training")
add_option("beta", 1.0, "KL weight of the training objective (reported numbers are "
           "beta-free)", check=_both(non_negative, _finite), group="training")
add_option("beta_warmup_epochs", 0.0, "epochs of linear KL warm-up from 0 to beta",
           check=_both(non_negative, _finite), group="training")
add_option("clip_norm", 0.0, "gradient-norm clipping (0: off)", check=non_negative,
           group="training")
add_option("max_seconds", 0.0, "wall-clock training budget in seconds (0: none)",
           check=non_negative, group="training")
add_option("device", "auto", "cpu, cuda, cuda:N, or auto (cuda when available)",
           check=_check_device, group="training", metavar="DEVICE")
add_option("threads", 0, "CPU threads torch may use (0: torch's default, one per core); on "
           "a CPU shared with other work 1 is faster", check=non_negative, group="training")
add_option("seed", 0, "seed of initialisation, batches and evaluation", group="training")
add_option("checkpoint_every", 10, "epochs between checkpoints (RUN/checkpoint.pt; one is "
           "also written at the end); pyro-vae train --resume RUN continues from it",
           check=positive, group="training")
add_option("eval_samples", 0, "importance samples K per test point for log p(x); 0: "
           "automatic, 5000 unless the test set and networks make that more than a few seconds "
           "(then fewer, at least 10; the summary states K)", check=non_negative,
           group="evaluation")
add_option("figures", True, "write the figures", group="evaluation")


# ---- values ---------------------------------------------------------------------------------

def parse_scalar(text: str):
    """A command-line string as the TOML value it spells (int, float, bool), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_key_values(items: Iterable[str], what: str) -> dict:
    """``["k=1", "name=x"]`` -> ``{"k": 1, "name": "x"}``; values parsed by parse_scalar."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{what} must be KEY=VALUE; got {item!r}")
        out[key.strip()] = parse_scalar(value.strip())
    return out


def parse_int_list(text: str) -> list[int]:
    """``"512,256"`` or ``"512 256"`` -> ``[512, 256]``."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers such as 512,256; got {text!r}"
                          ) from None


def _coerce(option: Option, value):
    """``value`` converted to the option's kind, or ConfigError."""
    kind = option.kind
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "int_list": isinstance(value, int) and not isinstance(value, bool) or isinstance(
            value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
        "table": isinstance(value, dict),
    }[kind]
    if not ok:
        expected = {"str": "a string", "bool": "true or false", "int": "an integer",
                    "float": "a number", "int_list": "a list of integers such as [512, 256]",
                    "table": "a table such as {num_components = 20}"}[kind]
        raise ConfigError(f"{option.name} must be {expected}; got {value!r}")
    if kind == "float":
        return float(value)
    if kind == "int_list" and isinstance(value, int):
        return [value]
    return value


def check_option(name: str, value):
    """Return ``value`` coerced to option ``name``'s kind, or raise ConfigError."""
    if name not in OPTIONS:
        close = difflib.get_close_matches(name, OPTIONS, n=1)
        raise ConfigError(f"unknown option {name!r}"
                          + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" Valid options: {', '.join(OPTIONS)}")
    option = OPTIONS[name]
    value = _coerce(option, value)
    if option.choices is not None:
        valid = list(option.choices())
        if value not in valid:
            close = difflib.get_close_matches(str(value), valid, n=1)
            raise ConfigError(f"unknown {name} {value!r}; expected one of {sorted(valid)}"
                              + (f". Did you mean {close[0]!r}?" if close else ""))
    if option.check is not None:
        message = option.check(value)
        if message:
            raise ConfigError(f"bad {name} {value!r}: {message}")
    return value


def resolve_config(file_values: Mapping | None = None, overrides: Mapping | None = None
                   ) -> dict:
    """Defaults, updated by a config file's values, updated by explicit overrides (None
    values in ``overrides`` mean "not given"); every value checked."""
    config = defaults()
    for source in (file_values or {}), {k: v for k, v in (overrides or {}).items()
                                        if v is not None}:
        for name, value in source.items():
            config[name] = check_option(name, value)
    return config


# ---- TOML -----------------------------------------------------------------------------------

def read_config_file(path: str | Path) -> dict:
    """The key/value pairs of a TOML config file (flat; see ``OPTIONS``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot parse config file {str(path)!r}: {error}") from None


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)   # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else json.dumps(key)


def to_toml(config: Mapping, header: str = "") -> str:
    """A flat mapping as TOML (inline tables for mapping values), options grouped."""
    lines = [f"# {line}" for line in header.splitlines()]
    group = None
    for key, value in config.items():
        option_group = OPTIONS[key].group if key in OPTIONS else "other"
        if option_group != group:
            lines += ["", f"# {option_group}"] if lines else [f"# {option_group}"]
            group = option_group
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
