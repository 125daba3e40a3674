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
  replaced by ``benchmarks/README.md``, the one source of the benchmark tables.
"""

from __future__ import annotations

import argparse
import os
import re
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


# ---- notebooks ---------------------------------------------------------------------------

@event_priority(100)  # before mkdocs-jupyter's on_files wraps the notebooks
def on_files(files, config):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT),
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


def benchmarks_page() -> str:
    text = BENCHMARKS_README.read_text(encoding="utf-8")
    note = ("!!! note\n    This page is `benchmarks/README.md`, included when the site is built; "
            "the scripts it describes are in `benchmarks/`.\n\n")
    # the note goes under the README's title
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{note}{rest}"


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if BENCHMARKS_MARKER in markdown:
        markdown = benchmarks_page()
    return markdown
