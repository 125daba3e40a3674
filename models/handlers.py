"""Effect handlers used by the models (and by fit for its KL weight)."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample


class scale_latent_sites(Messenger):
    """Multiply the log-density scale of every latent (unobserved) sample site by ``scale``,
    in model and guide alike: E_q log p(x|z) - scale * KL(q || p) for any Pyro model.

    Unlike ``poutine.scale`` it accepts ``scale == 0`` (a plain autoencoder objective).
    """

    def __init__(self, scale: float):
        super().__init__()
        if not scale >= 0:
            raise ValueError(f"the latent-site scale (KL weight) must be >= 0; got {scale}")
        self.scale = scale

    def _process_message(self, msg):
        if (msg["type"] == "sample" and not msg["is_observed"]
                and not isinstance(msg["fn"], _Subsample)):
            msg["scale"] = self.scale * msg["scale"]
