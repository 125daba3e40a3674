"""The VAE as Pyro's own example writes it (pyro-ppl ``examples/vae/vae.py``): the contender
that shows pyro-vae against what a Pyro user would otherwise write.

Model and guide follow the example line for line: ``pyro.module`` registers the networks in
Pyro's global parameter store, the ``"data"`` plate spans the batch (no minibatch scaling),
the decoder's sigmoid gives Bernoulli probabilities (``validate_args=False``, as the example
passes), and ``SVI(model, guide, pyro.optim.Adam, loss)`` takes the step. The networks are a
:class:`~plain_vae.PlainVAE`'s (so the same architecture and initial weights as the
pyro-vae contender); the guide's scale is exp(log sigma^2 / 2) of its ``logvar_head``.
Pyro's global store needs ``module_local_params`` off, which :meth:`PyroExampleVAE.svi_step`
sets around each step.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.infer
import pyro.optim
import torch
from plain_vae import PlainVAE
from torch import nn

#: the example registers "decoder" and "encoder" in Pyro's global parameter store; other names
#: here, so that a pyro-vae VAE run in the same process with module_local_params off (the
#: step benchmark's pyro-jit contender) does not read these networks' parameters by name
DECODER, ENCODER = "example_decoder", "example_encoder"

#: pyro-vae estimator spec -> Pyro's loss as the example would construct it (with the plate
#: nesting stated, so that Pyro does not trace the model once to guess it)
PYRO_LOSSES = {
    "elbo": lambda k: pyro.infer.Trace_ELBO(num_particles=k, vectorize_particles=k > 1,
                                            max_plate_nesting=1),
    "meanfield": lambda k: pyro.infer.TraceMeanField_ELBO(
        num_particles=k, vectorize_particles=k > 1, max_plate_nesting=1),
    "iwae": lambda k: pyro.infer.RenyiELBO(alpha=0.0, num_particles=k,
                                           vectorize_particles=True, max_plate_nesting=1),
}


class PyroExampleVAE(nn.Module):
    """Pyro's example VAE on the networks of ``plain``."""

    def __init__(self, plain: PlainVAE):
        super().__init__()
        self.plain = plain
        self.encoder = nn.ModuleList([plain.encoder, plain.loc_head, plain.logvar_head])
        self.z_dim = plain.loc_head.out_features

    def model(self, x):
        pyro.module(DECODER, self.plain.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = torch.sigmoid(self.plain.decoder(z))
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                        obs=x.reshape(-1, x.shape[-1]))

    def guide(self, x):
        pyro.module(ENCODER, self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale, _ = self.plain.encode(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    def make_svi(self, name: str, k: int, lr: float) -> pyro.infer.SVI:
        """The example's ``SVI(vae.model, vae.guide, Adam({"lr": lr}), loss=...)``; call
        :func:`pyro.clear_param_store` first, as the example does."""
        return pyro.infer.SVI(self.model, self.guide, pyro.optim.Adam({"lr": lr}),
                              loss=PYRO_LOSSES[name](k))

    @staticmethod
    def svi_step(svi: pyro.infer.SVI, x: torch.Tensor) -> float:
        with pyro.settings.context(module_local_params=False):
            return svi.step(x)
