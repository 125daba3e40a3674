"""The layout keeps its promises: imports go one way (models <- inference <- pyro_vae), no two
modules import each other (directly or round a longer circle), and no file is long without a
reason written at its top. docs/architecture.md draws this picture."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folder -> the dotted package it is installed as
LAYERS = {"models": "pyro_vae.models", "inference": "pyro_vae.inference", "pyro_vae": "pyro_vae"}
#: what each layer may import from the project
ALLOWED = {
    "pyro_vae.models": ("pyro_vae.models",),
    "pyro_vae.inference": ("pyro_vae.inference", "pyro_vae.models"),
    "pyro_vae": ("pyro_vae",),
}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _layer(module: str) -> str:
    for package in ("pyro_vae.models", "pyro_vae.inference"):
        if module == package or module.startswith(package + "."):
            return package
    return "pyro_vae"


def _imports(module: str, path: Path) -> set[str]:
    """Every project module ``module`` imports at run time, at the top or inside a function."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    type_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                 for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in type_only:   # annotations only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # ``from package import submodule`` imports the submodule; other names, the module
            submodules = [f"{base}.{alias.name}" for alias in node.names
                          if f"{base}.{alias.name}" in MODULES]
            names = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    layer = _layer(module)
    wrong = sorted(target for target in GRAPH[module]
                   if not any(target == allowed or target.startswith(allowed + ".")
                              for allowed in ALLOWED[layer]))
    assert not wrong, f"{module} (layer {layer}) imports {wrong}: the layers are models <- " \
                      "inference <- pyro_vae"


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return out


def test_no_import_circles():
    assert _cycles() == []


def test_the_cycle_check_finds_a_circle():
    GRAPH["pyro_vae.runs.builders"].add("pyro_vae.runs.directory")
    try:
        assert any("pyro_vae.runs.builders" in cycle for cycle in _cycles())
    finally:
        GRAPH["pyro_vae.runs.builders"].discard("pyro_vae.runs.directory")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_long_file_without_a_reason(module):
    text = MODULES[module].read_text()
    lines = text.count("\n")
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert lines <= MAX_LINES or "Long because" in docstring, (
        f"{MODULES[module].relative_to(ROOT)} has {lines} lines; split it, or say at its top "
        "(\"Long because ...\") why it stays whole")


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for folder in LAYERS:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).parts
            if path.name != "__init__.py" and f"`{path.name}`" not in page and not (
                    len(parts) > 1 and f"`{parts[0]}/`" in page):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"docs/architecture.md does not say what these hold: {missing}"


def test_every_module_says_what_it_holds():
    missing = [str(path.relative_to(ROOT)) for path in MODULES.values()
               if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"
