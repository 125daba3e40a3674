"""The documentation: the site builds with warnings as errors, its examples run, the API has
docstrings.

* ``test_docs_build_strict`` runs ``mkdocs build --strict`` (the site of ``mkdocs.yml``) into
  a temporary folder: a broken link or cross-reference, an unknown API path, a page missing
  from the navigation fails it. Skipped when the docs tools (the ``docs`` dependencies) are not
  installed.
* ``test_examples_run`` executes the ```` ```python ```` blocks of every docs page and of
  README.md, page by page, each page's blocks in order in one namespace, in a temporary
  working directory, so the examples cannot rot. A block preceded by the line
  ``<!-- no-run -->`` is skipped (only for what cannot run in a test: torchrun scripts).
  An example that triggers a ``DeprecationWarning`` itself (an old spelling) fails: the pages
  show the current API. Names an example registers (priors, estimators) are removed again.
* ``test_public_api_has_docstrings``: every function and class in ``__all__`` of
  ``pyro_vae``, ``pyro_vae.models`` and ``pyro_vae.inference`` has a docstring of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"

# ---- the site builds -----------------------------------------------------------------------

DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python",
                "mkdocs_jupyter")


def _docs_tools_missing() -> str | None:
    for name in DOCS_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:
            return name
    return None


def test_docs_build_strict(tmp_path):
    missing = _docs_tools_missing()
    if missing:
        pytest.skip(f"the docs tools are not installed ({missing} missing)")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OMP_NUM_THREADS="1")
    process = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = process.stdout + process.stderr
    assert process.returncode == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)

    # the generated parts are there
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("train", "evaluate", "sample", "reconstruct", "compare", "diagnose",
                    "holes"):
        assert f"usage: pyro-vae {command}" in cli, command
    assert "Training-step overhead" in (site / "benchmarks" / "index.html").read_text(
        encoding="utf-8")
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (site / "notebooks" / notebook.stem / "index.html").is_file(), notebook.name
    api = (site / "api" / "pyro_vae" / "index.html").read_text(encoding="utf-8")
    for name in ("pyro_vae.fit", "pyro_vae.evaluate", "pyro_vae.VAE"):
        assert f'id="{name}"' in api, name


# ---- the examples run ----------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text as (line number, code), without those whose
    preceding non-blank line is ``<!-- no-run -->``."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent = match["fence"], len(match["indent"])
        language = match["info"].strip().split(" ")[0].lower() if match["info"].strip() else ""
        start, body = i, []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence)
                                      and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        previous = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
        if language in ("python", "py") and previous != NO_RUN:
            blocks.append((start + 1, "\n".join(body) + "\n"))
    return blocks


def _pages() -> list[Path]:
    pages = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
    return [page for page in pages if python_blocks(page.read_text(encoding="utf-8"))]


def test_extractor_finds_and_skips_blocks():
    text = ("```python\na = 1\n```\n\n<!-- no-run -->\n```python\nb = 1\n```\n"
            "```bash\nls\n```\n  ```python\n  c = a\n  ```\n")
    assert python_blocks(text) == [(1, "a = 1\n"), (12, "c = a\n")]


def _registries() -> list[dict]:
    """The name tables an example may add to (restored after each page)."""
    from pyro_vae.inference.estimators import ESTIMATORS
    from pyro_vae.models import GUIDES, LIKELIHOODS, PRIORS
    return [PRIORS, LIKELIHOODS, GUIDES, ESTIMATORS]


@pytest.mark.parametrize("page", _pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_examples_run(page, tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyro
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    registries = [(table, dict(table)) for table in _registries()]
    namespace = {"__name__": f"docs_example_{page.stem}"}
    try:
        for line, code in python_blocks(page.read_text(encoding="utf-8")):
            where = f"{page.relative_to(ROOT)}:{line}"
            try:
                compiled = compile(code, where, "exec")
                with contextlib.redirect_stdout(io.StringIO()), \
                        warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DeprecationWarning)
                    exec(compiled, namespace)
            except Exception as error:
                raise AssertionError(f"the example at {where} failed: "
                                     f"{type(error).__name__}: {error}\n{code}") from error
            deprecated = [str(w.message) for w in caught
                          if issubclass(w.category, DeprecationWarning) and w.filename == where]
            assert not deprecated, f"the example at {where} uses a deprecated spelling: " \
                                   f"{deprecated}\n{code}"
    finally:
        torch.set_num_threads(threads)
        plt.close("all")
        for table, saved in registries:
            table.clear()
            table.update(saved)


# ---- the public API has docstrings ---------------------------------------------------------

def _own_docstring(obj) -> str | None:
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if dataclasses.is_dataclass(obj) and doc and doc.startswith(obj.__name__ + "("):
            return None  # the signature dataclasses write when there is no docstring
        return doc
    return obj.__doc__


@pytest.mark.parametrize("module", ["pyro_vae", "pyro_vae.models", "pyro_vae.inference"])
def test_public_api_has_docstrings(module):
    namespace = importlib.import_module(module)
    missing = []
    for name in namespace.__all__:
        obj = getattr(namespace, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        doc = _own_docstring(obj)
        if not (doc and doc.strip()):
            missing.append(name)
    assert not missing, f"{module}: no docstring for {', '.join(missing)}"
