"""Posterior collapse remedies: the free-bits objective (Kingma et al. 2016, Appendix C.8).

Per datapoint, with KL_j the KL of latent dimension j averaged over the minibatch,

    L_lambda = E_q log p(x|z) - beta sum_j max(lambda, KL_j),
    KL_j = (1/B) sum_{n in batch} KL(q(z_j|x_n) || p(z_j)).

A dimension whose average KL is below lambda nats pays the constant lambda and feels no
pressure toward the prior, so the encoder may use lambda nats of it "for free"; above lambda
it is the ordinary ELBO. With lambda = 0 and a closed-form KL this is exactly the mean-field
ELBO (``TraceMeanField_ELBO``).

Minibatch scaling: over a batch of B of N datapoints the estimate of the full-data objective
is (N/B) sum_{n in batch} E_q log p(x_n|z) - N beta sum_j max(lambda, KL_j), so the loss is an
unbiased estimate of N L_lambda in its reconstruction term and uses the batch average inside
the max, as in the paper. The scale N/B (and the KL weight beta) are read from the latent
site, so ``fit(..., beta=KLSchedule(beta, warmup_epochs=...))`` composes with it. KL annealing
itself is :func:`pyro_vae.inference.fit`'s ``beta=KLSchedule(...)``.
"""

from __future__ import annotations

import pyro.infer
import torch

from pyro_vae.inference.estimators.registry import register_estimator
from pyro_vae.inference.evaluation import _factorised, is_point_mass


class FreeBitsELBO(pyro.infer.Trace_ELBO):
    """The free-bits objective with floor ``free_bits`` = lambda nats per latent dimension.

    Needs guide and prior to factorise over latent dimensions at each latent site (diagonal
    Normal guide, factorised prior); KL_j is in closed form where torch registers it, else a
    one-draw Monte Carlo estimate per dimension. Particles are drawn one after another.
    """

    def __init__(self, free_bits: float = 0.5, num_particles: int = 1,
                 max_plate_nesting: float = float("inf"), vectorize_particles: bool = False):
        if not free_bits >= 0:
            raise ValueError(f"free bits (lambda, nats per dimension) must be >= 0; got "
                             f"{free_bits!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=False)
        self.free_bits = float(free_bits)

    # ---- per-particle pieces -----------------------------------------------------------
    @staticmethod
    def _kl_per_dimension(name, guide_site, model_site) -> torch.Tensor:
        """Per-element, per-dimension KL(q(z_j|x) || p(z_j)), shape (elements, d)."""
        if is_point_mass(guide_site["fn"]):
            raise ValueError(f"free bits need a guide with a density at site {name!r}; a point "
                             "mass (Delta) has KL = +inf. Use guide='diagonal'.")
        q, p = _factorised(guide_site["fn"]), _factorised(model_site["fn"])
        if q is None or p is None:
            raise ValueError(
                f"free bits need guide and prior to factorise over the dimensions of site "
                f"{name!r} (got {type(guide_site['fn']).__name__} and "
                f"{type(model_site['fn']).__name__}); use guide='diagonal' with a factorised "
                "prior ('normal', 'laplace', 'student_t', 'learned_normal').")
        value = guide_site["value"]
        try:
            kl = torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            kl = q.log_prob(value) - p.log_prob(value)
        return kl.expand(value.shape).reshape(-1, value.shape[-1])

    @staticmethod
    def _site_weights(site, elements: int, like: torch.Tensor) -> torch.Tensor:
        """Each element's weight: the site's scale (subsample N/B times beta) and mask."""
        batch_shape = site["value"].shape[:-1]
        weight = torch.as_tensor(site["scale"], dtype=like.dtype, device=like.device)
        if site["mask"] is not None and site["mask"] is not True:
            weight = weight * torch.as_tensor(site["mask"], dtype=like.dtype, device=like.device)
        return weight.expand(batch_shape).reshape(elements)

    def _dimension_terms(self, model_trace, guide_trace):
        """For each latent site: (total weight W, KL_j averaged over the batch, shape (d,)).
        W = sum of the elements' scales = beta N for a data plate of N subsampled to B."""
        terms = {}
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if not site["fn"].has_rsample:
                raise NotImplementedError(f"free bits need a reparameterisable guide; site "
                                          f"{name!r} is not")
            kl = self._kl_per_dimension(name, site, model_trace.nodes[name])
            weights = self._site_weights(site, kl.shape[0], kl)
            total = weights.sum()
            mean_kl = (weights[:, None] * kl).sum(0) / total if float(total) > 0 else kl.mean(0)
            terms[name] = (total, mean_kl)
        return terms

    def _objective(self, model_trace, guide_trace) -> torch.Tensor:
        objective = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                objective = objective + site["log_prob_sum"]
            elif name not in guide_trace.nodes:
                raise ValueError(f"model site {name!r} is latent but the guide does not sample "
                                 "it; free bits need every latent site in the guide")
        for total, mean_kl in self._dimension_terms(model_trace, guide_trace).values():
            if float(total) > 0:   # beta = 0 leaves no KL term at all
                objective = objective - total * torch.clamp(mean_kl, min=self.free_bits).sum()
        return objective

    @torch.no_grad()
    def kl_terms(self, model, guide, *args, **kwargs) -> dict[str, dict[str, torch.Tensor]]:
        """For one guide draw: per latent site, ``kl`` = KL_j (the batch average per
        dimension) and ``objective`` = max(lambda, KL_j), the term the loss charges for it
        (times beta and the number of datapoints)."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        return {name: {"kl": kl, "objective": torch.clamp(kl, min=self.free_bits)}
                for name, (_, kl) in self._dimension_terms(model_trace, guide_trace).items()}

    # ---- the ELBO interface --------------------------------------------------------------
    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss - self._objective(model_trace, guide_trace) / self.num_particles
        return loss

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if getattr(loss, "requires_grad", False):
            loss.backward()
        return loss.item() if isinstance(loss, torch.Tensor) else float(loss)


def _free_bits_factory(k, vectorize_particles, max_plate_nesting, **options):
    return FreeBitsELBO(free_bits=options["lambda"], num_particles=k,
                        max_plate_nesting=max_plate_nesting)


register_estimator(
    "freebits", _free_bits_factory, {"lambda": (float, 0.5), "k": (int, 1)},
    "free bits (Kingma et al. 2016): E_q log p(x|z) - sum_j max(lambda, KL_j)")
