"""A VAE whose code is several independent categorical variables (Jang, Gu & Poole 2016).

Generative story, per datapoint n, with L latent variables of K classes each:

    y_nl ~ Categorical(1/K, ..., 1/K)   for l = 1..L      (sites "y0", ..., "y{L-1}")
    x_n ~ p(x | decoder([onehot y_n1, ..., onehot y_nL]))  (Bernoulli by default)

Guide: q(y_nl | x_n) = Categorical(softmax(encoder(x_n)[l])), independent given x_n.

Each variable is its own ``OneHotCategorical`` site, so enumeration can sum over all K^L
joint configurations when that is small (the ``enum`` estimator refuses when it is not);
the score-function and relaxed estimators handle any L and K (Jang et al.: L = 20, K = 10).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from pyro_vae.models import registry
from pyro_vae.models._validation import check_positive_int
from pyro_vae.models.class_site import BaselineNetwork, concat_broadcast, split_parameters
from pyro_vae.models.networks import MLP, MLPDecoder
from pyro_vae.models.vae import DataCheckedModel, data_plate


class CategoricalVAE(DataCheckedModel, PyroModule):
    """L independent K-way categorical latents with a uniform prior.

    ``likelihood`` is a registered name or module; ``encoder`` (x -> L*K logits) and
    ``decoder`` (L*K one-hot features -> likelihood parameters) override the MLPs. The
    code (for figures) is the concatenation of the L one-hot vectors, size L*K.
    """

    labels_identified = False

    def __init__(self, x_dim: int, num_latents: int = 20, num_classes: int = 10, *,
                 likelihood="bernoulli", hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", likelihood_options: dict | None = None,
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None,
                 baseline_hidden: Sequence[int] = (64,)):
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.num_latents = check_positive_int(num_latents, "num_latents")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if num_classes < 2:
            raise ValueError(f"a categorical latent needs num_classes >= 2; got {num_classes}")
        hidden = [check_positive_int(h, "hidden layer width") for h in hidden]
        code = num_latents * num_classes
        self.encoder = encoder or MLP(x_dim, hidden, code, activation)
        self.decoder = decoder or MLPDecoder(code, x_dim, hidden, activation)
        self.likelihood = registry.build("likelihood", likelihood, likelihood_options,
                                         x_dim=x_dim)
        self.discrete_sites = tuple(f"y{i}" for i in range(num_latents))
        self.baseline_network = BaselineNetwork(x_dim, self.discrete_sites, baseline_hidden)
        named = isinstance(likelihood, str) and encoder is None and decoder is None
        self.config = None if not named else {
            "class": "CategoricalVAE", "x_dim": x_dim, "num_latents": num_latents,
            "num_classes": num_classes, "likelihood": likelihood, "hidden": list(hidden),
            "activation": activation, "likelihood_options": dict(likelihood_options or {}),
            "baseline_hidden": list(baseline_hidden)}

    @property
    def code_size(self) -> int:
        return self.num_latents * self.num_classes

    def guide_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y_l | x), shape (..., L, K)."""
        return self.encoder(x).unflatten(-1, (self.num_latents, self.num_classes))

    # ---- the Pyro model and guide ---------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            prior = dist.OneHotCategorical(logits=x.new_zeros(self.num_classes))
            ys = [pyro.sample(name, prior) for name in self.discrete_sites]
            self.likelihood(self.decoder(concat_broadcast(*ys)), x)

    @pyro_method
    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            logits = self.guide_logits(x)
            for index, name in enumerate(self.discrete_sites):
                pyro.sample(name, dist.OneHotCategorical(logits=logits[..., index, :]))

    # ---- checks, groups and conveniences --------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``encoder`` (q(y|x)) and ``decoder`` (p(x|y)); not the baseline network."""
        return split_parameters(self, {"encoder": [self.encoder]},
                                exclude=[self.baseline_network])

    @torch.no_grad()
    def y_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """q(y_l | x) for every row and variable, shape (N, L, K)."""
        return torch.softmax(self.guide_logits(x), -1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[code | x]: the L probability vectors concatenated, shape (N, L*K)."""
        return self.y_posterior(x).flatten(-2)

    @torch.no_grad()
    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """E[x | code] for codes of shape (..., L*K) (one-hot, or soft for display)."""
        return self.likelihood.mean(self.decoder(code))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | y = argmax q(y | x)] (the most probable code)."""
        hot = torch.nn.functional.one_hot(self.guide_logits(x).argmax(-1), self.num_classes)
        return self.decode(hot.to(x.dtype).flatten(-2))

    @torch.no_grad()
    def sample_latent(self, n: int) -> torch.Tensor:
        """n codes drawn from the uniform prior, shape (n, L*K)."""
        reference = self._reference()
        draws = torch.randint(self.num_classes, (check_positive_int(n, "n"), self.num_latents),
                              device=reference.device)
        return torch.nn.functional.one_hot(draws, self.num_classes).to(reference.dtype
                                                                        ).flatten(-2)

    @torch.no_grad()
    def sample_observations(self, code: torch.Tensor) -> torch.Tensor:
        return self.likelihood.distribution(self.decoder(code)).sample()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """E[x | y] for n codes y ~ p(y), shape (n, x_dim)."""
        return self.decode(self.sample_latent(n))
