"""A synthetic catalogue of detected compact-binary mergers in three populations.

Generative recipe (all masses in solar masses, distances in Mpc; seeded numpy draws):

1. Source-frame populations (``POPULATIONS``; mixing fractions of the *detected* catalogue,
   default 0.5 / 0.3 / 0.2):

   * ``bbh``, stellar-mass binary black holes: m1 from a power law m^-2.3 on [5, 50]
     (85%) plus a Gaussian peak N(34, 3.5^2) (15%); q = m2/m1 ~ q^1.1 on [0.1, 1] with
     m2 >= 3; chi_eff ~ N(0.05, 0.11^2); chi_p ~ Beta(2, 6);
   * ``heavy_bbh``, heavy (hierarchical) black holes: log m1 ~ N(log 70, 0.2^2);
     q ~ Beta(4, 3) on [0.15, 1]; chi_eff ~ N(0.2, 0.2^2); chi_p ~ Beta(4, 4);
   * ``bns``, binary neutron stars: m1, m2 ~ N(1.35, 0.12^2) on [1.1, 2.2] (sorted);
     chi_eff ~ N(0, 0.01^2); chi_p ~ |N(0, 0.01^2)|; tidal deformabilities
     Lambda_i = 400 (1.35 / m_i)^6 combined into Lambda~ (Flanagan & Hinderer 2008); 0 for
     black holes.

2. Redshift z ~ dV_c/dz / (1 + z) (uniform in comoving volume and source time) up to
   ``z_max`` per population, flat LambdaCDM with H0 = 67.7 km/s/Mpc and Omega_m = 0.31;
   luminosity distance d_L(z); detector-frame chirp mass Mc_det = Mc (1 + z).

3. Detection: optimal SNR rho = 8 Theta (Mc_det / 1.2)^(5/6) (400 Mpc / d_L) with the
   Finn & Chernoff (1993) angular factor Theta/4 ~ Beta(2, 4) (so a 1.2 Msun chirp mass is
   seen to 400 Mpc when optimally oriented); observed rho_obs = rho + N(0, 1); an event is
   kept when rho_obs > 8, drawing until each population has its share.

4. Measurement scatter (posterior-median-like, ``measurement_noise`` multiplies every
   sigma; 0 gives the true values), with s = 8 / rho_obs:
   log Mc_det += N(0, (s min(0.1, 2e-4 (Mc_det/1.2)^(5/3)))^2); q += N(0, (0.15 s)^2),
   reflected into (0, 1]; chi_eff += N(0, (0.08 s)^2); chi_p += N(0, (0.2 s)^2) on [0, 1];
   log d_L += N(0, (0.3 s)^2); log Lambda~ += N(0, (0.5 s)^2) (black holes keep 0).

5. Derived from the observed (Mc_det, q, d_L): z = z(d_L), Mc = Mc_det / (1 + z),
   eta = q / (1 + q)^2, M = Mc eta^(-3/5), m1 = M / (1 + q), m2 = q M / (1 + q); remnant mass
   M_f / M = 1 + (sqrt(8/9) - 1) eta - 0.4333 eta^2 - 0.4392 eta^3 and remnant spin (Rezzolla
   et al. 2008 for aligned spins a1 = a2 = chi_eff; formally applied to BNS too);
   f_ISCO = 4400 Hz / (M (1 + z)).

The 16 features (``FEATURES``), positive ones on a log scale, are standardised with the
training split's mean and standard deviation (kept in ``info``). Labels are the population
indices. With the default noise the two black-hole populations overlap in their tails while
neutron stars stand apart.
"""

from __future__ import annotations

import numpy as np
import torch

from pyro_vae.data.base import Dataset, DatasetError, split_indices

POPULATIONS = ("bbh", "heavy_bbh", "bns")
POPULATION_NAMES = ("stellar-mass BBH", "heavy BBH", "BNS")
FEATURES = ("log_m1", "log_m2", "log_total_mass", "mass_ratio", "log_chirp_mass",
            "symmetric_mass_ratio", "chi_eff", "chi_p", "log_luminosity_distance", "redshift",
            "log_detector_chirp_mass", "log_snr", "log_final_mass", "final_spin",
            "log_f_isco", "log1p_tidal_deformability")

_Z_MAX = {"bbh": 2.0, "heavy_bbh": 2.5, "bns": 0.25}
_H0, _OMEGA_M, _C = 67.7, 0.31, 299792.458     # km/s/Mpc, -, km/s
_SNR_THRESHOLD, _REFERENCE_CHIRP_MASS, _REFERENCE_DISTANCE = 8.0, 1.2, 400.0


class _Cosmology:
    """Flat LambdaCDM on a redshift grid: d_L(z), its inverse, and p(z) ~ dV_c/dz / (1+z)."""

    def __init__(self, z_max: float = 3.0, points: int = 4001):
        self.z = np.linspace(0.0, z_max, points)
        inverse_e = 1.0 / np.sqrt(_OMEGA_M * (1 + self.z) ** 3 + 1 - _OMEGA_M)
        steps = np.diff(self.z) * 0.5 * (inverse_e[1:] + inverse_e[:-1])
        comoving = _C / _H0 * np.concatenate([[0.0], np.cumsum(steps)])
        self.luminosity_distance = (1 + self.z) * comoving
        self.rate_density = comoving ** 2 * inverse_e / (1 + self.z)

    def sample_redshift(self, rng, n: int, z_max: float) -> np.ndarray:
        keep = self.z <= z_max
        cdf = np.cumsum(self.rate_density[keep])
        return np.interp(rng.uniform(0, cdf[-1], n), cdf, self.z[keep])

    def distance(self, z):
        return np.interp(z, self.z, self.luminosity_distance)

    def redshift(self, d_l):
        return np.interp(d_l, self.luminosity_distance, self.z)


def _power_law(rng, n, exponent, low, high):
    """Draws from p(x) ~ x^exponent on [low, high] by inverting the CDF."""
    u = rng.uniform(size=n)
    if np.isclose(exponent, -1.0):
        return low * (high / low) ** u
    a = exponent + 1.0
    return (low ** a + u * (high ** a - low ** a)) ** (1.0 / a)


def _truncated_normal(rng, n, mean, sd, low, high):
    out = rng.normal(mean, sd, n)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(mean, sd, bad.sum())
        bad = (out < low) | (out > high)
    return out


def _source_population(name: str, rng, n: int) -> dict[str, np.ndarray]:
    """Source-frame m1, q, chi_eff, chi_p and tidal deformability for ``n`` binaries."""
    if name == "bbh":
        m1 = np.where(rng.uniform(size=n) < 0.85, _power_law(rng, n, -2.3, 5.0, 50.0),
                      _truncated_normal(rng, n, 34.0, 3.5, 5.0, 50.0))
        q = _power_law(rng, n, 1.1, 0.1, 1.0)
        small = q * m1 < 3.0
        while small.any():
            q[small] = _power_law(rng, small.sum(), 1.1, 0.1, 1.0)
            small = q * m1 < 3.0
        chi_eff = _truncated_normal(rng, n, 0.05, 0.11, -1.0, 1.0)
        chi_p = rng.beta(2.0, 6.0, n)
        tidal = np.zeros(n)
    elif name == "heavy_bbh":
        m1 = np.exp(rng.normal(np.log(70.0), 0.2, n))
        q = 0.15 + 0.85 * rng.beta(4.0, 3.0, n)
        chi_eff = _truncated_normal(rng, n, 0.2, 0.2, -1.0, 1.0)
        chi_p = rng.beta(4.0, 4.0, n)
        tidal = np.zeros(n)
    else:
        masses = np.sort(_truncated_normal(rng, 2 * n, 1.35, 0.12, 1.1, 2.2).reshape(n, 2), 1)
        m2, m1 = masses[:, 0], masses[:, 1]
        q = m2 / m1
        chi_eff = rng.normal(0.0, 0.01, n)
        chi_p = np.abs(rng.normal(0.0, 0.01, n))
        tidal = _combined_tidal_deformability(m1, m2, 400.0 * (1.35 / m1) ** 6,
                                              400.0 * (1.35 / m2) ** 6)
    return {"m1": m1, "q": q, "chi_eff": chi_eff, "chi_p": chi_p, "tidal": tidal}


def _combined_tidal_deformability(m1, m2, lambda1, lambda2):
    """Lambda~ = 16/13 [(m1 + 12 m2) m1^4 L1 + (m2 + 12 m1) m2^4 L2] / (m1 + m2)^5."""
    return 16.0 / 13.0 * ((m1 + 12 * m2) * m1 ** 4 * lambda1
                          + (m2 + 12 * m1) * m2 ** 4 * lambda2) / (m1 + m2) ** 5


def _chirp_mass(m1, q):
    return m1 * q ** 0.6 / (1 + q) ** 0.2


def _detected(name: str, rng, n: int, cosmology: _Cosmology) -> dict[str, np.ndarray]:
    """Draw binaries of population ``name`` until ``n`` pass the SNR threshold."""
    kept: list[dict[str, np.ndarray]] = []
    count = 0
    while count < n:
        batch = max(4 * (n - count), 256)
        source = _source_population(name, rng, batch)
        z = cosmology.sample_redshift(rng, batch, _Z_MAX[name])
        d_l = cosmology.distance(z)
        chirp_det = _chirp_mass(source["m1"], source["q"]) * (1 + z)
        theta = 4.0 * rng.beta(2.0, 4.0, batch)
        snr = (_SNR_THRESHOLD * theta / 4.0 * (chirp_det / _REFERENCE_CHIRP_MASS) ** (5 / 6)
               * _REFERENCE_DISTANCE / np.maximum(d_l, 1e-3))
        snr_obs = snr + rng.normal(size=batch)
        keep = snr_obs > _SNR_THRESHOLD
        kept.append({**{k: v[keep] for k, v in source.items()}, "chirp_det": chirp_det[keep],
                     "d_l": d_l[keep], "snr": snr_obs[keep]})
        count += int(keep.sum())
    return {k: np.concatenate([b[k] for b in kept])[:n] for k in kept[0]}


def _observe(events: dict[str, np.ndarray], rng, noise: float) -> dict[str, np.ndarray]:
    """Add measurement scatter that shrinks as 8 / SNR (step 4 of the module docstring)."""
    n = len(events["snr"])
    s = noise * _SNR_THRESHOLD / events["snr"]
    chirp_sd = s * np.minimum(0.1, 2e-4 * (events["chirp_det"] / 1.2) ** (5 / 3))
    q = np.abs(events["q"] + rng.normal(size=n) * 0.15 * s)
    q = np.clip(np.where(q > 1, 1 / np.maximum(q, 1e-12), q), 0.02, 1.0)
    return {
        "chirp_det": events["chirp_det"] * np.exp(rng.normal(size=n) * chirp_sd),
        "q": q,
        "chi_eff": np.clip(events["chi_eff"] + rng.normal(size=n) * 0.08 * s, -1, 1),
        "chi_p": np.clip(events["chi_p"] + rng.normal(size=n) * 0.2 * s, 0, 1),
        "d_l": events["d_l"] * np.exp(rng.normal(size=n) * 0.3 * s),
        "tidal": events["tidal"] * np.exp(rng.normal(size=n) * 0.5 * s),
        "snr": events["snr"],
    }


def _features(observed: dict[str, np.ndarray], cosmology: _Cosmology) -> np.ndarray:
    """The 16 catalogue features (``FEATURES``) from observed quantities (step 5)."""
    z = cosmology.redshift(observed["d_l"])
    q = observed["q"]
    chirp = observed["chirp_det"] / (1 + z)
    eta = q / (1 + q) ** 2
    total = chirp * eta ** -0.6
    m1, m2 = total / (1 + q), q * total / (1 + q)
    final_mass = total * (1 + (np.sqrt(8 / 9) - 1) * eta - 0.4333 * eta ** 2
                          - 0.4392 * eta ** 3)
    a_tot = observed["chi_eff"] * (1 + q ** 2) / (1 + q) ** 2
    final_spin = (a_tot + a_tot * eta * (-0.1229 * a_tot + 0.4537 * eta - 2.8904)
                  + eta * (2 * np.sqrt(3) - 3.5171 * eta + 2.5763 * eta ** 2))
    f_isco = 4400.0 / (total * (1 + z))
    columns = [np.log(m1), np.log(m2), np.log(total), q, np.log(chirp), eta,
               observed["chi_eff"], observed["chi_p"], np.log(observed["d_l"]), z,
               np.log(observed["chirp_det"]), np.log(observed["snr"]), np.log(final_mass),
               final_spin, np.log(f_isco), np.log1p(observed["tidal"])]
    return np.stack(columns, 1)


def make_gw_catalogue(num_events: int = 3000, fractions=(0.5, 0.3, 0.2),
                      measurement_noise: float = 1.0, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Unstandardised features (num_events, 16) and population labels (see the module
    docstring for the recipe); rows are shuffled."""
    if isinstance(num_events, bool) or not isinstance(num_events, int) or num_events < 3:
        raise DatasetError(f"num_events must be an integer >= 3; got {num_events!r}")
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not fractions.sum() > 0:
        raise DatasetError(f"fractions must be three non-negative numbers (one per population "
                           f"{POPULATIONS}); got {fractions.tolist()}")
    if not measurement_noise >= 0:
        raise DatasetError(f"measurement_noise must be >= 0; got {measurement_noise!r}")
    rng = np.random.default_rng(seed)
    cosmology = _Cosmology()
    counts = np.floor(fractions / fractions.sum() * num_events).astype(int)
    counts[np.argmax(fractions)] += num_events - counts.sum()
    blocks, labels = [], []
    for label, (name, count) in enumerate(zip(POPULATIONS, counts, strict=True)):
        if count:
            events = _detected(name, rng, int(count), cosmology)
            blocks.append(_features(_observe(events, rng, measurement_noise), cosmology))
            labels.append(np.full(count, label))
    x, y = np.concatenate(blocks), np.concatenate(labels)
    order = rng.permutation(len(x))
    return x[order], y[order]


def load_gw(num_events: int = 3000, fractions=(0.5, 0.3, 0.2), measurement_noise: float = 1.0,
            seed: int = 0, validation_fraction: float = 0.1, test_fraction: float = 0.2
            ) -> Dataset:
    """The synthetic merger catalogue, standardised with training-split statistics.

    ``info`` holds ``feature_names``, ``label_names``, and the ``mean`` and ``std`` that map
    standardised features back: raw = x * std + mean.
    """
    x, y = make_gw_catalogue(num_events, fractions, measurement_noise, seed)
    train, val, test = split_indices(len(x), validation_fraction, test_fraction, seed)
    mean, std = x[train].mean(0), x[train].std(0)
    std = np.where(std > 0, std, 1.0)
    x = torch.from_numpy(((x - mean) / std).astype(np.float32))
    y = torch.from_numpy(y.astype(np.int64))
    return Dataset("gw", x[train], x[val] if len(val) else None, x[test], y[train],
                   y[val] if len(val) else None, y[test], feature_shape=(len(FEATURES),),
                   kind="tabular", suggested_likelihood="normal_per_feature",
                   info={"feature_names": list(FEATURES), "label_names": list(POPULATION_NAMES),
                         "num_classes": 3, "mean": mean.tolist(), "std": std.tolist(),
                         "pair_features": ["log_chirp_mass", "mass_ratio", "chi_eff",
                                           "log_luminosity_distance", "log_snr"],
                         "num_events": num_events, "fractions": list(map(float, fractions)),
                         "measurement_noise": measurement_noise, "seed": seed})
