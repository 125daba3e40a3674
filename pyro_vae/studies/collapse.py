"""Posterior collapse, shown and remedied: a plain fit, KL annealing and free bits side by side.

:func:`run_collapse_study` fits the same VAE three ways on one dataset, with a KL weight large
enough (or a decoder strong enough) that latent dimensions collapse to the prior:

* ``plain``: the beta-weighted ELBO as it is;
* ``annealed``: KL annealing, beta ramped linearly from 0 over ``warmup_epochs``
  (:func:`pyro_vae.fit`'s ``beta_warmup_epochs``);
* ``free bits``: the free-bits objective E_q log p(x|z) - beta sum_j max(lambda, KL_j)
  (:class:`pyro_vae.inference.FreeBitsELBO`, Kingma et al. 2016).

It reports, on the test split and beta-free, active units (Burda et al.: Cov_x E_q[z_u|x] >
0.01), KL per dimension, reconstruction, ELBO and importance-sampled log p(x), and plots them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pyro_vae.data import Dataset
from pyro_vae.inference import evaluate, fit
from pyro_vae.models import VAE
from pyro_vae.plots.studies import collapse_figure
from pyro_vae.studies._common import as_dataset

VARIANTS = ("plain", "annealed", "free bits")


@dataclass
class CollapseResult:
    """One row per variant (``rows``), per-dimension arrays, fit histories and the figure."""

    rows: list[dict]
    histories: dict = field(repr=False)
    settings: dict = field(default_factory=dict)
    figure: object = field(default=None, repr=False)

    def to_markdown(self) -> str:
        s = self.settings
        lines = [f"## Posterior collapse on {s['dataset']}: z_dim={s['z_dim']}, "
                 f"beta={s['beta']:g}, free bits lambda={s['free_bits']:g} nats, warm-up "
                 f"{s['warmup_epochs']} epochs, {s['epochs']} epochs, seed {s['seed']}", "",
                 "| variant | training objective | active units | KL | recon | ELBO | "
                 "log p(x) |", "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['variant']} | {r['objective']} | {r['active_units']}/"
                         f"{s['z_dim']} | {r['kl']:.2f} | {r['recon']:.2f} | {r['elbo']:.2f} | "
                         f"{r['log_likelihood']:.2f} |")
        return "\n".join(lines) + "\n"


def run_collapse_study(dataset: Dataset | str = "digits", *, z_dim: int = 16, beta: float = 4.0,
                       free_bits: float = 0.5, warmup_epochs: float | None = None,
                       epochs: int = 100, hidden=(256, 256), batch_size: int = 128,
                       lr: float = 1e-3, likelihood: str | None = None, seed: int = 0,
                       num_samples: int = 500, device: str = "cpu", quiet: bool = True,
                       figure: bool = True) -> CollapseResult:
    """Fit ``plain``, ``annealed`` and ``free bits`` variants of one VAE (see module doc) and
    compare active units and KL per dimension. ``warmup_epochs`` defaults to half the epochs
    (a fraction of an epoch is allowed, so even ``epochs=1`` anneals)."""
    dataset = as_dataset(dataset)
    warmup_epochs = epochs / 2 if warmup_epochs is None else warmup_epochs
    likelihood = likelihood or dataset.suggested_likelihood
    plans = {
        "plain": {"estimator": "meanfield"},
        "annealed": {"estimator": "meanfield", "beta_warmup_epochs": warmup_epochs},
        "free bits": {"estimator": f"freebits:lambda={free_bits}"},
    }
    rows, histories = [], {}
    for variant, options in plans.items():
        torch.manual_seed(seed)
        model = VAE(dataset.x_dim, z_dim, hidden=tuple(hidden), likelihood=likelihood)
        histories[variant] = fit(model, dataset.train, epochs=epochs, beta=beta,
                                 batch_size=min(batch_size, len(dataset.train)), lr=lr,
                                 seed=seed, device=device, quiet=quiet, **options)
        model.to("cpu")
        metrics = evaluate(model, dataset.test, num_samples=num_samples, seed=seed)
        objective = options["estimator"] + (f", warm-up {warmup_epochs} epochs"
                                            if variant == "annealed" else "")
        rows.append({"variant": variant, "objective": objective, **metrics.summary()})
    settings = {"dataset": dataset.name, "z_dim": z_dim, "beta": beta, "free_bits": free_bits,
                "warmup_epochs": warmup_epochs, "epochs": epochs, "hidden": list(hidden),
                "likelihood": likelihood, "seed": seed, "num_samples": num_samples}
    result = CollapseResult(rows, histories, settings)
    if figure:
        result.figure = collapse_figure(result)
    return result
