"""A conditional VAE (Sohn et al. 2015): every distribution may depend on a class label c.

Generative story, per datapoint n with label c_n in {0, ..., K-1}:

    z_n ~ p(z | c_n) = N(mu_c, diag(sigma_c^2))   (learned per class; N(0, I) if not conditioned)
    x_n ~ p(x | decoder(z_n, c_n))                (the label is fed to the decoder, or not)

Guide: z_n ~ q(z | x_n, c_n), an encoder of [x, onehot(c)]. Batches are tuples ``(x, c)``:
``fit(model, (x, labels))``, ``evaluate(model, (x, labels))``; ``sample(n, c)`` generates
from one class.
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
from pyro_vae.models.handlers import scale_latent_sites
from pyro_vae.models.networks import MLPDecoder, MLPEncoder
from pyro_vae.models.vae import DataCheckedModel, data_plate


class ConditionalVAE(DataCheckedModel, PyroModule):
    """p(z | c) p(x | z, c) with guide q(z | x, c) for labels c in {0, ..., num_classes - 1}.

    ``condition_prior`` learns a Normal prior per class; ``condition_decoder`` feeds
    onehot(c) to the decoder. At least one must be on, or c would not enter the model.
    """

    def __init__(self, x_dim: int, num_classes: int, z_dim: int = 2, *,
                 likelihood="bernoulli", guide="diagonal", condition_prior: bool = True,
                 condition_decoder: bool = True, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", beta: float = 1.0,
                 likelihood_options: dict | None = None, guide_options: dict | None = None):
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if not (condition_prior or condition_decoder):
            raise ValueError("a conditional VAE needs condition_prior=True or "
                             "condition_decoder=True (else the label never enters the model); "
                             "use VAE for an unconditional model.")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0; got beta={beta}")
        self.condition_prior = bool(condition_prior)
        self.condition_decoder = bool(condition_decoder)
        self.beta = float(beta)
        hidden = [check_positive_int(h, "hidden layer width") for h in hidden]
        encoder = MLPEncoder(x_dim + num_classes, hidden, activation)
        decoder_in = z_dim + (num_classes if condition_decoder else 0)
        self.decoder = MLPDecoder(decoder_in, x_dim, hidden, activation)
        self.guide_family = registry.build("guide", guide, encoder=encoder, z_dim=z_dim,
                                           **(guide_options or {}))
        self.likelihood = registry.build("likelihood", likelihood, x_dim=x_dim,
                                         **(likelihood_options or {}))
        if condition_prior:
            self.prior_loc = nn.Parameter(torch.zeros(num_classes, z_dim))
            unit = math.log(math.expm1(1.0))   # softplus(unit) = 1
            self.prior_raw_scale = nn.Parameter(torch.full((num_classes, z_dim), unit))
        named = isinstance(likelihood, str) and isinstance(guide, str)
        self.config = None if not named else {
            "class": "ConditionalVAE", "x_dim": x_dim, "num_classes": num_classes,
            "z_dim": z_dim, "likelihood": likelihood, "guide": guide,
            "condition_prior": self.condition_prior, "condition_decoder": self.condition_decoder,
            "hidden": list(hidden), "activation": activation, "beta": self.beta,
            "likelihood_options": dict(likelihood_options or {}),
            "guide_options": dict(guide_options or {})}

    # ---- pieces --------------------------------------------------------------------------
    def one_hot(self, c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """onehot(c) in the dtype/device of ``like``, checking the labels."""
        if not isinstance(c, torch.Tensor) or c.is_floating_point() or c.dim() != 1:
            got = (f"dtype {c.dtype}, shape {tuple(c.shape)}" if isinstance(c, torch.Tensor)
                   else type(c).__name__)
            raise TypeError(f"labels must be a 1-D integer tensor (one label per row); got "
                            f"{got}. Use labels.long().")
        if len(c) and (int(c.min()) < 0 or int(c.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}; got values from "
                             f"{int(c.min())} to {int(c.max())}. Build the model with "
                             f"num_classes={int(c.max()) + 1} or remap the labels.")
        return F.one_hot(c, self.num_classes).to(like.dtype)

    def prior_distribution(self, c: torch.Tensor, like: torch.Tensor) -> dist.TorchDistribution:
        """p(z | c), batch shape (len(c),), event shape (z_dim,)."""
        if self.condition_prior:
            scale = F.softplus(self.prior_raw_scale) + 1e-4
            return dist.Normal(self.prior_loc[c], scale[c]).to_event(1)
        zeros = like.new_zeros(len(c), self.z_dim)
        return dist.Normal(zeros, 1.0).to_event(1)

    def _decoder_input(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if not self.condition_decoder:
            return z
        onehot = self.one_hot(c, z)
        return torch.cat([z, onehot.expand(z.shape[:-1] + onehot.shape[-1:])], -1)

    # ---- the Pyro model and guide --------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, c: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            with scale_latent_sites(self.beta):
                z = pyro.sample("z", self.prior_distribution(c, x))
            self.likelihood(self.decoder(self._decoder_input(z, c)), x)

    @pyro_method
    def guide(self, x: torch.Tensor, c: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            with scale_latent_sites(self.beta):
                self.guide_family(torch.cat([x, self.one_hot(c, x)], -1))

    # ---- checks and conveniences ---------------------------------------------------------
    def _labels(self, c, n: int) -> torch.Tensor:
        device = next(self.parameters()).device
        if isinstance(c, int):
            return torch.full((n,), c, dtype=torch.long, device=device)
        labels = torch.as_tensor(c, device=device)
        if labels.dim() != 1 or len(labels) != n:
            raise ValueError(f"expected one label or {n} labels; got labels of shape "
                             f"{tuple(labels.shape)}")
        return labels

    @torch.no_grad()
    def encode(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """E_q[z | x, c], shape (N, z_dim)."""
        return self.guide_family.mean(torch.cat([x, self.one_hot(c, x)], -1))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, c) -> torch.Tensor:
        """E[x | z, c], shape (N, x_dim); ``c`` is a label or one label per row of z."""
        return self.likelihood.mean(self.decoder(self._decoder_input(
            z, self._labels(c, len(z)))))

    @torch.no_grad()
    def sample_latent(self, n: int, c) -> torch.Tensor:
        """n draws z ~ p(z | c); ``c`` is one label or n labels."""
        labels = self._labels(c, check_positive_int(n, "n"))
        return self.prior_distribution(labels, next(self.parameters())).sample()

    @torch.no_grad()
    def sample(self, n: int, c) -> torch.Tensor:
        """E[x | z, c] for n draws z ~ p(z | c), shape (n, x_dim)."""
        labels = self._labels(c, check_positive_int(n, "n"))
        return self.decode(self.sample_latent(n, labels), labels)
