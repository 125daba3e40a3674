"""A VAE whose decoder weights are latent variables too: Bayesian in the network as in z.

Generative story (every decoder layer l; ``PyroSample`` priors, global sites):

    W_l ~ N(0, s_l^2 I),  b_l ~ N(0, s_l^2 I)          outside the ``"data"`` plate
    per datapoint n:  z_n ~ p(z),  x_n ~ p(x | decoder_W(z_n))

Guide: q(W) q(z | x), with q(W) = prod_l N(W_l; M_l, diag S_l^2) N(b_l; m_l, diag s_l^2)
(mean field, S = softplus(rho)) and q(z | x) any registered guide family. The ELBO is

    sum_n E_q[log p(x_n | z_n, W) + log p(z_n) - log q(z_n | x_n)] - KL(q(W) || p(W)).

Minibatches: the data plate scales the per-datapoint terms by N/B and the weight sites sit
outside it with scale 1, so each step estimates the full objective with KL(q(W) || p(W))
counted once per pass over the data (KL / N per datapoint), whatever the batch size. The
prior scale s_l is fixed (``weight_prior_scale``) or learned by type-II maximum likelihood
(``learn_weight_prior_scale``: one s_l per layer).

Evaluation treats q(W) as the posterior over decoders: the reported log p(x_n) is the
posterior predictive density log E_q(W) p(x_n | W), importance-sampled jointly over decoders
and codes, log (1/K) sum_k p(x_n, z_kn | W_k) / q(z_kn | x_n) with W_k ~ q(W) and
z_kn ~ q(z | x_n); the sum's expectation is exactly E_q(W) p(x_n | W), so the estimate is a
stochastic lower bound on it that tightens as K grows. The ELBO, KL and posterior predictive
replicates are per datapoint in the same sense (a fresh decoder per particle);
:meth:`BayesianDecoderVAE.weight_kl` gives KL(q(W) || p(W)) itself. The model says which
sites are global through :attr:`global_sites`, which the per-datapoint evaluation reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule, PyroParam, PyroSample, pyro_method
from torch import nn
from torch.distributions import constraints

from pyro_vae.models._validation import check_positive_int
from pyro_vae.models.networks import activation_module
from pyro_vae.models.vae import VAE


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    return float(value)


#: the sample sites of each layer, after its attribute names
LAYER_SITES = ("weight", "bias")


def _draw_batch_shape(shape: torch.Size, event_dims: int) -> torch.Size:
    """The leading dims of a weight draw (particles, or several decoders), without the
    trailing size-1 dims that plates of datapoints leave on a global site."""
    batch = list(shape[:len(shape) - event_dims])
    while batch and batch[-1] == 1:
        batch.pop()
    return torch.Size(batch)


class BayesianLinear(PyroModule):
    """A linear layer whose ``weight`` (out, in) and ``bias`` (out,) are ``PyroSample`` sites
    with prior N(0, s^2), and whose guide is N(loc, softplus(rho)^2) per entry.

    ``forward`` takes weight draws with leading dims (vectorised particles, or S decoders):
    a draw of shape (*D, out, in) maps inputs (*D, B, in) or (B, in) to (*D, B, out).
    """

    def __init__(self, in_features: int, out_features: int, *, prior_scale: float = 1.0,
                 learn_prior_scale: bool = False, init_scale: float = 1e-3):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        prior_scale = torch.tensor(_positive(prior_scale, "weight_prior_scale"))
        if learn_prior_scale:
            self.prior_scale = PyroParam(prior_scale, constraint=constraints.positive)
        else:
            self.register_buffer("prior_scale", prior_scale)
        start = nn.Linear(in_features, out_features)   # PyTorch's initialisation for the means
        rho = math.log(math.expm1(_positive(init_scale, "weight_init_scale")))
        self.weight_loc = nn.Parameter(start.weight.detach().clone())
        self.bias_loc = nn.Parameter(start.bias.detach().clone())
        self.weight_rho = nn.Parameter(torch.full((out_features, in_features), rho))
        self.bias_rho = nn.Parameter(torch.full((out_features,), rho))
        self.weight = PyroSample(lambda self: self.prior("weight"))
        self.bias = PyroSample(lambda self: self.prior("bias"))

    def _shape(self, name: str) -> list[int]:
        return [self.out_features, self.in_features] if name == "weight" else [self.out_features]

    def prior(self, name: str) -> dist.Distribution:
        """p(weight) or p(bias): independent N(0, s^2) entries."""
        shape = self._shape(name)
        scale = self.prior_scale
        return dist.Normal(scale.new_zeros(()), scale).expand(shape).to_event(len(shape))

    def posterior(self, name: str) -> dist.Distribution:
        """q(weight) or q(bias): independent N(loc, softplus(rho)^2) entries."""
        loc, rho = getattr(self, f"{name}_loc"), getattr(self, f"{name}_rho")
        return dist.Normal(loc, F.softplus(rho)).to_event(loc.dim())

    def site_names(self) -> tuple[str, str]:
        """The sample sites of weight and bias: their attribute paths from the root module."""
        prefix = self._pyro_name
        return tuple(f"{prefix}.{name}" if prefix else name for name in LAYER_SITES)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        draws = _draw_batch_shape(weight.shape, 2)
        weight = weight.reshape(draws + weight.shape[-2:])
        bias = bias.reshape(draws + bias.shape[-1:])
        if not draws:
            return F.linear(h, weight, bias)
        return torch.matmul(h, weight.transpose(-1, -2)) + bias.unsqueeze(-2)


class BayesianMLPDecoder(PyroModule):
    """z -> theta through ``hidden`` (reversed, as :class:`~pyro_vae.models.networks.MLPDecoder`)
    :class:`BayesianLinear` layers; hidden layers activated, the output layer linear."""

    def __init__(self, z_dim: int, x_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", **layer_options):
        super().__init__()
        widths = [z_dim, *reversed(list(hidden)), x_dim]
        self.layers = PyroModule[nn.ModuleList](
            BayesianLinear(w_in, w_out, **layer_options)
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True))
        self.activation = activation_module(activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index < len(self.layers) - 1:
                h = self.activation(h)
        return h

    def sites(self) -> Iterator[tuple[str, BayesianLinear, str]]:
        """(site name, layer, "weight" or "bias") for every weight site, in order."""
        for layer in self.layers:
            for site, name in zip(layer.site_names(), LAYER_SITES, strict=True):
                yield site, layer, name

    def site_names(self) -> tuple[str, ...]:
        return tuple(site for site, _, _ in self.sites())

    def draw_prior(self) -> None:
        """Sample every weight site from its prior (in a model: outside the data plate, so
        the draws are global; inside the model call they are then reused)."""
        for layer in self.layers:
            layer.weight, layer.bias   # noqa: B018 (reading a PyroSample attribute samples it)

    def draw_posterior(self) -> None:
        """Sample every weight site from the guide's q(W)."""
        for site, layer, name in self.sites():
            pyro.sample(site, layer.posterior(name))

    def posterior_means(self) -> dict[str, torch.Tensor]:
        return {site: getattr(layer, f"{name}_loc") for site, layer, name in self.sites()}

    def posterior_draws(self, num: int) -> dict[str, torch.Tensor]:
        return {site: layer.posterior(name).sample((num,)) for site, layer, name in self.sites()}

    def kl(self) -> torch.Tensor:
        """KL(q(W) || p(W)), in closed form, summed over every weight and bias."""
        return sum(torch.distributions.kl_divergence(layer.posterior(name), layer.prior(name))
                   for _, layer, name in self.sites())


class BayesianDecoderVAE(VAE):
    """The model of the module docstring: a :class:`~pyro_vae.models.VAE` (same prior,
    likelihood and guide options, MLP networks) whose decoder is a
    :class:`BayesianMLPDecoder` with priors N(0, ``weight_prior_scale``^2) on every weight
    and bias and a mean-field Gaussian guide over them, initialised at PyTorch's usual
    weights with standard deviation ``weight_init_scale``. ``hidden=()`` makes the decoder
    linear (then pass an ``encoder`` module: the guide's network needs a hidden layer)."""

    def __init__(self, x_dim: int, z_dim: int = 2, *, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", weight_prior_scale: float = 1.0,
                 learn_weight_prior_scale: bool = False, weight_init_scale: float = 1e-3,
                 prior="normal", likelihood="bernoulli", guide="diagonal", beta: float = 1.0,
                 prior_options: dict | None = None, likelihood_options: dict | None = None,
                 guide_options: dict | None = None, encoder: nn.Module | None = None):
        hidden = [check_positive_int(h, "hidden layer width") for h in hidden]
        decoder = BayesianMLPDecoder(
            check_positive_int(z_dim, "z_dim"), check_positive_int(x_dim, "x_dim"), hidden,
            activation, prior_scale=weight_prior_scale,
            learn_prior_scale=bool(learn_weight_prior_scale), init_scale=weight_init_scale)
        super().__init__(x_dim, z_dim, prior=prior, likelihood=likelihood, guide=guide,
                         hidden=hidden, activation=activation, beta=beta,
                         prior_options=prior_options, likelihood_options=likelihood_options,
                         guide_options=guide_options, encoder=encoder, decoder=decoder)
        named = all(isinstance(c, str) for c in (prior, likelihood, guide)) and encoder is None
        self.config = None if not named else {
            "class": "BayesianDecoderVAE", "x_dim": x_dim, "z_dim": z_dim,
            "hidden": list(hidden), "activation": activation,
            "weight_prior_scale": float(weight_prior_scale),
            "learn_weight_prior_scale": bool(learn_weight_prior_scale),
            "weight_init_scale": float(weight_init_scale), "prior": prior,
            "likelihood": likelihood, "guide": guide, "beta": self.beta,
            "prior_options": dict(prior_options or {}),
            "likelihood_options": dict(likelihood_options or {}),
            "guide_options": dict(guide_options or {})}

    @property
    def global_sites(self) -> tuple[str, ...]:
        """The sample sites outside the data plate: every decoder weight and bias."""
        return self.decoder.site_names()

    # ---- the Pyro model and guide -------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        self.decoder.draw_prior()
        super().model(x, num_data)

    @pyro_method
    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        self.decoder.draw_posterior()
        super().guide(x, num_data)

    # ---- the weights ---------------------------------------------------------------------
    def weight_kl(self) -> torch.Tensor:
        """KL(q(W) || p(W)) in nats (closed form); the ELBO carries it once per pass over
        the data."""
        return self.decoder.kl()

    @torch.no_grad()
    def decoder_draws(self, num: int) -> dict[str, torch.Tensor]:
        """``num`` decoders W ~ q(W): site name -> tensor (num, *shape)."""
        return self.decoder.posterior_draws(check_positive_int(num, "num"))

    def _decoded(self, z: torch.Tensor, weights: dict[str, torch.Tensor] | None
                 ) -> torch.Tensor:
        with poutine.condition(data=weights or self.decoder.posterior_means()):
            return self.decoder(z)

    # ---- conveniences ----------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: torch.Tensor, weights: dict[str, torch.Tensor] | None = None
               ) -> torch.Tensor:
        """E[x | z, W] with W the guide's mean decoder, or the decoders ``weights`` (from
        :meth:`decoder_draws`: S of them give shape (S, ..., x_dim), each decoding every z)."""
        return self.likelihood.mean(self._decoded(z, weights))

    @torch.no_grad()
    def sample(self, n: int, decoders: bool = True) -> torch.Tensor:
        """E[x | z_i, W_i] for n codes z_i ~ p(z), each through its own decoder W_i ~ q(W)
        (the posterior predictive means); ``decoders=False`` decodes with the mean decoder."""
        z = self.sample_latent(n)
        if not decoders:
            return self.decode(z)
        return self.decode(z.unsqueeze(-2), self.decoder_draws(n)).squeeze(-2)

    @torch.no_grad()
    def sample_observations(self, z: torch.Tensor) -> torch.Tensor:
        """One draw x ~ p(x | z, W) per code (z of shape (n, z_dim)), each through its own
        decoder W ~ q(W), shape (n, x_dim)."""
        draws = self.decoder_draws(z.shape[0])
        theta = self._decoded(z.unsqueeze(-2), draws).squeeze(-2)
        return self.likelihood.distribution(theta).sample()
