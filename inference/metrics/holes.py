"""Holes in the latent space: where draws z ~ g(z) land outside what the decoder was trained on.

A *hole* is a region the generating distribution g (the prior p(z), or the Gaussian matched
to the codes) reaches but the decoder never saw during training. Two measures, each compared
with held-out data so that "no holes" reads as the stated fraction ``alpha`` (default 5%):

**Latent space.** The decoder is trained on z ~ q(z) = (1/N) sum_n q(z|x_n), the aggregate
posterior. Its density is estimated from the training codes with the encoders' variances,

    q_hat(z) = (1/N) sum_n N(z; mu_n, diag(s_n^2)),   s_nj = max(sigma_nj, h_j),

where h_j = N^(-1/(d+4)) sd_n(mu_nj) (Scott's rule) is a kernel floor: a point mass (an
autoencoder, sigma = 0) or a collapsed variance (beta = 0) becomes a kernel density estimate
of the codes, and an encoder wider than h is used as it is. A draw z ~ g is a hole when

    q_hat(z) < t_alpha,   t_alpha = alpha-quantile of q_hat(z') over z' ~ q(z|x'), x' held out,

i.e. when the decoder's training density there is lower than at all but alpha of held-out
codes. H_latent = P_{z~g}[q_hat(z) < t_alpha]; it is alpha when g equals the aggregate
posterior.

**Data space.** Decode the draws and ask how well the decoder's output at z matches the
nearest training point, d(z) = min_n -log p(x_n | z) (the model's own likelihood as the
distance: squared Euclidean up to constants for a Normal likelihood with fixed sigma,
cross-entropy for a Bernoulli), or d(z) = min_n ||E[x|z] - x_n||_2. A draw is a hole when

    d(z) > tau_alpha,   tau_alpha = (1 - alpha)-quantile of d(z'), z' ~ q(z|x'), x' held out,

i.e. when its decoding is farther from the training data than all but alpha of the decoded
held-out codes are. Both sides pass through the decoder, so blur (which every decoded mean
has) is not counted as a hole; reconstruction error measures blur separately. (Comparing
decoded means with raw held-out data instead, ``data_hole_fraction(decoded, heldout, train)``,
mixes blur with holes; and under the Euclidean distance a sharp but wrong binary image can sit
closer to the data than a blurry correct one, which is why the likelihood is the default.)

**Draws.** g is either the model's prior p(z) (what sampling from the model does), or the
*matched* Gaussian N(m, S) with the aggregate posterior's mean and covariance,
m = mean_n mu_n, S = Cov_n(mu_n) + mean_n diag(sigma_n^2). Matched draws ask whether the codes
fill a Gaussian blob at their own location and scale; prior draws also count any mismatch of
location or scale between codes and prior. An autoencoder's objective (and a beta = 0 VAE's)
does not depend on the latent scale, so its prior-draw fractions reflect a scale picked by
initialisation and training; its matched-draw fractions do not.

**Invariances.** Map the latent space by z -> A z + b with diagonal A (any invertible linear
A when the kernel floor is off): codes, encoder scales, kernel floor, held-out codes and draws
move together, density ratios and distances in data space do not change, so both measures are
unchanged; the data measure is unchanged by any invertible map. In particular, shrinking all
codes toward the origin (mu -> c mu, sigma -> c sigma) while the decoder compensates
(f -> f(./c)) leaves the decoded data unchanged and leaves every matched-draw fraction
unchanged (the matched Gaussian shrinks with the codes). With the prior held fixed, the same
shrinking *does* change what prior draws decode to, and the prior-draw fractions change with
it, as they should.

**The naive measure** (a draw is a hole when its distance to the nearest code mean exceeds a
fixed threshold) has neither property: it ignores the encoders' variances (codes shrunk toward
the origin with variances that keep q(z) = p(z) look like holes) and it depends on the latent
scale through its fixed threshold. It is here only to show that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from pyro import poutine

from pyro_vae.inference.batching import as_source, ordered_batches
from pyro_vae.inference.evaluation import is_point_mass
from pyro_vae.inference.log_densities import unwrap_distribution
from pyro_vae.inference.random_state import restores_random_state
from pyro_vae.models._validation import unknown_name_error

DEFAULT_ALPHA = 0.05


@dataclass
class HoleFraction:
    """A hole fraction and what it was computed from."""

    fraction: float
    alpha: float          # the no-holes value: the held-out reference's own exceedance rate
    threshold: float      # the (1 - alpha)-quantile of the reference's scores
    is_hole: torch.Tensor = field(repr=False)   # (M,) bool, one per draw
    scores: torch.Tensor = field(repr=False)    # (M,) atypicality per draw (higher = worse):
    #                                             -log q_hat(z), a distance, or an NLL

    def __float__(self) -> float:
        return self.fraction


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha (the reference quantile) must lie in (0, 1); got {alpha!r}. "
                         "The default 0.05 calls a draw a hole when it is less typical than "
                         "95% of held-out data.")
    return float(alpha)


def _check_points(points, name: str, dim: int | None = None) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or len(points) == 0:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"{name} must be a non-empty tensor of shape (num_points, dim); got "
                         f"{shape}")
    if dim is not None and points.shape[1] != dim:
        raise ValueError(f"{name} has dimension {points.shape[1]} but the codes have {dim}; "
                         "pass points in the same space")
    return points


def scott_bandwidth(locs: torch.Tensor) -> torch.Tensor:
    """Scott's rule per dimension: h_j = N^(-1/(d+4)) sd_n(locs_nj), shape (d,)."""
    n, d = locs.shape
    spread = locs.std(0, unbiased=True) if n > 1 else locs.new_zeros(d)
    return spread * n ** (-1.0 / (d + 4))


def kernel_scales(locs: torch.Tensor, scales: torch.Tensor, bandwidth="scott") -> torch.Tensor:
    """The component scales s_nj = max(sigma_nj, h_j) of q_hat; ``bandwidth`` is ``"scott"``,
    a number (latent units) or a (d,) tensor; 0 keeps the encoders' scales as they are."""
    if isinstance(bandwidth, str):
        if bandwidth != "scott":
            raise ValueError(f"bandwidth must be 'scott', a number >= 0 or a tensor; got "
                             f"{bandwidth!r}")
        floor = scott_bandwidth(locs)
    else:
        floor = torch.as_tensor(bandwidth, dtype=locs.dtype, device=locs.device)
        if bool((floor < 0).any()):
            raise ValueError(f"bandwidth must be >= 0; got {bandwidth!r}")
    floored = torch.maximum(scales, floor.expand_as(scales))
    if not bool((floored > 0).all()):
        raise ValueError("some codes have zero scale and no kernel floor: a point mass has no "
                         "density. Use bandwidth='scott' (the default) or a positive number.")
    return floored


def aggregate_log_density(z: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor,
                          chunk_elements: int = 2 ** 22) -> torch.Tensor:
    """log q_hat(z) = log (1/N) sum_n N(z; locs_n, diag(scales_n^2)) for each row of z, (M,)."""
    n, d = locs.shape
    log_norm = -torch.log(scales).sum(-1) - 0.5 * d * math.log(2 * math.pi)   # (N,)
    inv = scales.reciprocal()
    rows = max(1, chunk_elements // max(1, n * d))
    out = []
    for start in range(0, len(z), rows):
        block = z[start:start + rows]
        standardised = (block[:, None, :] - locs[None]) * inv[None]            # (m, N, d)
        log_comp = log_norm - 0.5 * standardised.pow(2).sum(-1)                # (m, N)
        out.append(torch.logsumexp(log_comp, dim=1) - math.log(n))
    return torch.cat(out)


def matched_gaussian(locs: torch.Tensor, scales: torch.Tensor
                     ) -> torch.distributions.MultivariateNormal:
    """The Gaussian with the aggregate posterior's mean and covariance:
    m = mean_n mu_n, S = Cov_n(mu_n) + mean_n diag(sigma_n^2) (law of total variance)."""
    mean = locs.mean(0)
    centred = locs - mean
    cov = centred.T @ centred / len(locs) + torch.diag(scales.pow(2).mean(0))
    cov = cov + 1e-9 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(
        len(mean), dtype=cov.dtype, device=cov.device)
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)


def exceedance_fraction(scores: torch.Tensor, reference_scores: torch.Tensor,
                        alpha: float = DEFAULT_ALPHA) -> HoleFraction:
    """The fraction of ``scores`` above the (1 - alpha)-quantile of ``reference_scores``
    (higher = more atypical): alpha in expectation when both come from one distribution."""
    alpha = _check_alpha(alpha)
    threshold = torch.quantile(reference_scores.double(), 1.0 - alpha).to(scores.dtype)
    is_hole = scores > threshold
    return HoleFraction(is_hole.double().mean().item(), alpha, threshold.item(), is_hole, scores)


def latent_hole_fraction(draws: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor,
                         reference: torch.Tensor, alpha: float = DEFAULT_ALPHA,
                         bandwidth="scott") -> HoleFraction:
    """H_latent = P_{z~g}[q_hat(z) < t_alpha] (see the module docstring).

    ``draws`` (M, d) come from g; ``locs``/``scales`` (N, d) are the training codes' encoder
    means and standard deviations (zeros for point masses); ``reference`` (R, d) are draws
    z' ~ q(z|x') for held-out x', which set t_alpha = alpha-quantile of log q_hat(z').
    Scores are -log q_hat(z).
    """
    locs = _check_points(locs, "locs")
    d = locs.shape[1]
    draws, reference = _check_points(draws, "draws", d), _check_points(reference, "reference", d)
    if scales.shape != locs.shape:
        raise ValueError(f"scales must have the shape of locs {tuple(locs.shape)}; got "
                         f"{tuple(scales.shape)}")
    component_scales = kernel_scales(locs, scales, bandwidth)
    return exceedance_fraction(-aggregate_log_density(draws, locs, component_scales),
                               -aggregate_log_density(reference, locs, component_scales), alpha)


def nearest_distance(points: torch.Tensor, data: torch.Tensor,
                     chunk_elements: int = 2 ** 24) -> torch.Tensor:
    """min_n ||points_m - data_n||_2 for each row of points, shape (M,)."""
    rows = max(1, chunk_elements // max(1, len(data)))
    out = [torch.cdist(points[s:s + rows], data).min(1).values
           for s in range(0, len(points), rows)]
    return torch.cat(out)


def data_hole_fraction(decoded: torch.Tensor, reference: torch.Tensor, train: torch.Tensor,
                       alpha: float = DEFAULT_ALPHA) -> HoleFraction:
    """H_data = P_{z~g}[d(f(z)) > tau_alpha] with d the distance to the nearest training point
    and tau_alpha the (1 - alpha)-quantile of d over ``reference`` (decoded held-out codes,
    or held-out data). ``decoded`` (M, D) are the decoded draws f(z)."""
    train = _check_points(train, "train")
    decoded = _check_points(decoded, "decoded", train.shape[1])
    reference = _check_points(reference, "reference", train.shape[1])
    return exceedance_fraction(nearest_distance(decoded, train),
                               nearest_distance(reference, train), alpha)


def naive_hole_fraction(draws: torch.Tensor, locs: torch.Tensor,
                        threshold: float = 0.5) -> HoleFraction:
    """The naive measure, kept to show its failure: P_z[min_n ||z - mu_n|| > threshold].
    It ignores the encoders' variances and depends on the latent scale."""
    locs = _check_points(locs, "locs")
    draws = _check_points(draws, "draws", locs.shape[1])
    scores = nearest_distance(draws, locs)
    is_hole = scores > threshold
    return HoleFraction(is_hole.double().mean().item(), float("nan"), float(threshold),
                        is_hole, scores)


# ---- the same measures for a fitted model ------------------------------------------------

@torch.no_grad()
def encoder_distributions(model, data, site: str = "z", batch_size: int = 1024
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The guide's (loc, scale) for every datapoint, each (N, d): a diagonal Normal's
    parameters, or the point and zeros for a point mass (Delta)."""
    locs, scales = [], []
    for batch in ordered_batches(as_source(data), batch_size):
        with poutine.block():
            trace = poutine.trace(model.guide).get_trace(*batch)
        if site not in trace.nodes:
            raise KeyError(f"the guide has no sample site {site!r}")
        fn = trace.nodes[site]["fn"]
        base = unwrap_distribution(fn)
        if is_point_mass(fn):
            loc, scale = base.v, torch.zeros_like(base.v)
        else:
            if not isinstance(base, torch.distributions.Normal):
                raise TypeError(
                    f"hole fractions need a diagonal Normal or point-mass guide at site "
                    f"{site!r}; got {type(base).__name__}. Use guide='diagonal' or 'delta'.")
            loc, scale = base.loc, base.scale
        shape = trace.nodes[site]["value"].shape
        locs.append(loc.expand(shape).reshape(-1, shape[-1]))
        scales.append(scale.expand(shape).reshape(-1, shape[-1]))
    return torch.cat(locs), torch.cat(scales)


@dataclass
class HoleReport:
    """Hole fractions of one model, for draws from its prior and from the matched Gaussian."""

    latent: dict[str, HoleFraction]   # keys "prior", "matched"
    data: dict[str, HoleFraction]
    naive: dict[str, HoleFraction]
    draws: dict[str, torch.Tensor] = field(repr=False)     # (M, d) per source
    decoded: dict[str, torch.Tensor] = field(repr=False)   # (M, D) per source
    codes: torch.Tensor = field(repr=False)                # (N, d) training code means
    code_scales: torch.Tensor = field(repr=False)
    train_index: torch.Tensor = field(repr=False)          # rows of train the codes are for
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Plain numbers: ``latent_prior``, ``data_prior``, ``naive_prior``, ``*_matched``."""
        out = {}
        for kind in ("latent", "data", "naive"):
            for source, value in getattr(self, kind).items():
                out[f"{kind}_{source}"] = value.fraction
        return out


def _subsample(x: torch.Tensor, limit: int | None, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``limit`` rows of x, chosen at random, and their indices."""
    if limit is None or len(x) <= limit:
        return x, torch.arange(len(x))
    index = torch.randperm(len(x), generator=generator)[:limit]
    return x[index.to(x.device)], index


def _pairwise_log_prob(fn, train: torch.Tensor) -> torch.Tensor | None:
    """log p(x_n | z_m) for all pairs, shape (M, N), by one matrix product where the
    likelihood is linear in x (Bernoulli) or quadratic with a shared scale (Normal); else None.
    Computed in float64: the Normal's expanded square loses digits in float32."""
    base = unwrap_distribution(fn)
    x = train.double()
    if isinstance(base, torch.distributions.Bernoulli):
        logits = base.logits.double()                       # log p = x.logits - softplus(logits)
        return logits @ x.T - torch.nn.functional.softplus(logits).sum(-1, keepdim=True)
    if isinstance(base, torch.distributions.Normal):
        scale = base.scale.double().expand(base.loc.shape)
        if not bool((scale == scale[:1]).all()):
            return None
        precision, loc = scale[0].pow(-2), base.loc.double()
        square = ((x * x) @ precision)[None, :] - 2 * (loc * precision) @ x.T + (
            (loc * loc) @ precision)[:, None]
        constant = -torch.log(scale[0]).sum() - 0.5 * x.shape[1] * math.log(2 * math.pi)
        return -0.5 * square + constant
    return None


@torch.no_grad()
def nearest_negative_log_likelihood(model, z: torch.Tensor, train: torch.Tensor,
                                    chunk_elements: int = 2 ** 24) -> torch.Tensor:
    """min_n -log p(x_n | z) for each row of z, shape (M,): how well the decoder's distribution
    at z explains the training point it explains best. Needs ``model.decoder`` and
    ``model.likelihood`` (every :class:`~pyro_vae.models.VAE`)."""
    theta = model.decoder(z)
    fast = _pairwise_log_prob(model.likelihood.distribution(theta), train)
    if fast is not None:
        return -fast.max(1).values.to(z.dtype)
    rows = max(1, chunk_elements // max(1, train.numel()))
    out = []
    for start in range(0, len(theta), rows):
        block = model.likelihood.distribution(theta[start:start + rows, None, :])
        out.append(-block.log_prob(train[None]).max(1).values)
    return torch.cat(out)


DATA_DISTANCES = ("likelihood", "euclidean")


@restores_random_state
@torch.no_grad()
def hole_fractions(model, train: torch.Tensor, heldout: torch.Tensor, *,
                   num_draws: int = 2000, alpha: float = DEFAULT_ALPHA, bandwidth="scott",
                   data_distance: str = "likelihood", naive_threshold: float = 0.5,
                   reference_draws: int = 5, max_points: int | None = 5000, seed: int = 0,
                   site: str = "z") -> HoleReport:
    """Latent, data-space and naive hole fractions of a fitted model, for draws from its
    prior (``model.sample_latent``) and from the Gaussian matched to its aggregate posterior.

    ``train`` builds q_hat and is the data that decoded draws are compared with; ``heldout``
    sets the thresholds (``reference_draws`` encoder draws per held-out point, decoded).
    ``data_distance`` is ``"likelihood"``, d(z) = min_n -log p(x_n | z) (the model's own
    likelihood as the distance; squared Euclidean up to constants for a Normal likelihood
    with fixed sigma) or ``"euclidean"``, d(z) = min_n ||E[x|z] - x_n||. ``max_points``
    subsamples train and held-out sets for speed. The model needs ``guide``,
    ``sample_latent(n)``, ``decode(z)``, and for ``"likelihood"`` ``decoder`` and
    ``likelihood`` (every :class:`~pyro_vae.models.VAE` has them).
    """
    if data_distance not in DATA_DISTANCES:
        raise unknown_name_error("data_distance", data_distance, DATA_DISTANCES)
    if not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer; got {num_draws!r}")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        generator = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        train, train_index = _subsample(train, max_points, generator)
        heldout, _ = _subsample(heldout, max_points, generator)
        train, heldout = train.to(device), heldout.to(device)
        locs, scales = encoder_distributions(model, train, site)
        held_locs, held_scales = encoder_distributions(model, heldout, site)
        noise = torch.randn((reference_draws,) + held_locs.shape, generator=generator).to(
            held_locs)
        held_codes = (held_locs + held_scales * noise).reshape(-1, locs.shape[1])
        matched = matched_gaussian(locs, scales)
        torch.manual_seed(seed)
        draws = {"prior": model.sample_latent(num_draws).reshape(num_draws, -1),
                 "matched": matched.sample((num_draws,))}
        decoded = {k: model.decode(z) for k, z in draws.items()}
        if data_distance == "likelihood":
            reference_scores = nearest_negative_log_likelihood(model, held_codes, train)
            data = {k: exceedance_fraction(nearest_negative_log_likelihood(model, z, train),
                                           reference_scores, alpha) for k, z in draws.items()}
        else:
            reference_points = model.decode(held_codes)
            data = {k: data_hole_fraction(y, reference_points, train, alpha)
                    for k, y in decoded.items()}
        report = HoleReport(
            latent={k: latent_hole_fraction(z, locs, scales, held_codes, alpha, bandwidth)
                    for k, z in draws.items()},
            data=data,
            naive={k: naive_hole_fraction(z, locs, naive_threshold) for k, z in draws.items()},
            draws=draws, decoded=decoded, codes=locs, code_scales=scales,
            train_index=train_index,
            settings={"alpha": alpha, "bandwidth": bandwidth, "data_distance": data_distance,
                      "num_draws": num_draws, "naive_threshold": naive_threshold,
                      "num_train": len(train), "num_heldout": len(heldout), "seed": seed})
    finally:
        if was_training:
            model.train()
    return report
