"""Reading a results directory's files for the report: a file that cannot be read is named on
the page, never a crash (``rep`` is the page being written)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MultiNeuronError


def load_result(path: Path, loader: Callable[[Path], Any], what: str, rep: Any) -> Any:
    """``loader(path)``, or None with the reason on the page."""
    try:
        return loader(path)
    except (MultiNeuronError, KeyError, RuntimeError, ValueError, OSError) as e:
        rep.missing(f"{what} ({path.name}) could not be read: {e}")
        return None


def run_info(d: Path, name: str) -> dict | None:
    """A run file's JSON, or None where it is missing or unreadable."""
    f = d / name
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
