"""Provenance of a published dataset read from disk: which file (by name), which format and
options, which language codes, and which items were dropped and why.

Dropping is never silent: a loader counts every item it leaves out by reason, the count goes
into the dataset's ``source`` (and so into every run file), and a :class:`DroppedItemsWarning`
says it when the dataset is built (the CLI prints it)."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class DroppedItemsWarning(UserWarning):
    """A published dataset's loader left items out (the message says how many and why)."""


def source_record(
    path: str | Path,
    fmt: str,
    options: Mapping[str, Any],
    language_codes: Mapping[str, str],
    dropped: Counter[str],
    relations_left_out: Mapping[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``source`` of a :class:`~tl_multineuron.data.datasets.ParallelDataset` read from
    ``path``: named by its last component only (results directories are read on other
    machines); ``dropped`` counts items left out by reason, ``relations_left_out`` whole
    relations (relation -> why); ``extra`` adds the loader's own records (files per language,
    patterns chosen). Warns when anything was left out."""
    rec: dict[str, Any] = {
        "path": Path(str(path)).name,
        "format": fmt,
        "options": dict(options),
        "language_codes": dict(language_codes),
        "dropped": dict(sorted(dropped.items())),
    }
    if relations_left_out:
        rec["relations_left_out"] = dict(relations_left_out)
    rec.update(extra)
    said = []
    if dropped:
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(dropped.items()))
        said.append(f"{sum(dropped.values())} item(s) left out: {why}")
    if relations_left_out:
        why = "; ".join(f"{r} ({w})" for r, w in relations_left_out.items())
        said.append(f"{len(relations_left_out)} relation(s) left out: {why}")
    if said:
        warnings.warn(
            f"{fmt} data {rec['path']!r}: " + ". ".join(said), DroppedItemsWarning, stacklevel=3
        )
    return rec
