"""Device-cleanliness of compare and the diagnostics: float64 model and data while the
default dtype stays float32 (a cheap proxy for CUDA), and CUDA itself where available."""

import pytest
import torch
from conftest import PPCA

import pyro_vae as pv


def test_comparison_and_diagnostics_run_in_float64():
    assert torch.get_default_dtype() == torch.float32
    ppca = PPCA(dtype=torch.float64)
    x = ppca.sample(64)
    result = pv.compare(lambda seed: ppca.mean_field_vae(inflate=1.5), x, x[:16],
                        ["elbo", "iwae:k=3"], seeds=[0], epochs=1, batch_size=32,
                        eval_samples=20, khat_samples=50, khat_points=8, keep_models=True)
    model = result.run("elbo", 0).model
    assert next(model.parameters()).dtype == torch.float64
    exact = ppca.exact_log_prob(x[:16]).mean().item()
    assert result.run("iwae:k=3", 0).metrics["log_likelihood"] == pytest.approx(exact, abs=0.3)
    snr = pv.gradient_snr(model, x[:16], ["iwae:k=1", "iwae:k=3"], num_draws=4)
    assert len(snr.stats) == 4
    assert pv.psis_khat(model, x[:8], num_samples=50).khat.shape == (8,)
    idata = pv.to_inference_data(model, x, indices=[0, 1], num_draws=30, num_chains=2)
    assert idata.posterior["z"].dtype == "float64"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_comparison_on_cuda_measures_gpu_memory():
    d = pv.load_dataset("digits", binarize=True)
    result = pv.compare({"z_dim": 2, "hidden": [16]}, d.train[:256], d.test[:50],
                        ["elbo", "iwae:k=5"], seeds=[0], epochs=1, batch_size=64,
                        eval_samples=20, khat_samples=50, khat_points=10, device="cuda",
                        keep_models=True)
    for run in result.runs:
        assert run.memory["measure"] == "cuda max_memory_allocated"
        assert run.metrics["peak_memory_mb"] > 0
    model = result.run("iwae:k=5", 0).model
    x = d.test[:20].cuda()
    assert len(pv.gradient_snr(model, x, ["iwae:k=1", "iwae:k=5"], num_draws=3).stats) == 4
    assert pv.to_inference_data(model, x, num_draws=20).posterior["z"].shape == (4, 20, 10, 2)
