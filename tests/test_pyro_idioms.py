"""Pyro's own tools work on every built-in model: ``Predictive`` (posterior and prior
predictive draws of every site) and ``pyro.render_model`` (where graphviz is installed)."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import Predictive

import pyro_vae as pv

X = (torch.rand(6, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
MODELS = {
    "vae": (lambda: pv.VAE(12, 3, hidden=(8,)), {"z": (3,), "x": (12,)}),
    "hvae": (lambda: pv.HierarchicalVAE(12, (4, 2), hidden=(8,), guide="top_down"),
             {"z1": (4,), "z2": (2,), "x": (12,)}),
    "m2": (lambda: pv.SemiSupervisedVAE(12, 3, z_dim=2, hidden=[8], num_labelled=2),
           {"y": (3,), "z": (2,), "x": (12,)}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_predictive_returns_every_site_per_draw_and_datapoint(name):
    """As with any Pyro model that observes its data, Predictive returns the latents drawn
    from the guide (or the prior) and x as observed; poutine.uncondition makes x a fresh
    draw from p(x | z): the posterior (or prior) predictive."""
    build, sites = MODELS[name]
    model = build().eval()
    shapes = {site: (5, len(X), *shape) for site, shape in sites.items()}
    posterior = Predictive(model.model, guide=model.guide, num_samples=5)(X)
    assert {k: tuple(v.shape) for k, v in posterior.items()} == shapes
    assert all(torch.equal(draw, X) for draw in posterior["x"])
    replicate = Predictive(pyro.poutine.uncondition(model.model), guide=model.guide,
                           num_samples=5)(X)
    prior = Predictive(pyro.poutine.uncondition(model.model), num_samples=5)(X)
    for draws in (replicate, prior):
        assert {k: tuple(v.shape) for k, v in draws.items()} == shapes
        assert set(draws["x"].unique().tolist()) <= {0.0, 1.0}
        assert not torch.equal(draws["x"][0], X)


@pytest.mark.parametrize("name", list(MODELS))
def test_render_model_draws_every_site(name):
    pytest.importorskip("graphviz", reason="pyro.render_model needs the graphviz package")
    model = MODELS[name][0]()
    graph = pyro.render_model(model.model, model_args=(X,))
    assert all(site in graph.source for site in MODELS[name][1])
