"""The text summary of a run that ``pyro-vae train`` and ``pyro-vae evaluate`` print: data,
model, training, and the numbers per split (nats per datapoint)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # a run is only read here; directory.py forwards its old name to this module
    from pyro_vae.runs.directory import Run


def _number(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _latent_description(c: Mapping) -> str:
    if c["model"] == "hvae":
        return f"layers={','.join(map(str, c['layers']))}"
    return f"z_dim={c['z_dim']}"


def _latent_size(c: Mapping) -> int:
    return sum(c["layers"]) if c["model"] == "hvae" else c["z_dim"]


def summary_table(run: Run) -> str:
    """A short text table of a run: data, model, training, and the numbers per split."""
    c, m = run.config, run.metrics
    info, training = m.get("run", {}), m.get("training", {})
    lines = [f"run        {run.path}",
             f"data       {info.get('dataset', c['dataset'])}",
             f"model      {c['model']}: {_latent_description(c)} prior={c['prior']} "
             f"likelihood={info.get('likelihood', c['likelihood'])} guide="
             f"{c['hvae_guide'] if c['model'] == 'hvae' else c['guide']} network="
             f"{c['network']} hidden={','.join(map(str, c['hidden']))}"]
    if training:
        epochs = training.get("epoch")
        lines.append(f"training   {training.get('estimator')}, {epochs} epoch"
                     f"{'' if epochs == 1 else 's'}, "
                     f"batch {training.get('batch_size')}, lr {training.get('lr')}, beta "
                     f"{training.get('beta')}, {info.get('training_seconds', '?')} s on "
                     f"{info.get('device', '?')}")
        if "compiled" in training:
            lines.append("step       " + (
                f"compiled (jit=auto; {training.get('compile_seconds', 0):.2f} s compiling)"
                if training["compiled"] else f"eager: {training.get('eager_reason')}"))
    columns = [("train*", {k: training.get(k) for k in ("elbo", "recon", "kl")})]
    if any(k.startswith("val_") for k in training):
        columns.append(("validation*", {k: training.get(f"val_{k}")
                                        for k in ("elbo", "recon", "kl")}))
    for split in ("train", "validation", "test"):
        if split in m:
            columns = [col for col in columns if col[0].rstrip("*") != split]
            columns.append((split, m[split]))
    rows = [("ELBO", "elbo"), ("reconstruction E_q log p(x|z)", "recon"),
            ("KL(q || p)", "kl")]
    ks = {col.get("num_samples") for _, col in columns if col.get("num_samples")}
    rows.append((f"log p(x), K={'/'.join(map(str, sorted(ks))) or '-'}", "log_likelihood"))
    rows.append(("active units", "active_units"))
    kinds = {col.get("accuracy_kind") for _, col in columns} - {None}
    if kinds:
        rows.append((f"{'/'.join(sorted(kinds))} accuracy", "accuracy"))
    width = max(len(r[0]) for r in rows) + 2
    header = " " * width + "".join(f"{name:>13}" for name, _ in columns)
    table = [header]
    for label, key in rows:
        cells = []
        for _, col in columns:
            value = col.get(key)
            if key == "active_units" and value is not None:
                value = f"{value}/{_latent_size(c)}"
            cells.append(f"{_number(value):>13}")
        table.append(f"{label:<{width}}" + "".join(cells))
    lines += ["", "nats per datapoint (higher is better for ELBO and log p(x)):"] + table
    layers = m.get("test", {}).get("layers")
    if layers:
        lines.append("per layer (test): " + ", ".join(
            f"{name}: KL {_number(layer['kl'])}, active {layer['active_units']}/{layer['size']}"
            for name, layer in layers.items()))
    weight_kl = m.get("test", {}).get("weight_kl")
    if weight_kl is not None:
        lines.append(f"decoder weights: KL(q(W) || p(W)) = {_number(weight_kl)} nats in all, "
                     "in the training loss once per pass; the rows above are per datapoint "
                     "given W ~ q(W) (predictive)")
    if any(name.endswith("*") for name, _ in columns):
        lines.append("* monitored during training (up to 1000 points, one draw, last epoch)")
    lines.append(f"status     {info.get('status', 'unknown')}")
    return "\n".join(lines)
