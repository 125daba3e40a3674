"""Strip outputs and execution counts from the tutorial notebooks before committing them.

    python notebooks/strip_outputs.py              # every notebooks/*.ipynb
    python notebooks/strip_outputs.py 01_quickstart.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def strip(path: Path) -> bool:
    """Clear outputs, execution counts and run metadata in place; True if anything changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after)
    return after != before


def main(argv: list[str]) -> int:
    paths = [Path(a) if Path(a).exists() else HERE / a for a in argv] or sorted(
        HERE.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"strip_outputs: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"{path.name}: {'stripped' if strip(path) else 'already clean'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
