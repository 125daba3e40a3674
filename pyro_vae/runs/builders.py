"""From a configuration to the dataset and the model: the model builders.

``config["model"]`` names a builder in :data:`MODEL_BUILDERS` (``vae``, and the
discrete-latent ``gmvae``, ``m2`` and ``categorical``; :func:`register_model_builder` adds
more). ``pyro-vae train --model gmvae|m2|categorical --discrete enum|score|relaxed --baseline
none|avg|nn --labels N`` builds :class:`~pyro_vae.models.GaussianMixtureVAE`,
:class:`~pyro_vae.models.SemiSupervisedVAE` (M2) or :class:`~pyro_vae.models.CategoricalVAE`,
picks the estimator (:func:`training_estimator`) and the training data (:func:`training_data`:
for M2 the images with all but ``labels`` of their labels hidden, see
:func:`semi_supervised_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from pyro_vae.data import Dataset, load_dataset, loader_options
from pyro_vae.inference import (
    MAX_ENUMERATION,
    enumeration_plan,
    parse_estimator,
)
from pyro_vae.inference.batching import (
    JoinedSource,
    LabelledInEveryBatch,
    as_source,
    ordered_batches,
)
from pyro_vae.models import (
    VAE,
    BayesianDecoderVAE,
    CategoricalVAE,
    GaussianMixtureVAE,
    HierarchicalVAE,
    SemiSupervisedVAE,
)
from pyro_vae.runs.errors import ConfigError

#: dataset name -> binarisation used by ``binarize = "auto"``
DEFAULT_BINARIZATION = {"digits": "threshold", "mnist": "dynamic"}

#: the estimators ``--discrete`` accepts (``auto`` picks enum or relaxed)
DISCRETE_ESTIMATORS = ("enum", "score", "relaxed")
#: config["model"] of the discrete-latent models
DISCRETE_MODELS = ("gmvae", "m2", "categorical")


def semi_supervised_labels(labels: torch.Tensor, num_labelled: int, seed: int = 0
                           ) -> torch.Tensor:
    """A copy of ``labels`` with all but ``num_labelled`` of them replaced by -1 (missing).
    The kept labels are balanced over the classes (as Kingma et al.: 10 per class for 100
    labels; the remainder goes to the first classes) and drawn with a generator seeded by
    ``seed``; ``num_labelled >= len(labels)`` keeps every label."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise TypeError("labels must be a 1-D integer tensor (one class per datapoint)")
    if isinstance(num_labelled, bool) or not isinstance(num_labelled, int) or num_labelled < 0:
        raise ValueError(f"num_labelled must be a non-negative integer; got {num_labelled!r}")
    if num_labelled >= len(labels):
        return labels.clone()
    classes = torch.unique(labels)
    if num_labelled and num_labelled < len(classes):
        raise ValueError(f"{num_labelled} labels cannot cover the {len(classes)} classes; keep "
                         f"at least one label per class (labels >= {len(classes)}) or 0")
    generator = torch.Generator().manual_seed(seed)
    out = torch.full_like(labels, -1)
    per_class, extra = divmod(num_labelled, len(classes))
    for position, c in enumerate(classes.tolist()):
        rows = (labels == c).nonzero().flatten()
        wanted = per_class + (position < extra)
        if wanted > len(rows):
            raise ValueError(f"class {c} has only {len(rows)} training points, fewer than the "
                             f"{wanted} labels asked for it; ask for fewer labels")
        keep = rows[torch.randperm(len(rows), generator=generator)[:wanted].to(rows.device)]
        out[keep] = labels[keep]
    return out


# ---- configuration -> model -------------------------------------------------------------------
def _check_common(config: Mapping, name: str) -> None:
    if config["network"] != "mlp":
        raise ConfigError(f"model {name!r} uses MLP networks; got network "
                          f"{config['network']!r}. Use network = 'mlp'.")
    if config["prior"] != "normal":
        raise ConfigError(f"model {name!r} has its own prior over the latents; got prior "
                          f"{config['prior']!r}. Drop --prior (leave it 'normal').")


def _classes(config: Mapping, dataset: Dataset) -> int:
    if config["num_classes"]:
        return config["num_classes"]
    return int(dataset.info.get("num_classes") or 10)


def _likelihood(config: Mapping, dataset: Dataset) -> str:
    return resolve_likelihood(config, dataset)


def _built(builder, name: str, **options):
    try:
        return builder(**options)
    except (ValueError, TypeError) as error:   # the constructor's checks: sizes, names
        raise ConfigError(f"model {name!r}: {error}") from None


def build_gmvae(config: Mapping, dataset: Dataset) -> GaussianMixtureVAE:
    """A :class:`~pyro_vae.models.GaussianMixtureVAE` with ``num_classes`` components."""
    _check_common(config, "gmvae")
    return _built(GaussianMixtureVAE, "gmvae", x_dim=dataset.x_dim,
                  num_components=_classes(config, dataset), z_dim=config["z_dim"],
                  likelihood=_likelihood(config, dataset), guide=config["guide"],
                  hidden=config["hidden"], activation=config["activation"],
                  likelihood_options=config["likelihood_options"],
                  guide_options=config["guide_options"])


def build_m2(config: Mapping, dataset: Dataset) -> SemiSupervisedVAE:
    """A :class:`~pyro_vae.models.SemiSupervisedVAE` (M2) for the dataset's classes."""
    _check_common(config, "m2")
    if dataset.train_labels is None:
        raise ConfigError(f"model 'm2' needs labels, but dataset {dataset.name!r} has none; "
                          "use a labelled dataset (digits, mnist, gw, or a file with a label "
                          "column).")
    classes = _classes(config, dataset)
    largest = int(dataset.train_labels.max()) + 1
    if classes < largest:
        raise ConfigError(f"num_classes = {classes} but the labels go up to {largest - 1}; "
                          f"use num_classes >= {largest} (or 0 for the dataset's number).")
    return _built(SemiSupervisedVAE, "m2", x_dim=dataset.x_dim, num_classes=classes,
                  z_dim=config["z_dim"], likelihood=_likelihood(config, dataset),
                  guide=config["guide"], hidden=config["hidden"],
                  activation=config["activation"], alpha=config["alpha"],
                  num_labelled=max(1, min(config["labels"], len(dataset.train))),
                  aux_weight=config["aux_weight"] or None,
                  labelled_per_batch=config["labelled_batch_size"],
                  balance_labelled=config["balance_labelled"],
                  likelihood_options=config["likelihood_options"],
                  guide_options=config["guide_options"])


def build_categorical(config: Mapping, dataset: Dataset) -> CategoricalVAE:
    """A :class:`~pyro_vae.models.CategoricalVAE`: ``num_latents`` variables of
    ``num_classes`` (0: 10) classes."""
    _check_common(config, "categorical")
    if config["guide"] != "diagonal" or config["guide_options"]:
        raise ConfigError("model 'categorical' has no continuous latent, so no guide family; "
                          "drop --guide and --guide-option.")
    return _built(CategoricalVAE, "categorical", x_dim=dataset.x_dim,
                  num_latents=config["num_latents"], num_classes=config["num_classes"] or 10,
                  likelihood=_likelihood(config, dataset), hidden=config["hidden"],
                  activation=config["activation"],
                  likelihood_options=config["likelihood_options"])


# ---- configuration -> training -----------------------------------------------------------------
def _is_discrete(config: Mapping) -> bool:
    return config["model"] in DISCRETE_MODELS


def training_estimator(config: Mapping, model, dataset: Dataset):
    """The estimator spec a configuration trains with: ``estimator`` for the VAE, and the
    ``discrete`` spec (with ``baseline`` for score) for the discrete-latent models;
    ``discrete = "auto"`` is enum when every discrete site can be enumerated jointly
    (:data:`~pyro_vae.inference.MAX_ENUMERATION` configurations), else relaxed."""
    discrete, baseline = config["discrete"], config["baseline"]
    if not _is_discrete(config):
        if discrete != "auto" or baseline != "none":
            raise ConfigError(f"--discrete and --baseline apply to the discrete-latent models "
                              f"{list(DISCRETE_MODELS)}; model {config['model']!r} is trained "
                              "with --estimator. Drop them or pick a discrete model.")
        return config["estimator"]
    if config["estimator"] != "elbo":
        raise ConfigError(f"model {config['model']!r} is trained with --discrete "
                          f"({list(DISCRETE_ESTIMATORS)}), not --estimator; got estimator "
                          f"{config['estimator']!r}. Use e.g. --discrete score.")
    batch = next(ordered_batches(as_source(training_data(config, dataset)), 2))
    plan = enumeration_plan(model, batch)
    if discrete == "auto":
        discrete = "enum" if plan.enumerate else "relaxed"
    spec = parse_estimator(discrete)
    if spec.name == "enum" and not plan.enumerate:
        raise ConfigError(f"--discrete enum would sum over {plan.configurations} joint "
                          f"configurations of the discrete sites per datapoint (more than "
                          f"{MAX_ENUMERATION}); use --discrete score or relaxed, or fewer and "
                          "smaller latents (--num-latents, --num-classes).")
    if baseline != "none":
        if spec.name != "score":
            raise ConfigError(f"--baseline {baseline} is a baseline of score-function "
                              f"gradients; use it with --discrete score (got {discrete!r}).")
        if "baseline" in _given_options(discrete) and spec.options["baseline"] != baseline:
            raise ConfigError(f"--baseline {baseline} contradicts the spec {discrete!r}; give "
                              "the baseline once.")
        spec = parse_estimator(f"score:baseline={baseline},decay={spec.options['decay']},"
                               f"k={spec.options['k']}")
    return str(spec)


def _given_options(text: str) -> set[str]:
    _, _, rest = text.partition(":")
    return {item.partition("=")[0].strip() for item in rest.split(",") if item.strip()}


def training_data(config: Mapping, dataset: Dataset):
    """What ``fit`` trains on: the training split, and for M2 the split joined with its
    labels, all but ``labels`` of them hidden (-1), chosen with ``data_seed``."""
    if config["model"] != "m2":
        return dataset.train
    try:
        kept = semi_supervised_labels(dataset.train_labels, config["labels"],
                                      config["data_seed"])
    except ValueError as error:
        raise ConfigError(f"--labels {config['labels']}: {error}") from None
    joined = JoinedSource(dataset.train, kept)
    if config["labelled_batch_size"]:
        try:
            return LabelledInEveryBatch(joined, config["labelled_batch_size"])
        except ValueError as error:
            raise ConfigError(f"--labelled-batch-size {config['labelled_batch_size']}: "
                              f"{error}") from None
    return joined


def evaluation_labels(model, dataset: Dataset, split: str) -> torch.Tensor | None:
    """The labels to score a model's discrete site ``"y"`` against (accuracy), or None."""
    if "y" not in getattr(model, "discrete_sites", ()):
        return None
    return dataset.labels(split)


# ---- from configuration to data and model ---------------------------------------------------

def dataset_arguments(config: Mapping) -> tuple[str, dict]:
    """The dataset name and the loader options a configuration asks for."""
    name = config["dataset"]
    options = dict(config["data_options"])
    accepted = loader_options(name)
    if "seed" in accepted:
        options.setdefault("seed", config["data_seed"])
    binarize = config["binarize"]
    if binarize == "auto":
        binarize = DEFAULT_BINARIZATION.get(name, "none")
        if "binarize" in accepted:
            options.setdefault("binarize", binarize)
    elif "binarize" in accepted:
        options["binarize"] = binarize
    elif binarize != "none":
        raise ConfigError(f"dataset {name!r} cannot be binarized (binarize={binarize!r}); use "
                          "binarize = 'auto' or 'none'")
    if config["data_dir"] and "data_dir" in accepted:
        options["data_dir"] = config["data_dir"]
    return name, options


def load_data(config: Mapping) -> Dataset:
    """The dataset of a configuration (name or path, binarisation, split seed, options)."""
    name, options = dataset_arguments(config)
    return load_dataset(name, **options)


def resolve_likelihood(config: Mapping, dataset: Dataset) -> str:
    """The configured likelihood, or the dataset's suggestion for ``"auto"``."""
    return dataset.suggested_likelihood if config["likelihood"] == "auto" else config[
        "likelihood"]


def build_vae(config: Mapping, dataset: Dataset) -> VAE:
    """A :class:`~pyro_vae.VAE` from a configuration and the dataset it will be fitted to.
    The KL weight ``beta`` is applied by training (``fit(beta=...)``), not by the model."""
    image_shape = dataset.feature_shape if config["network"] == "conv" else None
    if config["network"] == "conv" and dataset.kind != "image":
        raise ConfigError(f"network 'conv' needs image data; {dataset.name!r} is "
                          f"{dataset.kind}. Use network = 'mlp'.")
    try:
        return VAE(dataset.x_dim, config["z_dim"], prior=config["prior"],
                   likelihood=resolve_likelihood(config, dataset), guide=config["guide"],
                   network=config["network"], hidden=config["hidden"],
                   activation=config["activation"], image_shape=image_shape,
                   prior_options=config["prior_options"],
                   likelihood_options=config["likelihood_options"],
                   guide_options=config["guide_options"])
    except ValueError as error:  # the constructor's checks: bad names, sizes and options
        raise ConfigError(str(error)) from None


def build_hvae(config: Mapping, dataset: Dataset) -> HierarchicalVAE:
    """A :class:`~pyro_vae.models.HierarchicalVAE` with stochastic layers ``layers`` (z_1
    first), its guide ``hvae_guide`` (bottom_up or top_down); ``hidden`` are the widths before
    z_1, scaled for the layers above."""
    if config["network"] != "mlp":
        raise ConfigError(f"model 'hvae' uses MLP networks; got network {config['network']!r}")
    if config["guide"] != "diagonal" or config["guide_options"]:
        raise ConfigError("model 'hvae' has its own Gaussian guides per layer, chosen with "
                          f"--hvae-guide bottom_up|top_down; got guide {config['guide']!r}. "
                          "Drop --guide.")
    return _built(HierarchicalVAE, "hvae", x_dim=dataset.x_dim, layers=config["layers"],
                  hidden=config["hidden"], activation=config["activation"],
                  guide=config["hvae_guide"], prior=config["prior"],
                  likelihood=_likelihood(config, dataset),
                  prior_options=config["prior_options"],
                  likelihood_options=config["likelihood_options"])


def build_bayesian_decoder(config: Mapping, dataset: Dataset) -> BayesianDecoderVAE:
    """A :class:`~pyro_vae.models.BayesianDecoderVAE`: the VAE's options, with priors
    N(0, ``weight_prior_scale``^2) on the decoder's weights and a mean-field q(W)."""
    if config["network"] != "mlp":
        raise ConfigError("model 'bayesian_decoder' has a Bayesian MLP decoder; got network "
                          f"{config['network']!r}. Use network = 'mlp'.")
    estimator = str(config["estimator"]).partition(":")[0]
    if estimator in ("iwae", "renyi", "freebits"):
        raise ConfigError(f"model 'bayesian_decoder' has global latent sites (its decoder "
                          f"weights), which an importance-weighted bound over a minibatch "
                          f"does not count correctly and free bits do not apply to; got "
                          f"--estimator {config['estimator']}. Use --estimator elbo (any k) "
                          "or meanfield.")
    return _built(BayesianDecoderVAE, "bayesian_decoder", x_dim=dataset.x_dim,
                  z_dim=config["z_dim"], hidden=config["hidden"],
                  activation=config["activation"],
                  weight_prior_scale=config["weight_prior_scale"],
                  learn_weight_prior_scale=config["learn_weight_prior_scale"],
                  weight_init_scale=config["weight_init_scale"], prior=config["prior"],
                  likelihood=_likelihood(config, dataset), guide=config["guide"],
                  prior_options=config["prior_options"],
                  likelihood_options=config["likelihood_options"],
                  guide_options=config["guide_options"])


#: config["model"] -> builder(config, dataset); other model families register here
MODEL_BUILDERS: dict[str, Callable[[Mapping, Dataset], torch.nn.Module]] = {
    "vae": build_vae, "hvae": build_hvae, "bayesian_decoder": build_bayesian_decoder,
    "gmvae": build_gmvae, "m2": build_m2, "categorical": build_categorical}


def register_model_builder(name: str, builder: Callable[[Mapping, Dataset], torch.nn.Module]
                           ) -> None:
    """Make ``model = name`` a valid configuration (and ``--model name`` a valid flag)."""
    MODEL_BUILDERS[name] = builder


def build_model(config: Mapping, dataset: Dataset) -> torch.nn.Module:
    """The (untrained) model a resolved configuration describes, sized for ``dataset``."""
    return MODEL_BUILDERS[config["model"]](config, dataset)
