"""A plain autoencoder in the VAE framework: a point-mass (Delta) guide and KL weight 0.

With q(z|x) = delta(z - mu(x)) and beta = 0 the objective E_q log p(x|z) - beta KL is exactly
log p(x | mu(x)), the autoencoder's reconstruction log-likelihood (for a Normal likelihood
with fixed sigma, -||x - f(mu(x))||^2 / (2 sigma^2) + const). Everything else (networks,
likelihood, prior used only to draw z for generation) is the VAE's, so an autoencoder and a
VAE differ in exactly the guide family and the KL weight.
"""

from __future__ import annotations

from pyro_vae.models.vae import VAE


def autoencoder(x_dim: int, z_dim: int = 2, **options) -> VAE:
    """``VAE(x_dim, z_dim, guide="delta", beta=0.0, **options)``: a deterministic autoencoder."""
    for fixed in ("guide", "beta"):
        if fixed in options:
            raise ValueError(f"autoencoder() fixes {fixed}; got {fixed}={options[fixed]!r}. "
                             "Use VAE(...) directly for another guide or KL weight.")
    return VAE(x_dim, z_dim, guide="delta", beta=0.0, **options)
