"""Small input checks shared by the model constructors (scikit-learn style messages)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int, or raise ValueError saying what was expected and received."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        example = f" Pass e.g. {name}=2." if name.isidentifier() else ""
        raise ValueError(f"{name} must be a positive integer; got {value!r}.{example}")
    return value


def unknown_name_error(kind: str, name, valid: Iterable[str],
                       shown: Iterable[str] | None = None, where: str = "") -> ValueError:
    """A ValueError for an unknown name listing the valid ones (``shown`` if given, e.g.
    full examples) and the closest match; ``where`` follows the name (" for prior 'vamp'")."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = list(shown) if shown is not None else valid
    return ValueError(f"unknown {kind} {name!r}{where}; expected one of {listed}.{hint}")
