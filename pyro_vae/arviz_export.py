"""Posterior draws of the latent variables as ArviZ ``InferenceData`` (saved as netCDF).

For chosen datapoints x_n, ``chains x draws`` independent draws z ~ q(z | x_n) from the guide
and their importance log-weights log w = log p(x_n, z) - log q(z | x_n) become:

=================  ===================================================================
group              variables (dims)
=================  ===================================================================
``posterior``      ``z`` (chain, draw, datapoint, z_dim): draws from the guide;
                   ``z_resampled``: the same number of draws resampled with probability
                   proportional to w (sampling-importance-resampling), closer to p(z | x)
``sample_stats``   ``log_weight``, ``log_p_x_given_z``, ``log_p_z``, ``log_q_z_given_x``
                   (chain, draw, datapoint); per datapoint ``pareto_k`` (PSIS k-hat)
                   and ``importance_ess`` = (sum w)^2 / sum w^2
``observed_data``  ``x`` (datapoint, feature), and further model inputs
``log_likelihood`` ``x`` (chain, draw, datapoint): log p(x_n | z) of each draw, for
                   ``az.loo`` / ``az.waic``-style use (of the guide's draws, not MCMC's)
``posterior_predictive``  ``x`` (chain, draw, datapoint, feature): x_rep ~ p(x | z) for
                   each guide draw z ~ q(z | x_n) (replicates of datapoint n)
``prior_predictive``  ``x`` (chain, draw, datapoint, feature): z ~ p(z), x ~ p(x | z)
                   (with the datapoint's other inputs, e.g. its label)
=================  ===================================================================

So ``az.plot_ppc(idata)`` and ``az.plot_ppc(idata, group="prior")`` work as on any Pyro
MCMC result, and :func:`pyro_vae.plots.plot_ppc` compares summary statistics of the
replicates with the data's.

Chains are independent batches of independent guide draws, so ``r_hat`` is 1 up to noise.
Resampled draws repeat, and ``az.ess`` cannot see that (they come in random order): the
information they hold is ``importance_ess``, not their count. ArviZ does the rest:
``az.summary``, ``az.plot_posterior``, ``az.ess``, ``to_netcdf``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pyro_vae.inference.batching import as_source
from pyro_vae.inference.diagnostics import (
    MIN_KHAT_SAMPLES,
    importance_draws,
    khat_from_log_weights,
)
from pyro_vae.inference.log_densities import prior_predictive_draws
from pyro_vae.inference.random_state import restores_random_state
from pyro_vae.io import atomic_path
from pyro_vae.models._validation import check_positive_int


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _latent_dims(site: str, event_shape: Sequence[int]) -> list[str]:
    if len(event_shape) == 1:
        return [f"{site}_dim"]
    return [f"{site}_dim_{i}" for i in range(len(event_shape))]


def _check_indices(indices, n: int) -> list[int]:
    if indices is None:
        return list(range(min(10, n)))
    indices = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
    if not indices:
        raise ValueError("indices must name at least one datapoint")
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise IndexError(f"indices {bad[:5]} are outside the data's {n} datapoints "
                         f"(valid: 0..{n - 1})")
    if len(set(indices)) != len(indices):
        raise ValueError("indices must be distinct (they become the 'datapoint' coordinate)")
    return indices


def to_inference_data(model, data, indices: Sequence[int] | None = None, *,
                      num_draws: int = 1000, num_chains: int = 4, site: str = "z",
                      resample: bool = True, seed: int | None = 0,
                      input_names: Sequence[str] = ("x", "y"), predictive: bool = True):
    """ArviZ ``InferenceData`` of the guide's posterior draws for ``data[indices]``
    (default: the first 10 datapoints); see the module docstring for the groups.

    ``num_chains * num_draws`` guide draws per datapoint; ``pareto_k`` is the PSIS k-hat of
    their weights (present when there are at least 50 draws). ``input_names`` name the
    model's inputs in ``observed_data`` (``model(x)`` -> ``x``; ``model(x, y)`` -> ``x, y``).
    ``predictive`` adds the ``log_likelihood``, ``posterior_predictive`` and
    ``prior_predictive`` groups (each observed site under its own name).
    """
    import arviz as az
    import xarray as xr

    check_positive_int(num_draws, "num_draws")
    check_positive_int(num_chains, "num_chains")
    source = as_source(data)
    indices = _check_indices(indices, len(source))
    batch = source.get(torch.tensor(indices, device=getattr(source, "device", None)))
    total = num_chains * num_draws
    draws = importance_draws(model, batch, total, seed=seed, replicate=predictive)
    if site not in draws.latents:
        raise KeyError(f"the guide has no latent site {site!r}; its sites are "
                       f"{sorted(draws.latents)}. Pass site=...")

    def by_chain(t: torch.Tensor) -> np.ndarray:
        return _numpy(t).reshape(num_chains, num_draws, *t.shape[1:])

    latent = draws.latents[site]
    latent_dims = ["datapoint", *_latent_dims(site, latent.shape[2:])]
    coords = {"datapoint": indices}
    coords.update({dim: np.arange(size)
                   for dim, size in zip(latent_dims[1:], latent.shape[2:], strict=True)})
    posterior = {site: by_chain(latent)}
    dims = {site: latent_dims}
    if resample:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        posterior[f"{site}_resampled"] = by_chain(draws.resample(total, generator)[site])
        dims[f"{site}_resampled"] = latent_dims
    stats = {"log_weight": draws.log_weights, "log_p_x_given_z": draws.log_likelihood,
             "log_p_z": draws.log_prior, "log_q_z_given_x": draws.log_guide}
    sample_stats = {name: by_chain(value) for name, value in stats.items()}
    dims.update({name: ["datapoint"] for name in stats})

    observed = {}
    for position, tensor in enumerate(batch):
        name = input_names[position] if position < len(input_names) else f"input_{position}"
        observed[name] = _numpy(tensor)
        extra = [f"{name}_dim_{i}" for i in range(1, tensor.dim())]
        if tensor.dim() == 2:
            extra = ["feature" if name == "x" else f"{name}_feature"]
        dims[name] = ["datapoint", *extra]
        coords.update({dim: np.arange(size)
                       for dim, size in zip(extra, tensor.shape[1:], strict=True)})

    config = getattr(model, "config", None)
    attrs = {"inference_library": "pyro-vae", "latent_site": site,
             "draws_from": "guide q(z|x)", "num_guide_draws": total,
             "seed": -1 if seed is None else seed,
             "model_config": json.dumps(config) if config else ""}
    groups = {}
    if predictive:   # the observed sites' replicates take the observed data's dims
        prior_draws = _prior_draws(model, batch, total, seed)
        groups["posterior_predictive"] = {name: by_chain(v)
                                          for name, v in draws.replicates.items()}
        groups["prior_predictive"] = {name: by_chain(v) for name, v in prior_draws.items()}
    idata = az.from_dict(posterior=posterior, sample_stats=sample_stats,
                         observed_data=observed, coords=coords, dims=dims, attrs=dict(attrs),
                         posterior_attrs=dict(attrs), **groups)
    if predictive:   # log p(x_n | z) of a draw sums over the features: one value per datapoint
        idata.add_groups(log_likelihood=xr.Dataset({
            name: xr.DataArray(by_chain(draws.log_likelihood),
                               dims=["chain", "draw", "datapoint"],
                               coords={"datapoint": indices})
            for name in draws.replicates}))
    per_datapoint = {"importance_ess": _numpy(_kish_ess(draws.log_weights))}
    if total >= MIN_KHAT_SAMPLES:
        per_datapoint["pareto_k"] = khat_from_log_weights(draws.log_weights)
    for name, values in per_datapoint.items():
        idata.sample_stats[name] = xr.DataArray(values, dims=["datapoint"],
                                                coords={"datapoint": indices})
    return idata


@restores_random_state
def _prior_draws(model, batch: tuple, num_draws: int, seed: int | None
                 ) -> dict[str, torch.Tensor]:
    """Prior predictive draws of the observed sites, the caller's random state kept."""
    if seed is not None:
        torch.manual_seed(seed + 1)
    return prior_predictive_draws(model, batch, num_draws)


def _kish_ess(log_weights: torch.Tensor) -> torch.Tensor:
    """(sum_k w_k)^2 / sum_k w_k^2 per datapoint, from log-weights (K, N)."""
    log_weights = log_weights.double()
    return torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0))


def save_inference_data(idata, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``idata`` to netCDF (h5netcdf) atomically; an existing file is an error unless
    ``overwrite``. Read it back with ``arviz.from_netcdf(path)``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; choose another path or pass "
                              "overwrite=True")
    with atomic_path(path) as tmp:
        idata.to_netcdf(tmp, engine="h5netcdf")
    return path
