"""Every tutorial notebook in notebooks/ runs top to bottom at the small size.

Each ``notebooks/*.ipynb`` is found by the glob, so a new notebook is tested without changing
this file. A notebook reads its size from ``PYRO_VAE_NOTEBOOK_SIZE`` in its first code cell
and writes files only under ``PYRO_VAE_NOTEBOOK_OUT`` (here a temporary directory). The kernel
is this interpreter (``sys.executable``), whatever kernels the user has installed elsewhere.
Notebooks are committed with outputs stripped (``python notebooks/strip_outputs.py``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SIZE_VARIABLE = "PYRO_VAE_NOTEBOOK_SIZE"
CELL_TIMEOUT_S = 600
KERNEL_NAME = "pyro-vae-tests"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernel spec that starts ipykernel with this interpreter, so the notebooks see the
    environment under test (a user-level 'python3' spec could point at another Python)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"pyro-vae tests ({sys.executable})", "language": "python"}))
    return {"JUPYTER_PATH": str(root), "out": root / "outputs"}


def _run(path: Path, env: dict, monkeypatch, *, repeat: int = 1):
    """Execute every cell of the notebook ``repeat`` times in one kernel; return the
    executed notebook and the seconds taken."""
    monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
    monkeypatch.setenv(SIZE_VARIABLE, "small")
    monkeypatch.setenv("PYRO_VAE_NOTEBOOK_OUT", str(env["out"]))
    # one torch thread per kernel: these small models gain nothing from more, and on a shared
    # CPU spinning OpenMP threads slow them down many times over
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    with client.setup_kernel():
        for _ in range(repeat):
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
    return nb, time.perf_counter() - started


def _errors(nb) -> list[str]:
    return [f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_the_conventions(path):
    """Outputs stripped, and the size read in the first code cell."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs; notebooks are committed "
                       f"stripped: run `python notebooks/strip_outputs.py {path.name}`")
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert SIZE_VARIABLE in first_code.source, (
        f"{path.name}: the first code cell must read the size from {SIZE_VARIABLE} "
        "(small in the tests, full by default)")
    assert "PYRO_VAE_NOTEBOOK_OUT" in first_code.source, (
        f"{path.name}: the first code cell must put its files under PYRO_VAE_NOTEBOOK_OUT")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_small(path, kernel_env, monkeypatch):
    nb, seconds = _run(path, kernel_env, monkeypatch)
    assert not _errors(nb)
    shown = [out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
             for out in cell.outputs]
    assert any("image/png" in data for data in shown), f"{path.name} drew no figure"
    unrendered = [data["text/plain"] for data in shown if "image/png" not in data
                  and data.get("text/plain", "").startswith("<Figure size")]
    assert not unrendered, f"{path.name}: figures shown as text, not drawn: {unrendered}"
    print(f"{path.name}: {seconds:.1f} s at the small size")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_reruns_in_the_same_kernel(path, kernel_env, monkeypatch):
    """Running all cells a second time in the same kernel works: nothing left over from the
    first pass (parameter store, registered names, files) gets in the way."""
    nb, _ = _run(path, kernel_env, monkeypatch, repeat=2)
    assert not _errors(nb)
