"""MkDocs build hooks for the pyro-vae site (``hooks: [docs/hooks.py]`` in mkdocs.yml).

* **Notebooks.** ``notebooks/*.ipynb`` are added to the site as pages ``notebooks/<name>.ipynb``
  straight from the repository (no copies in ``docs/``); mkdocs-jupyter renders them, without
  executing them. Links between notebooks (``02_priors_and_likelihoods.ipynb``) are rewritten
  to the rendered pages.
* **CLI reference.** ``docs/cli.md`` holds the marker ``<!-- cli-reference -->``; it is
  replaced by the help of ``pyro-vae`` and of each subcommand, rendered at build time from
  the parser that ``pyro_vae.cli.build_parser()`` returns, so the page cannot drift from the
  code. Only that public function is used: subcommands are found on the parser itself, not by
  importing the modules that define them.
* **Benchmarks.** ``docs/benchmarks.md`` holds the marker ``<!-- benchmarks-readme -->``; it is
  replaced by ``benchmarks/README.md`` (headings one level down, its links to ``../docs/``
  pages and to its own figures rewritten for the site, the figures added to it), the one
  source of the benchmark tables.
* **API reference sources.** ``pyro_vae.models`` and ``pyro_vae.inference`` live in the
  top-level folders ``models/`` and ``inference/`` (``[tool.setuptools.package-dir]`` in
  pyproject.toml), which griffe, reading the source statically, cannot find below
  ``pyro_vae/``. The build assembles a temporary tree of symlinks, ``pyro_vae/`` with every
  mapped subpackage inside it, and points mkdocstrings' python handler at it.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BENCHMARKS_README = ROOT / "benchmarks" / "README.md"

CLI_MARKER = "<!-- cli-reference -->"
BENCHMARKS_MARKER = "<!-- benchmarks-readme -->"
#: width of the rendered help text (argparse reads $COLUMNS)
HELP_WIDTH = 96


# ---- sources for mkdocstrings -------------------------------------------------------------

PACKAGE = "pyro_vae"
_source_trees: list[str] = []


def package_dirs() -> dict[str, Path]:
    """``{"pyro_vae": ROOT/pyro_vae, "pyro_vae.models": ROOT/models, ...}`` from pyproject.toml."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as file:
        setuptools = tomllib.load(file).get("tool", {}).get("setuptools", {})
    mapping = {name: ROOT / folder for name, folder in setuptools.get("package-dir", {}).items()
               if name == PACKAGE or name.startswith(PACKAGE + ".")}
    mapping.setdefault(PACKAGE, ROOT / PACKAGE)
    return mapping


def api_source_tree() -> str:
    """A temporary folder holding ``pyro_vae/`` as Python imports it, built from symlinks."""
    tree = Path(tempfile.mkdtemp(prefix="pyro-vae-docs-api-"))
    _source_trees.append(str(tree))
    mapping = package_dirs()
    package = tree / PACKAGE
    package.mkdir()
    for entry in mapping.pop(PACKAGE).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in sorted(mapping.items()):
        link = tree.joinpath(*name.split("."))
        if link.is_symlink() or link.exists():
            continue  # a subpackage inside pyro_vae/ is already there
        link.symlink_to(folder, target_is_directory=True)
    return str(tree)


@event_priority(100)  # before mkdocstrings reads its handlers' configuration
def on_config(config):
    plugin = config["plugins"].get("mkdocstrings")
    if plugin is not None:
        handlers = plugin.config["handlers"]
        python = handlers.setdefault("python", {})
        python["paths"] = [api_source_tree()]
    return config


@atexit.register
def on_shutdown():
    while _source_trees:
        shutil.rmtree(_source_trees.pop(), ignore_errors=True)


# ---- notebooks ---------------------------------------------------------------------------

@event_priority(100)  # before mkdocs-jupyter's on_files wraps the notebooks
def on_files(files, config):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    for path in sorted(BENCHMARKS_README.parent.glob("*.png")):   # the README's figures
        files.append(File(f"benchmarks/{path.name}", src_dir=str(ROOT),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


_NOTEBOOK_LINK = re.compile(r'href="(\d\d_[A-Za-z0-9_]+)\.ipynb"')


def on_page_content(html, page, config, files):
    if page.file.src_uri.startswith("notebooks/") and page.file.src_uri.endswith(".ipynb"):
        target = "../{}/" if config["use_directory_urls"] else "{}.html"
        html = _NOTEBOOK_LINK.sub(lambda m: f'href="{target.format(m.group(1))}"', html)
    return html


# ---- CLI reference and benchmark tables --------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _fenced(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```\n"


def cli_reference() -> str:
    """Markdown of ``pyro-vae --help`` and of every ``pyro-vae COMMAND --help``."""
    from pyro_vae.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        parser = build_parser()
        parts = ["## `pyro-vae`\n", _fenced(parser.format_help())]
        for name, sub in _subcommands(parser).items():
            parts += [f"## `pyro-vae {name}`\n", _fenced(sub.format_help())]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


_README_FIGURE = re.compile(r"\]\(([\w.-]+\.png)\)")


def benchmarks_readme() -> str:
    """``benchmarks/README.md`` with its headings one level down (not inside code blocks)."""
    lines, fence = [], None
    for line in BENCHMARKS_README.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None:
            if line.startswith("#"):
                line = "#" + line
            # links relative to benchmarks/: its figures, and pages of docs/
            line = _README_FIGURE.sub(r"](benchmarks/\1)", line.replace("](../docs/", "]("))
        lines.append(line)
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if BENCHMARKS_MARKER in markdown:
        markdown = markdown.replace(BENCHMARKS_MARKER, benchmarks_readme())
    return markdown
