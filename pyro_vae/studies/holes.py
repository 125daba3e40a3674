"""The holes study: does the KL term fill the holes an autoencoder leaves in its latent space?

:func:`run_holes_study` fits an autoencoder (Delta guide, beta = 0) and VAEs with beta = 0, 1,
4 (configurable) on one dataset with several seeds, and reports for each the hole fractions of
:mod:`pyro_vae.inference.metrics.holes` (latent and data space, for draws from the prior and from
the Gaussian matched to the aggregate posterior, and the naive measure for contrast), the
reconstruction error and the KL, as mean and spread over seeds; plus the closed-form vs Monte
Carlo Gaussian KL check, the metrics on constructed latent configurations with known answers,
and a 2 x 4 comparison figure. One call::

    result = pv.run_holes_study("digits", seeds=(0, 1, 2))
    print(result.to_markdown()); result.figure
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data import Dataset
from pyro_vae.inference import elbo_terms, fit, kl_per_dimension
from pyro_vae.inference.evaluation import gaussian_kl
from pyro_vae.inference.metrics.holes import (
    DEFAULT_ALPHA,
    HoleReport,
    data_hole_fraction,
    hole_fractions,
    latent_hole_fraction,
    matched_gaussian,
    naive_hole_fraction,
)
from pyro_vae.models import VAE, autoencoder
from pyro_vae.plots.holes import holes_figure
from pyro_vae.studies._common import as_dataset, atomic_write

AE = "AE"
METRICS = ("latent_prior", "data_prior", "latent_matched", "data_matched", "naive_prior",
           "recon_nll", "recon_mse", "kl")
METRIC_LABELS = {
    "latent_prior": "holes, latent (prior)", "data_prior": "holes, data (prior)",
    "latent_matched": "holes, latent (matched)", "data_matched": "holes, data (matched)",
    "naive_prior": "naive (prior)", "recon_nll": "recon NLL (nats)",
    "recon_mse": "recon MSE", "kl": "KL (nats)"}
HOLE_METRICS = METRICS[:5]
KL_CASES = ((0.0, 1.0), (2.0, 1.0), (0.0, 0.5), (1.5, 2.0), (3.0, 0.3))


def model_label(beta: float | None) -> str:
    """``'AE'`` for the autoencoder (``beta=None``), else ``'beta=B'``."""
    return AE if beta is None else f"beta={beta:g}"


# ---- the Gaussian KL check --------------------------------------------------------------


def kl_check_table(cases: Sequence[tuple[float, float]] = KL_CASES, num_random: int = 5,
                   num_samples: int = 200_000, seed: int = 0) -> list[dict]:
    """The closed-form KL(N(mu, sigma^2) || N(0, 1)) against a Monte Carlo average of
    log q(z) - log p(z), z ~ q, for the given cases and ``num_random`` random ones
    (mu ~ U(-3, 3), sigma ~ exp(U(-1.5, 1))). ``z`` = (MC - closed form) / standard error."""
    generator = torch.Generator().manual_seed(seed)
    rand = torch.rand(num_random, 2, generator=generator, dtype=torch.float64)
    random_cases = [(6 * a - 3, math.exp(2.5 * b - 1.5)) for a, b in rand.tolist()]
    rows = []
    for kind, (mu, sigma) in [("given", c) for c in cases] + [("random", c) for c in random_cases]:
        z = mu + sigma * torch.randn(num_samples, generator=generator, dtype=torch.float64)
        log_ratio = (torch.distributions.Normal(mu, sigma).log_prob(z)
                     - torch.distributions.Normal(0.0, 1.0).log_prob(z))
        closed = gaussian_kl(mu, sigma)
        mc, stderr = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(num_samples)
        rows.append({"case": kind, "mu": mu, "sigma": sigma, "closed_form": closed,
                     "monte_carlo": mc, "std_error": stderr,
                     "z": (mc - closed) / stderr if stderr > 0 else 0.0})
    return rows


# ---- the metrics on constructed configurations ------------------------------------------

def _toy_decoder(z: torch.Tensor) -> torch.Tensor:
    """A fixed smooth map R^2 -> R^5 standing in for a decoder in the constructed cases."""
    z1, z2 = z[:, 0], z[:, 1]
    return torch.stack([z1, z2, torch.sin(z1), z1 * z2 / 3, 2 * torch.tanh(z2)], 1)


@dataclass
class ConstructedCase:
    """A latent configuration whose hole fraction is known by construction."""

    name: str
    expected: str          # "none" (the fraction should be alpha) or "most"
    locs: torch.Tensor
    scales: torch.Tensor
    reference: torch.Tensor        # held-out codes z' ~ q(z|x')
    train_codes: torch.Tensor      # z_n ~ q(z|x_n): what the decoder's training data encode
    prior_draws: torch.Tensor
    decoder: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    draws_from: str = "prior"      # "prior" or "matched"


def constructed_cases(num_codes: int = 1000, num_draws: int = 4000, num_reference: int = 2000,
                      seed: int = 0) -> list[ConstructedCase]:
    """Latent configurations with known answers (d = 2, prior N(0, I), decoder a fixed map):

    * ``covered``: codes mu ~ N(0, I), sigma = 0.05; q(z) ~= p(z): no holes.
    * ``shrunk codes, matching variances``: mu = 0.1 m, m ~ N(0, I), sigma^2 = 0.99, so
      q(z) = N(0, I) = p(z) exactly: no holes (the naive measure sees many).
    * ``covered, all rescaled x10``: ``covered`` with codes, scales, draws and decoder input all
      multiplied by 10 (the same model in other units): no holes (the naive measure changes).
    * ``clusters with gaps``: codes in two clusters at (+-3, 0): most prior draws fall in the
      gap, a hole.
    * ``AE at 1/10 scale``: point-mass codes mu ~ N(0, 0.01 I) (an autoencoder's arbitrary
      scale): most prior draws are holes; ``..., matched draws`` draws from the Gaussian
      matched to the codes instead: no holes.
    """
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64

    def normal(*shape):
        return torch.randn(*shape, generator=g, dtype=dt)

    def case(name, expected, locs, scales, reference, decoder=_toy_decoder, prior_scale=1.0,
             draws_from="prior"):
        train_codes = locs + scales * normal(*locs.shape)
        return ConstructedCase(name, expected, locs, scales, reference, train_codes,
                               prior_scale * normal(num_draws, 2), decoder, draws_from)

    n, r = num_codes, num_reference
    signs = torch.where(torch.rand(n + r, 1, generator=g, dtype=dt) < 0.5, 1.0, -1.0)
    centres = signs * torch.tensor([3.0, 0.0], dtype=dt)
    cluster_locs = centres + 0.3 * normal(n + r, 2)
    tiny = 0.1 * normal(n + r, 2)
    return [
        case("covered", "none", normal(n, 2), torch.full((n, 2), 0.05, dtype=dt),
             normal(r, 2)),
        case("shrunk codes, matching variances", "none", 0.1 * normal(n, 2),
             torch.full((n, 2), math.sqrt(0.99), dtype=dt), normal(r, 2)),
        case("covered, all rescaled x10", "none", 10 * normal(n, 2),
             torch.full((n, 2), 0.5, dtype=dt), 10 * normal(r, 2),
             decoder=lambda z: _toy_decoder(z / 10), prior_scale=10.0),
        case("clusters with gaps", "most", cluster_locs[:n], torch.full((n, 2), 0.3, dtype=dt),
             cluster_locs[n:] + 0.3 * normal(r, 2)),
        case("AE at 1/10 scale", "most", tiny[:n], torch.zeros(n, 2, dtype=dt), tiny[n:]),
        case("AE at 1/10 scale, matched draws", "none", tiny[:n], torch.zeros(n, 2, dtype=dt),
             tiny[n:], draws_from="matched"),
    ]


def metric_check_table(alpha: float = DEFAULT_ALPHA, naive_threshold: float = 0.5,
                       seed: int = 0) -> list[dict]:
    """The latent, data-space and naive hole fractions on :func:`constructed_cases`, with the
    answer each should give ("none" means the fraction should be alpha)."""
    rows = []
    for c in constructed_cases(seed=seed):
        draws = c.prior_draws
        if c.draws_from == "matched":
            matched = matched_gaussian(c.locs, c.scales)
            draws = matched.sample((len(draws),))
        rows.append({
            "case": c.name, "expected": c.expected, "alpha": alpha,
            "latent": latent_hole_fraction(draws, c.locs, c.scales, c.reference, alpha).fraction,
            "data": data_hole_fraction(c.decoder(draws), c.decoder(c.reference),
                                       c.decoder(c.train_codes), alpha).fraction,
            "naive": naive_hole_fraction(draws, c.locs, naive_threshold).fraction})
    return rows


# ---- the study ---------------------------------------------------------------------------

@dataclass
class HolesStudyResult:
    """Everything the study measured; ``to_markdown()`` renders it, ``save(dir)`` writes it."""

    dataset: str
    table: list[dict]          # one row per model: mean and sd of every metric over seeds
    runs: list[dict]           # one row per (model, seed)
    sweep: list[dict]          # beta sweep (first seed): recon, KL and hole fractions
    kl_check: list[dict]
    metric_check: list[dict]
    settings: dict
    figure: object = field(default=None, repr=False)      # matplotlib Figure
    reports: dict = field(default_factory=dict, repr=False)   # (label, seed) -> HoleReport
    histories: dict = field(default_factory=dict, repr=False)  # label -> FitResult (seed 0)

    def trend(self) -> dict[str, dict]:
        """For each hole metric: the mean per model in study order, and each change between
        consecutive VAEs (beta rising), from the smallest to the largest beta, and from the
        autoencoder to beta = 0, each called "falls" / "rises" when the difference of means
        exceeds the sum of the two seed sds and "flat" otherwise (a conservative test)."""
        out = {}
        for metric in HOLE_METRICS:
            means = {row["model"]: row[metric] for row in self.table}
            sds = {row["model"]: row[metric + "_sd"] for row in self.table}

            def change(a, b, means=means, sds=sds):
                diff = means[b] - means[a]
                direction = ("flat" if abs(diff) <= sds[a] + sds[b] else
                             "falls" if diff < 0 else "rises")
                return {"from": a, "to": b, "difference": diff, "direction": direction}

            vaes = [row["model"] for row in self.table if row["model"] != AE]
            steps = [change(a, b) for a, b in zip(vaes, vaes[1:], strict=False)]
            out[metric] = {
                "means": means, "steps": steps,
                "overall": change(vaes[0], vaes[-1]) if len(vaes) > 1 else None,
                "ae_vs_beta0": change(AE, "beta=0") if AE in means and "beta=0" in means
                else None}
        return out

    def to_markdown(self) -> str:
        alpha = self.settings["alpha"]
        lines = [f"## Holes study: {self.dataset}", "",
                 f"{len(self.settings['seeds'])} seeds {list(self.settings['seeds'])}, "
                 f"z_dim={self.settings['z_dim']}, epochs={self.settings['epochs']}, "
                 f"likelihood={self.settings['likelihood']}, data-space distance "
                 f"{self.settings['data_distance']}; hole fractions in %, "
                 f"no holes = {100 * alpha:g}% (alpha); naive threshold "
                 f"{self.settings['naive_threshold']} latent units. Mean +- sd over seeds.", ""]
        header = ["model"] + [METRIC_LABELS[m] for m in METRICS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.table:
            cells = [row["model"]]
            for metric in METRICS:
                factor = 100.0 if metric in HOLE_METRICS else 1.0
                cells.append(_mean_sd(row[metric] * factor, row[metric + "_sd"] * factor))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "### Beta sweep (first seed)", "",
                  "| beta | recon NLL | KL | holes latent (prior) | holes data (prior) |",
                  "|---|---|---|---|---|"]
        for row in self.sweep:
            lines.append(f"| {row['beta']:g} | {row['recon_nll']:.2f} | {row['kl']:.2f} | "
                         f"{100 * row['latent_prior']:.1f} | {100 * row['data_prior']:.1f} |")
        lines += ["", "### Closed-form vs Monte Carlo KL(N(mu, sigma^2) || N(0, 1))", "",
                  "| case | mu | sigma | closed form | Monte Carlo | std error | z |",
                  "|---|---|---|---|---|---|---|"]
        for row in self.kl_check:
            lines.append(f"| {row['case']} | {row['mu']:.3f} | {row['sigma']:.3f} | "
                         f"{row['closed_form']:.5f} | {row['monte_carlo']:.5f} | "
                         f"{row['std_error']:.5f} | {row['z']:+.2f} |")
        lines += ["", "### The measures on constructed configurations (in %)", "",
                  "| case | expected | latent | data | naive |", "|---|---|---|---|---|"]
        for row in self.metric_check:
            expected = f"~{100 * row['alpha']:g} (none)" if row["expected"] == "none" else "most"
            lines.append(f"| {row['case']} | {expected} | {100 * row['latent']:.1f} | "
                         f"{100 * row['data']:.1f} | {100 * row['naive']:.1f} |")
        lines += ["", "### Does the hole fraction fall as beta rises?", ""]
        lines += ["A change counts as falls/rises when the difference of means exceeds the "
                  "sum of the two seed sds; otherwise it is flat.", ""]

        def describe(change):
            return (f"{change['from']} -> {change['to']}: {change['direction']} "
                    f"({100 * change['difference']:+.1f} points)")

        for metric, verdict in self.trend().items():
            means = ", ".join(f"{k} {100 * v:.1f}%" for k, v in verdict["means"].items())
            parts = [describe(step) for step in verdict["steps"]]
            if verdict["overall"] is not None and len(verdict["steps"]) > 1:
                parts.append("overall " + describe(verdict["overall"]))
            if verdict["ae_vs_beta0"] is not None:
                parts.append(describe(verdict["ae_vs_beta0"]))
            lines.append(f"- {METRIC_LABELS[metric]}: {means}. " + "; ".join(parts))
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``holes_study.md``, ``holes_study.json`` and ``holes_figure.png`` into
        ``out_dir``; existing files are never overwritten (FileExistsError)."""
        targets = holes_study_files(out_dir)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        payload = {"dataset": self.dataset, "settings": self.settings, "table": self.table,
                   "runs": self.runs, "sweep": self.sweep, "kl_check": self.kl_check,
                   "metric_check": self.metric_check, "trend": self.trend()}
        atomic_write(targets["markdown"], self.to_markdown().encode())
        atomic_write(targets["json"], json.dumps(_jsonable(payload), indent=2).encode())
        if self.figure is not None:
            import io

            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
            atomic_write(targets["figure"], buffer.getvalue())
        return targets


def holes_study_files(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where a study saves into ``out_dir``; FileExistsError if any of them exists."""
    out_dir = Path(out_dir)
    targets = {"markdown": out_dir / "holes_study.md", "json": out_dir / "holes_study.json",
               "figure": out_dir / "holes_figure.png"}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite {existing}; choose another out_dir "
                              "or move the old results away")
    return targets


def _mean_sd(mean: float, sd: float) -> str:
    if math.isinf(mean):
        return "inf"
    return f"{mean:.1f} +- {sd:.1f}" if abs(mean) >= 1 or mean == 0 else f"{mean:.3f} +- {sd:.3f}"


def _jsonable(value):
    """Plain JSON values: non-finite floats as the strings "inf", "-inf", "nan"."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _build(beta: float | None, x_dim: int, z_dim: int, likelihood: str, hidden,
           likelihood_options: dict | None) -> VAE:
    options = {"hidden": tuple(hidden), "likelihood": likelihood,
               "likelihood_options": likelihood_options}
    if beta is None:
        return autoencoder(x_dim, z_dim, **options)
    return VAE(x_dim, z_dim, beta=beta, **options)


@torch.no_grad()
def _measure(model, data: Dataset, report: HoleReport, particles: int = 10) -> dict:
    test = data.test
    recon = elbo_terms(model, test, num_particles=particles)["recon"].mean().item()
    kl_dims = kl_per_dimension(model, test)
    is_delta = bool((report.code_scales == 0).all())
    kl = math.inf if is_delta else (
        kl_dims.sum().item() if kl_dims is not None else
        elbo_terms(model, test, num_particles=particles)["kl"].mean().item())
    mse = (model.reconstruct(test) - test).pow(2).mean().item()
    return {**report.summary(), "recon_nll": -recon, "recon_mse": mse, "kl": kl}


def _aggregate(runs: list[dict], labels: list[str]) -> list[dict]:
    table = []
    for label in labels:
        rows = [r for r in runs if r["model"] == label]
        entry = {"model": label, "beta": rows[0]["beta"], "num_seeds": len(rows)}
        for metric in METRICS:
            values = np.array([r[metric] for r in rows], dtype=float)
            entry[metric] = float(values.mean())
            entry[metric + "_sd"] = (float(values.std(ddof=1)) if len(values) > 1 and
                                     np.isfinite(values).all() else 0.0)
        table.append(entry)
    return table


def run_holes_study(dataset: Dataset | str = "digits", *, betas: Sequence[float] = (0.0, 1.0, 4.0),
                    include_autoencoder: bool = True, seeds: Sequence[int] = (0, 1, 2),
                    z_dim: int = 2, hidden: Sequence[int] = (256, 256), epochs: int = 100,
                    batch_size: int = 128, lr: float = 1e-3, estimator: str = "meanfield",
                    likelihood: str | None = None, likelihood_options: dict | None = None,
                    sweep_betas: Sequence[float] | None = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                    num_draws: int = 2000, alpha: float = DEFAULT_ALPHA,
                    naive_threshold: float = 0.5, data_distance: str = "likelihood",
                    max_points: int | None = 5000,
                    kl_samples: int = 200_000, device: str = "cpu", quiet: bool = True,
                    figure: bool = True, out_dir: str | os.PathLike | None = None,
                    dataset_options: dict | None = None) -> HolesStudyResult:
    """Fit the autoencoder and a VAE per beta on ``dataset`` (a :class:`Dataset` or a name
    for :func:`pyro_vae.load_dataset`, e.g. ``"digits"`` or ``"gw"``) for every seed, and
    measure hole fractions (on draws of ``num_draws``), reconstruction and KL on the test split.

    ``likelihood`` defaults to the dataset's suggestion. ``sweep_betas`` adds fits (first seed
    only) for the beta trade-off panel; ``None`` skips them. ``out_dir`` saves the markdown,
    JSON and figure there (never overwriting). Data passed as a name is loaded with
    ``binarize=True`` for digits/MNIST unless ``dataset_options`` says otherwise.
    """
    if out_dir is not None:
        holes_study_files(out_dir)   # refuse before hours of training, not after
    dataset = as_dataset(dataset, dataset_options)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed, e.g. seeds=(0,)")
    if any(not b >= 0 for b in betas) or not betas:
        raise ValueError(f"betas must be a non-empty sequence of numbers >= 0; got {betas!r}")
    likelihood = likelihood or dataset.suggested_likelihood
    models = ([None] if include_autoencoder else []) + [float(b) for b in betas]
    labels = [model_label(b) for b in models]
    settings = {"dataset": dataset.name, "betas": [float(b) for b in betas],
                "include_autoencoder": include_autoencoder, "seeds": seeds, "z_dim": z_dim,
                "hidden": list(hidden), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "estimator": estimator, "likelihood": likelihood,
                "likelihood_options": likelihood_options, "num_draws": num_draws,
                "alpha": alpha, "naive_threshold": naive_threshold,
                "data_distance": data_distance, "max_points": max_points,
                "num_train": len(dataset.train), "num_test": len(dataset.test),
                "sweep_betas": None if sweep_betas is None else [float(b) for b in sweep_betas]}

    def run_one(beta, seed):
        torch.manual_seed(seed)
        model = _build(beta, dataset.x_dim, z_dim, likelihood, hidden, likelihood_options)
        history = fit(model, dataset.train, estimator=estimator, epochs=epochs,
                      batch_size=min(batch_size, len(dataset.train)), lr=lr, seed=seed,
                      device=device, quiet=quiet)
        model.to("cpu")
        report = hole_fractions(model, dataset.train, dataset.test, num_draws=num_draws,
                                alpha=alpha, naive_threshold=naive_threshold,
                                data_distance=data_distance, max_points=max_points, seed=seed)
        row = {"model": model_label(beta), "beta": beta, "seed": seed,
               **_measure(model, dataset, report), "fit_seconds": history.seconds}
        return model, history, report, row

    runs, reports, histories, fitted = [], {}, {}, {}
    for seed in seeds:
        for beta in models:
            model, history, report, row = run_one(beta, seed)
            runs.append(row)
            reports[(row["model"], seed)] = report
            if seed == seeds[0]:
                histories[row["model"]] = history
                fitted[row["model"]] = model
    sweep = []
    for beta in (sweep_betas or ()):
        label = model_label(float(beta))
        existing = [r for r in runs if r["model"] == label and r["seed"] == seeds[0]]
        row = existing[0] if existing else run_one(float(beta), seeds[0])[3]
        sweep.append({"beta": float(beta), **{k: row[k] for k in METRICS}})
    result = HolesStudyResult(
        dataset=dataset.name, table=_aggregate(runs, labels), runs=runs, sweep=sweep,
        kl_check=kl_check_table(num_samples=kl_samples), settings=settings,
        metric_check=metric_check_table(alpha, naive_threshold), reports=reports,
        histories=histories)
    if figure:
        result.figure = holes_figure(result, fitted, dataset, autoencoder_label=AE)
    if out_dir is not None:
        result.save(out_dir)
    return result
