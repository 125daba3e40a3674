"""Names for the built-in components, so each is one argument: ``prior="vamp"``.

Each table maps a name to a constructor taking keyword arguments ``x_dim``, ``z_dim`` (and,
for guides, ``encoder``) plus the component's own options. :func:`register` adds a name,
which then works everywhere a name is accepted (the VAE, the CLI, saved configurations).
Options a constructor does not name are an error (a misspelt option is never ignored); a
registered constructor that takes ``**kwargs`` receives any option unchecked.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from torch import nn

from pyro_vae.models import guides, likelihoods, priors
from pyro_vae.models._validation import unknown_name_error

PRIORS: dict[str, Callable[..., priors.Prior]] = {
    "normal": lambda z_dim, **kw: priors.StandardNormalPrior(z_dim),
    "learned_normal": lambda z_dim, **kw: priors.LearnedNormalPrior(z_dim),
    "laplace": lambda z_dim, scale=1.0, **kw: priors.LaplacePrior(z_dim, scale),
    "student_t": lambda z_dim, df=3.0, **kw: priors.StudentTPrior(z_dim, df),
    "mixture": lambda z_dim, num_components=10, **kw: priors.MixtureOfGaussiansPrior(
        z_dim, num_components),
    "vamp": lambda z_dim, x_dim, num_components=50, unit_interval=True, **kw: priors.VampPrior(
        z_dim, x_dim, num_components, unit_interval),
}

LIKELIHOODS: dict[str, Callable[..., likelihoods.Likelihood]] = {
    "bernoulli": lambda x_dim, grey_levels=False, **kw: likelihoods.BernoulliLikelihood(
        x_dim, grey_levels),
    "continuous_bernoulli": lambda x_dim, **kw: likelihoods.ContinuousBernoulliLikelihood(x_dim),
    "normal": lambda x_dim, sigma=1.0, **kw: likelihoods.NormalLikelihood(x_dim, "fixed", sigma),
    "normal_learned": lambda x_dim, sigma=1.0, **kw: likelihoods.NormalLikelihood(
        x_dim, "shared", sigma),
    "normal_per_feature": lambda x_dim, sigma=1.0, **kw: likelihoods.NormalLikelihood(
        x_dim, "per_feature", sigma),
    "laplace": lambda x_dim, **kw: likelihoods.LaplaceLikelihood(x_dim),
    "student_t": lambda x_dim, **kw: likelihoods.StudentTLikelihood(x_dim),
    "poisson": lambda x_dim, **kw: likelihoods.PoissonLikelihood(x_dim),
    "negative_binomial": lambda x_dim, **kw: likelihoods.NegativeBinomialLikelihood(x_dim),
}

GUIDES: dict[str, Callable[..., guides.Guide]] = {
    "diagonal": lambda encoder, z_dim, **kw: guides.DiagonalNormalGuide(encoder, z_dim),
    "delta": lambda encoder, z_dim, **kw: guides.DeltaGuide(encoder, z_dim),
    "full_rank": lambda encoder, z_dim, **kw: guides.FullRankNormalGuide(encoder, z_dim),
    "flow": lambda encoder, z_dim, num_flows=2, **kw: guides.FlowGuide(encoder, z_dim,
                                                                      num_flows),
}

_TABLES = {"prior": PRIORS, "likelihood": LIKELIHOODS, "guide": GUIDES}
#: the built-in constructors take ``**kw`` only to absorb unused context (x_dim, z_dim)
_BUILT_IN = {(kind, name) for kind, table in _TABLES.items() for name in table}


def register(kind: str, name: str, constructor: Callable[..., nn.Module]) -> None:
    """Make ``name`` a valid ``kind`` ('prior', 'likelihood' or 'guide')."""
    if kind not in _TABLES:
        raise unknown_name_error("component kind", kind, _TABLES)
    _TABLES[kind][name] = constructor


def option_names(kind: str, name: str, context: Mapping) -> set[str] | None:
    """The options the constructor of ``name`` accepts besides the ``context`` keywords, or
    None when it takes ``**kwargs`` (a user's constructor; anything goes)."""
    parameters = inspect.signature(_TABLES[kind][name]).parameters.values()
    if (kind, name) not in _BUILT_IN and any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in context}


def build(kind: str, spec, options: Mapping | None = None, **context) -> nn.Module:
    """Return ``spec`` itself when it is a module, else construct the registered name with
    the ``context`` keywords (x_dim, z_dim, encoder) and the user's ``options``."""
    options = dict(options or {})
    if isinstance(spec, nn.Module):
        if options:
            raise ValueError(f"{kind}_options {sorted(options)} apply to a {kind} given by "
                             f"name, but the {kind} is a {type(spec).__name__} instance; "
                             "configure the instance itself and drop the options.")
        return spec
    table = _TABLES[kind]
    if spec not in table:
        raise unknown_name_error(kind, spec, table)
    accepted = option_names(kind, spec, context)
    if accepted is not None:
        if options and not accepted:
            raise ValueError(f"{kind} {spec!r} takes no options; got {kind}_options "
                             f"{sorted(options)}. Drop them.")
        for name in options:
            if name not in accepted:
                raise unknown_name_error("option", name, accepted, where=f" for {kind} "
                                         f"{spec!r} ({kind}_options)")
    return table[spec](**context, **options)
