"""A VAE with L stochastic layers (Burda et al. 2015's two-layer model; Sønderby et al. 2016's
ladder VAE), as one Pyro model/guide pair with a sample site per layer.

Generative story, per datapoint n (sites ``z1`` ... ``zL`` inside the ``"data"`` plate):

    z_L ~ p(z_L)                         (a registered prior, standard normal by default)
    z_l | z_{l+1} ~ N(mu_l(z_{l+1}), diag sigma_l(z_{l+1})^2),   l = L-1, ..., 1
    x | z_1 ~ p(x | decoder(z_1))        (a registered likelihood)

Guides:

* ``"bottom_up"`` (Burda et al.): q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}), each a
  diagonal Gaussian of an MLP of the layer below's draw;
* ``"top_down"`` (the ladder VAE): a deterministic bottom-up pass d_1 = f_1(x),
  d_l = f_l(d_{l-1}) gives each layer Gaussian "data" terms N(m_l, s_l^2); q(z_L | x) =
  N(m_L, s_L^2), then, going down, q(z_l | z_{l+1}, x) is the precision-weighted product of
  the data term with the *generative* p(z_l | z_{l+1}) (the networks mu_l, sigma_l are shared):
  sigma^-2 = s_l^-2 + sigma_l^-2, mu = sigma^2 (m_l s_l^-2 + mu_l sigma_l^-2).

Layer l's networks have ``hidden`` widths scaled by ``layers[l] / layers[0]`` (Burda et al.:
200-200 before the 100 units of z_1, 100-100 before the 50 of z_2). The KL weight ``beta``
scales every latent site. Everything else (minibatch scaling, estimators, evaluation) is
as for :class:`~pyro_vae.models.VAE`: every site is inside the data plate and
reparameterised, so the default compiled step and every estimator apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from pyro_vae.models import registry
from pyro_vae.models._validation import check_positive_int, unknown_name_error
from pyro_vae.models.handlers import scale_latent_sites
from pyro_vae.models.networks import MLP, MLPDecoder, activation_module
from pyro_vae.models.vae import DataCheckedModel, data_plate

GUIDE_PATHS = ("bottom_up", "top_down")


class GaussianLayer(nn.Module):
    """h -> (loc, scale) of a diagonal Gaussian: an activated MLP trunk (none when ``hidden``
    is empty) and two linear heads, scale = exp(logvar / 2)."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 activation: str):
        super().__init__()
        hidden = list(hidden)
        self.trunk = (nn.Identity() if not hidden else nn.Sequential(
            MLP(in_features, hidden[:-1], hidden[-1], activation),
            activation_module(activation)))
        width = hidden[-1] if hidden else in_features
        self.loc_head = nn.Linear(width, out_features)
        self.logvar_head = nn.Linear(width, out_features)
        self.out_features = width

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return self.trunk(h)

    def heads(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc_head(d), torch.exp(0.5 * self.logvar_head(d))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(h))


def _precision_weighted(data: tuple, prior: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised product N(m, s^2) N(mu, sigma^2): variance (s^-2 + sigma^-2)^-1, mean
    variance (m s^-2 + mu sigma^-2); (loc, scale)."""
    (data_loc, data_scale), (prior_loc, prior_scale) = data, prior
    data_precision, prior_precision = data_scale ** -2, prior_scale ** -2
    variance = 1.0 / (data_precision + prior_precision)
    return variance * (data_loc * data_precision + prior_loc * prior_precision), variance.sqrt()


def _widths(hidden: Sequence[int], ratio: float) -> list[int]:
    return [max(1, round(width * ratio)) for width in hidden]


class HierarchicalVAE(DataCheckedModel, PyroModule):
    """The model of the module docstring: ``layers`` = the sizes of z_1 ... z_L (at least 2),
    ``guide`` = ``"bottom_up"`` or ``"top_down"``; ``prior`` (of z_L) and ``likelihood`` are
    registered names or modules, as for :class:`~pyro_vae.models.VAE`."""

    def __init__(self, x_dim: int, layers: Sequence[int] = (100, 50), *,
                 hidden: Sequence[int] = (200, 200), activation: str = "tanh",
                 guide: str = "bottom_up", prior="normal", likelihood="bernoulli",
                 beta: float = 1.0, prior_options: dict | None = None,
                 likelihood_options: dict | None = None):
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        layers = [check_positive_int(size, "latent layer size") for size in layers]
        if len(layers) < 2:
            raise ValueError(f"a hierarchical VAE needs at least two stochastic layers; got "
                             f"layers={layers}. For one layer use VAE(x_dim, z_dim={layers}).")
        if guide not in GUIDE_PATHS:
            raise unknown_name_error("hierarchical guide", guide, GUIDE_PATHS)
        if not beta >= 0:
            raise ValueError(f"beta (the KL weight) must be >= 0; got beta={beta}")
        hidden = [check_positive_int(h, "hidden layer width") for h in hidden]
        self.layers, self.guide_path, self.beta = layers, guide, float(beta)
        self.latent_sites = tuple(f"z{level + 1}" for level in range(len(layers)))
        widths = [_widths(hidden, size / layers[0]) for size in layers]
        # generative: p(z_l | z_{l+1}) for l < L, and the decoder of x from z_1
        self.conditionals = nn.ModuleList(
            GaussianLayer(layers[level + 1], list(reversed(widths[level + 1])), layers[level],
                          activation) for level in range(len(layers) - 1))
        self.decoder = MLPDecoder(layers[0], x_dim, hidden, activation)
        # inference: layer l's network reads x (l = 1), or z_{l-1} (bottom-up) or d_{l-1}
        inputs = [x_dim] + layers[:-1]
        self.encoders = nn.ModuleList()
        for level, size in enumerate(layers):
            width_in = inputs[level]
            if guide == "top_down" and level > 0:
                width_in = self.encoders[level - 1].out_features
            self.encoders.append(GaussianLayer(width_in, widths[level], size, activation))
        self.prior = registry.build("prior", prior, prior_options, z_dim=layers[-1],
                                    x_dim=x_dim)
        self.likelihood = registry.build("likelihood", likelihood, likelihood_options,
                                         x_dim=x_dim)
        if hasattr(self.prior, "attach_guide"):
            raise ValueError(f"prior {prior!r} is built from the guide of a one-layer VAE; the "
                             "hierarchical VAE takes priors of z_L that stand alone (normal, "
                             "learned_normal, laplace, student_t, mixture)")
        named = isinstance(prior, str) and isinstance(likelihood, str)
        self.config = None if not named else {
            "class": "HierarchicalVAE", "x_dim": x_dim, "layers": list(layers),
            "hidden": list(hidden), "activation": activation, "guide": guide,
            "prior": prior, "likelihood": likelihood, "beta": self.beta,
            "prior_options": dict(prior_options or {}),
            "likelihood_options": dict(likelihood_options or {})}

    # ---- the Pyro model and guide ---------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            with scale_latent_sites(self.beta):
                z = self.prior(x, name=self.latent_sites[-1])
                for level in reversed(range(len(self.layers) - 1)):
                    loc, scale = self.conditionals[level](z)
                    z = pyro.sample(self.latent_sites[level],
                                    dist.Normal(loc, scale).to_event(1))
            self.likelihood(self.decoder(z), x)

    @pyro_method
    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data), scale_latent_sites(self.beta):
            if self.guide_path == "bottom_up":
                h = x
                for level, name in enumerate(self.latent_sites):
                    loc, scale = self.encoders[level](h)
                    h = pyro.sample(name, dist.Normal(loc, scale).to_event(1))
                return
            terms = self._data_terms(x)
            z = pyro.sample(self.latent_sites[-1], dist.Normal(*terms[-1]).to_event(1))
            for level in reversed(range(len(self.layers) - 1)):
                loc, scale = _precision_weighted(terms[level], self.conditionals[level](z))
                z = pyro.sample(self.latent_sites[level], dist.Normal(loc, scale).to_event(1))

    def _data_terms(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The top-down guide's bottom-up pass: (m_l, s_l) of every layer."""
        terms, d = [], x
        for encoder in self.encoders:
            d = encoder.features(d)
            terms.append(encoder.heads(d))
        return terms

    # ---- conveniences ----------------------------------------------------------------------
    @torch.no_grad()
    def layer_means(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The guide's means, each layer drawn at its mean: [E z_1, ..., E z_L]."""
        if self.guide_path == "bottom_up":
            means, h = [], x
            for encoder in self.encoders:
                h = encoder(h)[0]
                means.append(h)
            return means
        terms = self._data_terms(x)
        means = [terms[-1][0]]
        for level in reversed(range(len(self.layers) - 1)):
            means.insert(0, _precision_weighted(terms[level],
                                                self.conditionals[level](means[0]))[0])
        return means

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code the decoder reads, E_q[z_1 | x] (the upper layers at their means),
        shape (N, layers[0]); :meth:`layer_means` gives every layer."""
        return self.layer_means(x)[0]

    @torch.no_grad()
    def sample_latent(self, n: int) -> torch.Tensor:
        """n codes z_1 drawn from the generative hierarchy (z_L ~ p(z_L), then down)."""
        reference = self._reference().new_zeros(1, self.x_dim)
        z = self.prior.distribution(reference).sample((check_positive_int(n, "n"),))
        for level in reversed(range(len(self.layers) - 1)):
            loc, scale = self.conditionals[level](z)
            z = dist.Normal(loc, scale).sample()
        return z

    @torch.no_grad()
    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """E[x | z_1]."""
        return self.likelihood.mean(self.decoder(z1))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """E[x | z_1] for n draws from the generative hierarchy, shape (n, x_dim)."""
        return self.decode(self.sample_latent(n))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z_1 = E_q[z_1 | x]]."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample_observations(self, z1: torch.Tensor) -> torch.Tensor:
        """One draw x ~ p(x | z_1) per code (not the mean), shape (..., x_dim)."""
        return self.likelihood.distribution(self.decoder(z1)).sample()
