"""The Gaussian-mixture VAE: a discrete cluster y above the continuous code z.

Generative story, per datapoint n (C components):

    y_n ~ Categorical(pi)                        (pi = softmax of learned logits)
    z_n | y_n ~ N(mu_{y_n}, diag(sigma_{y_n}^2))  (learned per component)
    x_n | z_n ~ p(x | decoder(z_n))               (any registered likelihood)

Guide: q(y_n | x_n) = Categorical(softmax(classifier(x_n))), then
z_n ~ q(z | x_n, y_n), a guide family on an encoder of [x_n, onehot(y_n)].

y is a one-hot ``OneHotCategorical`` site (see :mod:`pyro_vae.models.class_site`), so the
same model is fitted by enumeration, score-function gradients or a relaxation; the
estimator decides (``fit(model, x, estimator="enum" | "score" | "relaxed")``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method
from torch import nn

from pyro_vae.models import registry
from pyro_vae.models._validation import check_positive_int
from pyro_vae.models.class_site import (
    BaselineNetwork,
    ClassSiteModel,
    concat_broadcast,
    one_hot_table,
)
from pyro_vae.models.networks import MLP, MLPDecoder, MLPEncoder
from pyro_vae.models.vae import DataCheckedModel, data_plate

_SOFTPLUS_ONE = math.log(math.e - 1.0)   # softplus(_SOFTPLUS_ONE) == 1


class GaussianMixtureVAE(ClassSiteModel, DataCheckedModel, PyroModule):
    """p(y) p(z | y) p(x | z) with a learned Gaussian component per cluster y.

    ``num_components`` clusters; ``learn_weights=False`` keeps pi uniform. Component means
    start at N(0, ``component_spread^2`` I) draws, scales at 1; the default spread
    2 / sqrt(z_dim) keeps the typical distance between two starting means (2 sqrt 2) the
    same in any dimension (components much farther apart than their scales let the first
    one the encoder reaches take every point). ``likelihood`` and ``guide``
    (q(z | x, y)) are registered names or modules; ``encoder`` (of [x, onehot y]),
    ``decoder`` and ``classifier`` (x -> C logits) override the MLPs.
    """

    #: the cluster indices carry no meaning of their own: compare them to labels only
    #: after the best one-to-one matching (clustering accuracy)
    labels_identified = False
    discrete_sites = ("y",)

    def __init__(self, x_dim: int, num_components: int = 10, z_dim: int = 2, *,
                 likelihood="bernoulli", guide="diagonal", hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", learn_weights: bool = True,
                 component_spread: float | None = None, likelihood_options: dict | None = None,
                 guide_options: dict | None = None, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, classifier: nn.Module | None = None,
                 baseline_hidden: Sequence[int] = (64,)):
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.num_components = check_positive_int(num_components, "num_components")
        if component_spread is None:
            component_spread = 2.0 / math.sqrt(z_dim)
        if not component_spread >= 0:
            raise ValueError(f"component_spread must be >= 0; got {component_spread!r}")
        hidden = [check_positive_int(h, "hidden layer width") for h in hidden]
        custom = any(m is not None for m in (encoder, decoder, classifier))
        self.classifier = classifier or MLP(x_dim, hidden, num_components, activation)
        encoder = encoder or MLPEncoder(x_dim + num_components, hidden, activation)
        self.decoder = decoder or MLPDecoder(z_dim, x_dim, hidden, activation)
        self.guide_family = registry.build("guide", guide, guide_options, encoder=encoder,
                                           z_dim=z_dim)
        self.likelihood = registry.build("likelihood", likelihood, likelihood_options,
                                         x_dim=x_dim)
        logits = torch.zeros(num_components)
        if learn_weights:
            self.mixture_logits = nn.Parameter(logits)
        else:
            self.register_buffer("mixture_logits", logits)
        self.component_locs = nn.Parameter(component_spread * torch.randn(num_components, z_dim))
        self.component_raw_scales = nn.Parameter(torch.full((num_components, z_dim),
                                                            _SOFTPLUS_ONE))
        self.baseline_network = BaselineNetwork(x_dim, self.discrete_sites, baseline_hidden)
        named = isinstance(likelihood, str) and isinstance(guide, str)
        self.config = None if not named or custom else {
            "class": "GaussianMixtureVAE", "x_dim": x_dim, "num_components": num_components,
            "z_dim": z_dim, "likelihood": likelihood, "guide": guide, "hidden": list(hidden),
            "activation": activation, "learn_weights": bool(learn_weights),
            "component_spread": float(component_spread),
            "likelihood_options": dict(likelihood_options or {}),
            "guide_options": dict(guide_options or {}),
            "baseline_hidden": list(baseline_hidden)}

    @property
    def num_classes(self) -> int:
        """The number of clusters (as ``num_classes`` for per-class plots)."""
        return self.num_components

    # ---- the generative pieces ------------------------------------------------------------
    def mixture_weights(self) -> torch.Tensor:
        """pi, shape (C,)."""
        return torch.softmax(self.mixture_logits, -1)

    def component_scales(self) -> torch.Tensor:
        """sigma_c = softplus(raw) + 1e-4, shape (C, z_dim)."""
        return F.softplus(self.component_raw_scales) + 1e-4

    def latent_distribution(self, y: torch.Tensor) -> dist.TorchDistribution:
        """p(z | y) for one-hot (or relaxed) y of shape (..., C): N(y @ mu, y @ sigma)."""
        return dist.Normal(y @ self.component_locs, y @ self.component_scales()).to_event(1)

    # ---- the Pyro model and guide ---------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.mixture_logits))
            z = pyro.sample("z", self.latent_distribution(y))
            self.likelihood(self.decoder(z), x)

    @pyro_method
    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(x)))
            self.guide_family(concat_broadcast(x, y))

    # ---- checks, groups and conveniences --------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z | x] = sum_y q(y|x) E_q[z | x, y], shape (N, z_dim)."""
        table = one_hot_table(self.num_components, x).unsqueeze(-2)          # (C, 1, C)
        means = self.guide_family.mean(concat_broadcast(x, table))          # (C, N, z)
        return (self.y_posterior(x).T.unsqueeze(-1) * means).sum(0)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], shape (..., x_dim)."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = E_q[z|x]]."""
        return self.decode(self.encode(x))

    def _components(self, n: int, c) -> torch.Tensor:
        reference = self._reference()
        if c is None:
            return torch.multinomial(self.mixture_weights(), n, replacement=True)
        if isinstance(c, int) and not 0 <= c < self.num_components:
            raise ValueError(f"component c must lie in 0..{self.num_components - 1}; got {c}")
        return torch.as_tensor(c, device=reference.device).long().expand(n)

    @torch.no_grad()
    def sample_latent(self, n: int, c=None) -> torch.Tensor:
        """n draws z ~ p(z) (the mixture), or z ~ p(z | y = c) for a component ``c``."""
        components = self._components(check_positive_int(n, "n"), c)
        y = one_hot_table(self.num_components, self._reference())[components]
        return self.latent_distribution(y).sample()

    @torch.no_grad()
    def sample_observations(self, z: torch.Tensor) -> torch.Tensor:
        """One draw x ~ p(x | z) per code."""
        return self.likelihood.distribution(self.decoder(z)).sample()

    @torch.no_grad()
    def sample(self, n: int, c=None) -> torch.Tensor:
        """E[x | z] for n draws z ~ p(z) (or p(z | y = c)), shape (n, x_dim)."""
        return self.decode(self.sample_latent(n, c))
