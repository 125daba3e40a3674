"""Likelihoods p(x | z): how the decoder's output ``theta`` becomes a distribution over x.

The decoder produces one value per feature (``theta``, shape ``(..., x_dim)``): logits,
a location or a log-rate. Scale, shape and dispersion parameters are global (one per
feature, or one in all) and learned. Each likelihood states the data it accepts
(:attr:`Likelihood.support`) and :meth:`Likelihood.check_data` rejects other data with an
error that names the fix.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from pyro_vae.models._validation import check_positive_int

_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) == 1


class DataSupportError(ValueError):
    """Data outside the support of the chosen likelihood."""


class Likelihood(PyroModule):
    """Base class: subclasses implement ``distribution(theta)`` with event_shape (x_dim,)."""

    #: what the likelihood accepts, in words (shown in errors and docs)
    support = "any finite real values"

    def __init__(self, x_dim: int):
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")

    def distribution(self, theta: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, theta: torch.Tensor) -> torch.Tensor:
        """E[x | z] for display (samples and reconstructions)."""
        return self.distribution(theta).mean

    def forward(self, theta: torch.Tensor, x: torch.Tensor | None = None, name: str = "x"):
        return pyro.sample(name, self.distribution(theta), obs=x)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise :class:`DataSupportError` unless every value of x lies in :attr:`support`."""
        bad = self._outside_support(x)
        if bool(bad.any()):
            example = x[bad][:3].tolist()
            raise DataSupportError(
                f"{type(self).__name__} expects {self.support}, but {int(bad.sum())} of "
                f"{x.numel()} values are not (e.g. {example}). {self._fix_hint}"
            )

    _fix_hint = ""

    def _outside_support(self, x: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(x)


#: on a CPU, softplus is summed over this many logits at a time (256 KiB of float32, which
#: stays in a core's L2 cache), so the softplus values never travel to memory and back
SOFTPLUS_BLOCK = 2 ** 16


def softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """sum_d softplus(l_d) = sum_d log(1 + e^{l_d}) over the last dim.

    On a CPU (without autograd) in blocks of about :data:`SOFTPLUS_BLOCK` values, each as
    exp, + 1 and log in place: rounding 1 + e^l moves a term by at most 2^-24, so log1p's
    slower polynomial buys nothing in the sum; rows where e^l overflows (l > 88) are redone
    with torch's softplus."""
    if logits.device.type != "cpu" or (logits.requires_grad and torch.is_grad_enabled()):
        return F.softplus(logits).sum(-1)
    rows = logits.reshape(-1, logits.shape[-1])
    step = max(1, SOFTPLUS_BLOCK // max(1, rows.shape[1]))
    sums = rows.new_empty(rows.shape[0])
    values = rows.new_empty(min(step, rows.shape[0]), rows.shape[1])
    for start in range(0, rows.shape[0], step):
        block = rows[start:start + step]
        terms = torch.exp(block, out=values[:len(block)]).add_(1.0).log_()
        torch.sum(terms, -1, out=sums[start:start + len(block)])
    overflowed = torch.isinf(sums)
    if bool(overflowed.any()):
        sums[overflowed] = F.softplus(rows[overflowed]).sum(-1)
    return sums.reshape(logits.shape[:-1])


def bernoulli_log_density(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_d log Bernoulli(x_d | sigmoid(l_d)) = sum_d [x_d l_d - softplus(l_d)] over the last
    dim, x broadcast against the logits: ``Bernoulli(logits=l).to_event(1).log_prob(x)`` to
    float rounding, without the temporaries the size of l that Pyro's ``log_prob`` (through
    ``binary_cross_entropy_with_logits``) writes and reads back."""
    x = x.to(logits.dtype)
    if x.numel() < logits.numel():   # x reused across particles: a batched matrix product
        dot = torch.einsum("...d,...d->...", logits, x)
    else:
        dot = (logits * x).sum(-1)
    return dot - softplus_sum(logits)


def _broadcast_dims_cut(t: torch.Tensor) -> torch.Tensor:
    """t with each leading dim that is only a broadcast (stride 0) cut to size 1."""
    return t[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in t.stride()[:-1])]


def normal_log_density(value: torch.Tensor, loc: torch.Tensor,
                       scale: torch.Tensor) -> torch.Tensor:
    """sum_d log N(v_d; mu_d, sigma_d) = -1/2 sum_d ((v_d - mu_d) / sigma_d)^2 - sum_d log sigma_d
    - D/2 log 2 pi over the last dim: ``Normal(loc, scale).to_event(1).log_prob(value)`` to
    float rounding, with log sigma taken once per distinct sigma (not per particle when the
    scale is broadcast over them) and the standardised values squared in place."""
    standard = (value - loc).div_(scale)
    log_scale = _broadcast_dims_cut(scale.expand(standard.shape)).log().sum(-1)
    return (-0.5 * standard.pow_(2).sum(-1) - log_scale
            - standard.shape[-1] * 0.5 * math.log(2 * math.pi))


class BernoulliLikelihood(Likelihood):
    """x_d ~ Bernoulli(sigmoid(theta_d)), for binary data.

    ``grey_levels=True`` also accepts values in [0, 1] and scores them by the Bernoulli
    cross-entropy sum_d [x_d log mu_d + (1 - x_d) log(1 - mu_d)], as Pyro's VAE examples and
    Kingma et al. (2014) do with grey-level MNIST. That is not a normalised density on [0, 1]
    (``continuous_bernoulli`` is), so a "log p(x)" of grey-level data under it is a score,
    comparable only between models with this same likelihood; its draws are still binary.
    """

    support = "binary values in {0, 1}"
    _fix_hint = ("Binarize the data (e.g. (x > 0.5).float(), or load_dataset(..., "
                 "binarize=True)), or use likelihood='continuous_bernoulli' for values in [0, 1] "
                 "(or likelihood_options grey_levels=true for the Bernoulli cross-entropy).")

    def __init__(self, x_dim: int, grey_levels: bool = False):
        super().__init__(x_dim)
        if not isinstance(grey_levels, bool):
            raise TypeError(f"grey_levels must be true or false; got {grey_levels!r}")
        self.grey_levels = grey_levels
        if grey_levels:
            self.support = "values in the interval [0, 1] (grey levels)"

    def distribution(self, theta):
        # grey levels are outside a Bernoulli's support: its validation would refuse them
        return dist.Bernoulli(logits=theta,
                              validate_args=False if self.grey_levels else None).to_event(1)

    def _outside_support(self, x):
        if self.grey_levels:
            return ~((x >= 0) & (x <= 1))
        return (x != 0) & (x != 1)


class ContinuousBernoulliLikelihood(Likelihood):
    """x_d ~ ContinuousBernoulli(sigmoid(theta_d)) (Loaiza-Ganem & Cunningham 2019), for
    values in [0, 1]; unlike the Bernoulli it is a normalised density on the unit interval."""

    support = "values in the interval [0, 1]"
    _fix_hint = ("Rescale the data to [0, 1] (e.g. x / x.max()), or use likelihood='normal' "
                 "for unbounded real data.")

    def distribution(self, theta):
        return dist.ContinuousBernoulli(logits=theta).to_event(1)

    def _outside_support(self, x):
        return ~((x >= 0) & (x <= 1))


class _RealLikelihood(Likelihood):
    support = "finite real values"
    _fix_hint = "Remove or impute the non-finite values."


class _PerFeatureScale(nn.Module):
    """sigma = softplus(rho) + min_scale, either one value or one per feature."""

    def __init__(self, x_dim: int, per_feature: bool, init: float = 1.0, min_scale: float = 1e-3):
        super().__init__()
        init_raw = math.log(math.expm1(max(init - min_scale, 1e-6)))
        self.raw = nn.Parameter(torch.full((x_dim if per_feature else 1,), init_raw))
        self.min_scale = min_scale

    def forward(self) -> torch.Tensor:
        return F.softplus(self.raw) + self.min_scale


class NormalLikelihood(_RealLikelihood):
    """x_d ~ N(theta_d, sigma^2). ``scale='fixed'`` keeps sigma at ``sigma``;
    ``'shared'`` learns one sigma; ``'per_feature'`` learns one sigma per feature."""

    def __init__(self, x_dim: int, scale: str = "fixed", sigma: float = 1.0):
        super().__init__(x_dim)
        if scale not in ("fixed", "shared", "per_feature"):
            raise ValueError(f"NormalLikelihood scale must be 'fixed', 'shared' or "
                             f"'per_feature'; got {scale!r}")
        if not sigma > 0:
            raise ValueError(f"NormalLikelihood needs sigma > 0; got sigma={sigma}")
        self.scale_mode = scale
        self.sigma = float(sigma)
        self.learned_scale = (None if scale == "fixed" else
                              _PerFeatureScale(x_dim, scale == "per_feature", init=sigma))

    def scale(self, theta: torch.Tensor) -> torch.Tensor:
        if self.learned_scale is None:
            return theta.new_full((self.x_dim,), self.sigma)
        return self.learned_scale().expand(self.x_dim)

    def distribution(self, theta):
        return dist.Normal(theta, self.scale(theta)).to_event(1)


class LaplaceLikelihood(_RealLikelihood):
    """x_d ~ Laplace(theta_d, b_d) with a learned scale b_d per feature (robust to outliers)."""

    def __init__(self, x_dim: int):
        super().__init__(x_dim)
        self.learned_scale = _PerFeatureScale(x_dim, per_feature=True)

    def distribution(self, theta):
        return dist.Laplace(theta, self.learned_scale().expand(self.x_dim)).to_event(1)


class StudentTLikelihood(_RealLikelihood):
    """x_d ~ StudentT(nu, theta_d, s_d): learned per-feature scale s_d and shared df nu > 1."""

    def __init__(self, x_dim: int, init_df: float = 4.0):
        super().__init__(x_dim)
        self.learned_scale = _PerFeatureScale(x_dim, per_feature=True)
        self.raw_df = nn.Parameter(torch.tensor(math.log(math.expm1(init_df - 1.0))))

    def df(self) -> torch.Tensor:
        return 1.0 + F.softplus(self.raw_df)

    def distribution(self, theta):
        df = self.df().expand(self.x_dim)
        return dist.StudentT(df, theta, self.learned_scale().expand(self.x_dim)).to_event(1)

    def mean(self, theta):
        return theta


class _CountLikelihood(Likelihood):
    support = "non-negative integer counts"
    _fix_hint = ("Round or convert the data to counts, or use likelihood='normal' for "
                 "continuous data.")

    def _outside_support(self, x):
        return ~(torch.isfinite(x) & (x >= 0) & (x == torch.round(x)))


class PoissonLikelihood(_CountLikelihood):
    """x_d ~ Poisson(lambda_d) with lambda_d = softplus(theta_d) (stabler than exp)."""

    def distribution(self, theta):
        return dist.Poisson(F.softplus(theta) + 1e-6).to_event(1)


class NegativeBinomialLikelihood(_CountLikelihood):
    """x_d ~ NegBinomial(r_d, logits=theta_d): mean r_d exp(theta_d), learned dispersion r_d.
    Overdispersed counts: Var = mean (1 + mean / r_d)."""

    def __init__(self, x_dim: int):
        super().__init__(x_dim)
        self.raw_total_count = nn.Parameter(torch.full((x_dim,), _SOFTPLUS_ONE))

    def total_count(self) -> torch.Tensor:
        return F.softplus(self.raw_total_count) + 1e-4

    def distribution(self, theta):
        return dist.NegativeBinomial(self.total_count().expand(self.x_dim),
                                     logits=theta).to_event(1)
