"""The discrete-latent models in runs and on the command line.

``pyro-vae train --model gmvae|m2|categorical --discrete enum|score|relaxed --baseline
none|avg|nn --labels N`` builds :class:`~pyro_vae.models.GaussianMixtureVAE`,
:class:`~pyro_vae.models.SemiSupervisedVAE` (M2) or :class:`~pyro_vae.models.CategoricalVAE`
from a configuration (:func:`build_gmvae` and friends, registered as model builders), picks
the estimator (:func:`training_estimator`) and the training data (:func:`training_data`:
for M2 the images with all but ``labels`` of their labels hidden, see
:func:`semi_supervised_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pyro_vae.config import ConfigError
from pyro_vae.data import Dataset
from pyro_vae.inference import MAX_ENUMERATION, enumeration_plan, parse_estimator
from pyro_vae.inference.batching import JoinedSource, as_source, ordered_batches
from pyro_vae.models import CategoricalVAE, GaussianMixtureVAE, SemiSupervisedVAE

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
    from pyro_vae.runs import resolve_likelihood
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
    return JoinedSource(dataset.train, kept)


def evaluation_labels(model, dataset: Dataset, split: str) -> torch.Tensor | None:
    """The labels to score a model's discrete site ``"y"`` against (accuracy), or None."""
    if "y" not in getattr(model, "discrete_sites", ()):
        return None
    return dataset.labels(split)
