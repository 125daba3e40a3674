"""The variational autoencoder as a Pyro model/guide pair.

Generative story, per datapoint n:   z_n ~ p(z),   x_n ~ p(x | decoder(z_n)).
Guide:                               z_n ~ q(z | x_n).

Minibatches: with ``num_data=N`` and a batch of B points, the ``"data"`` plate subsamples
B of N, so every log-density inside it is scaled by N/B and the ELBO of the batch is an
unbiased estimate of the full-data ELBO. A KL weight ``beta`` scales the latent site in
model and guide alike (like ``poutine.scale``, but beta = 0 is allowed), giving
E_q[log p(x|z)] - beta KL(q || p).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn

from pyro_vae.models import registry
from pyro_vae.models._validation import check_positive_int, unknown_name_error
from pyro_vae.models.handlers import scale_latent_sites
from pyro_vae.models.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

pyro.settings.set(module_local_params=True)

NETWORKS = ("mlp", "conv")


def data_plate(x: torch.Tensor, num_data: int | None = None) -> pyro.plate:
    """The ``"data"`` plate over the batch ``x``; with ``num_data`` it is a subsample of
    ``num_data`` points, so sites inside it are scaled by ``num_data / len(x)``."""
    # int(): a compiled (traced) step sees sizes as tensors; the plate's sizes, and so the
    # minibatch scale N/B, stay Python numbers as in an eager step
    batch = int(x.shape[0])
    if num_data is None or num_data == batch:
        return pyro.plate("data", batch)
    return pyro.plate("data", size=num_data, subsample_size=batch,
                      subsample=torch.arange(batch, device=x.device))


def check_data_matrix(x, x_dim: int | None = None, *, what: str = "data") -> None:
    """Raise a clear error unless x is a finite 2-D float tensor (N, x_dim) with N >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, features); got "
                        f"{type(x).__name__}. Convert with torch.as_tensor(array, "
                        "dtype=torch.float32).")
    if x.dim() != 2:
        raise ValueError(f"{what} must have shape (N, features); got shape {tuple(x.shape)}. "
                         "Flatten images with x.reshape(len(x), -1).")
    if x.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)}); expected at least one row.")
    if x_dim is not None and x.shape[1] != x_dim:
        raise ValueError(f"{what} has {x.shape[1]} features but the model was built for "
                         f"x_dim={x_dim}. Build the model with x_dim={x.shape[1]} or pass "
                         "data with matching features.")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor; got dtype {x.dtype}. "
                        "Use x.float().")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        rows = (~finite).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{what} contains {int((~finite).sum())} NaN or infinite values "
                         f"(first rows: {rows}); expected finite values. Remove or impute them.")


class DataCheckedModel:
    """What every model with ``x_dim`` and a ``likelihood`` shares (mixed into a
    PyroModule): the check of the data it is given, and a parameter to build tensors like."""

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise a clear error unless x has shape (N, x_dim), is finite and in the support."""
        check_data_matrix(x, self.x_dim, what=what)
        self.likelihood.check_data(x)

    def _reference(self) -> torch.Tensor:
        return next(self.parameters())


class VAE(DataCheckedModel, PyroModule):
    """A VAE with swappable prior, likelihood, guide family and networks.

    Each of ``prior``, ``likelihood`` and ``guide`` is a registered name (see
    :mod:`pyro_vae.models.registry`) or a module instance; ``*_options`` pass keyword
    options to a named component. ``network`` picks ``"mlp"`` or ``"conv"`` (flat images of
    ``image_shape``); ``encoder``/``decoder`` modules override it.
    """

    def __init__(self, x_dim: int, z_dim: int = 2, *, prior="normal", likelihood="bernoulli",
                 guide="diagonal", network: str = "mlp", hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", image_shape: Sequence[int] | None = None,
                 beta: float = 1.0, prior_options: dict | None = None,
                 likelihood_options: dict | None = None, guide_options: dict | None = None,
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.z_dim = check_positive_int(z_dim, "z_dim")
        if network not in NETWORKS:
            raise unknown_name_error("network", network, NETWORKS)
        if not beta >= 0:
            raise ValueError(f"beta (the KL weight) must be >= 0; got beta={beta}. Use beta=1 "
                             "for the ELBO, or 0 <= beta < 1 to weaken the KL term.")
        self.beta = float(beta)
        hidden = [check_positive_int(h, "hidden layer width") for h in hidden]
        custom_nets = encoder is not None or decoder is not None
        if network == "conv":
            image_shape = tuple(image_shape or (1, 28, 28))
            if int(torch.tensor(image_shape).prod()) != x_dim:
                raise ValueError(f"image_shape {image_shape} has "
                                 f"{int(torch.tensor(image_shape).prod())} pixels but "
                                 f"x_dim={x_dim}; pass the image shape of your data.")
            width = hidden[0] if hidden else 256
            encoder = encoder or ConvEncoder(image_shape, width, activation=activation)
            decoder = decoder or ConvDecoder(z_dim, image_shape, width, activation=activation)
        else:
            encoder = encoder or MLPEncoder(x_dim, hidden, activation)
            decoder = decoder or MLPDecoder(z_dim, x_dim, hidden, activation)
        self.decoder = decoder
        self.guide_family = registry.build("guide", guide, guide_options, encoder=encoder,
                                           z_dim=z_dim)
        self.prior = registry.build("prior", prior, prior_options, z_dim=z_dim, x_dim=x_dim)
        self.likelihood = registry.build("likelihood", likelihood, likelihood_options,
                                         x_dim=x_dim)
        if hasattr(self.prior, "attach_guide"):
            self.prior.attach_guide(self.guide_family)
        named = all(isinstance(c, str) for c in (prior, likelihood, guide))
        self.config = None if not named or custom_nets else {
            "class": "VAE", "x_dim": x_dim, "z_dim": z_dim, "prior": prior,
            "likelihood": likelihood, "guide": guide, "network": network, "hidden": list(hidden),
            "activation": activation, "image_shape": list(image_shape) if image_shape else None,
            "beta": self.beta, "prior_options": dict(prior_options or {}),
            "likelihood_options": dict(likelihood_options or {}),
            "guide_options": dict(guide_options or {}),
        }

    # ---- the Pyro model and guide -------------------------------------------------------
    @pyro_method
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            with scale_latent_sites(self.beta):
                z = self.prior(x)
            self.likelihood(self.decoder(z), x)

    @pyro_method
    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        with data_plate(x, num_data):
            with scale_latent_sites(self.beta):
                self.guide_family(x)

    # ---- conveniences ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z | x], shape (N, z_dim)."""
        return self.guide_family.mean(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], shape (..., x_dim)."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = E_q[z|x]]: decoded posterior means."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample_latent(self, n: int) -> torch.Tensor:
        """n draws z ~ p(z), on the model's device and dtype."""
        reference = self._reference().new_zeros(1, self.x_dim)
        return self.prior.distribution(reference).sample((check_positive_int(n, "n"),))

    @torch.no_grad()
    def sample_observations(self, z: torch.Tensor) -> torch.Tensor:
        """One draw x ~ p(x | z) per code (not the mean), shape (..., x_dim)."""
        return self.likelihood.distribution(self.decoder(z)).sample()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """E[x | z] for n prior draws z ~ p(z), shape (n, x_dim)."""
        return self.decode(self.sample_latent(n))
