"""Experiment results as an accumulator: one scored row per (condition, item, language).

The same protocol as the statistics (:mod:`tl_multineuron.sharing.accumulator`): ``update`` adds a
batch of rows (a row scored twice is an error naming it), ``merge`` joins disjoint results of
one configuration, ``save`` / ``load`` round-trip through CSV (atomically, metadata beside it in
``*.meta.json``), ``equals`` compares every row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MultiNeuronError
from ..files import atomic_write, write_json
from ..sharing.accumulator import check_same_origin, merged_fingerprints

KEY = ["condition", "item_id", "language"]
#: The column of per-token log-probabilities, space-separated in one string per row.
TOKEN_COLUMN = "token_logprobs"


def _floats(col: pd.Series) -> np.ndarray:
    """A column of space-separated numbers as one flat float array (empty cells: none)."""
    return np.array(
        [float(v) for cell in col.fillna("").astype(str) for v in cell.split()], dtype=float
    )


def _meta_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".meta.json")


@dataclass
class ExperimentScores:
    """Scored rows (columns of :func:`~tl_multineuron.experiments.conditions.run_experiment`)."""

    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    meta: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.rows["item_id"].nunique()) if len(self.rows) else 0

    def conditions(self) -> set[str]:
        """Names of the conditions with scored rows."""
        return set(self.rows["condition"]) if len(self.rows) else set()

    def _check_rows(self, rows: pd.DataFrame) -> None:
        missing = [c for c in KEY if c not in rows.columns]
        if missing:
            raise MultiNeuronError(f"experiment rows lack column(s) {missing}")
        if len(self.rows) and list(rows.columns) != list(self.rows.columns):
            raise MultiNeuronError(
                f"experiment rows with columns {list(rows.columns)}; expected "
                f"{list(self.rows.columns)}"
            )
        both = pd.concat([self.rows[KEY], rows[KEY]]) if len(self.rows) else rows[KEY]
        dup = both.duplicated(keep="first")
        if dup.any():
            c, i, x = both[dup].iloc[0].tolist()
            raise MultiNeuronError(f"condition {c!r}, item {i!r}, language {x!r} is scored twice")

    def update(self, rows: pd.DataFrame) -> None:
        """Add scored rows."""
        self._check_rows(rows)
        self.rows = (
            rows.reset_index(drop=True)
            if not len(self.rows)
            else pd.concat([self.rows, rows], ignore_index=True)
        )

    def check_compatible(self, other: ExperimentScores, verb: str = "merge") -> None:
        if (
            len(self.rows)
            and len(other.rows)
            and list(self.rows.columns) != list(other.rows.columns)
        ):
            raise MultiNeuronError(f"cannot {verb} experiment scores with different columns")
        check_same_origin(self.meta, other.meta, "experiment scores", verb)

    def merge(self, other: ExperimentScores) -> ExperimentScores:
        self.check_compatible(other)
        out = ExperimentScores(self.rows.copy(), dict(self.meta))
        out.update(other.rows)
        out.meta["dataset_fingerprints"] = merged_fingerprints(self.meta, other.meta)
        return out

    def save(self, path: str | Path) -> None:
        """The rows as CSV and the metadata beside them, each written atomically."""
        rows = self.rows
        atomic_write(path, lambda tmp: rows.to_csv(tmp, index=False))
        if self.meta:
            write_json(_meta_path(path), self.meta)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentScores:
        p = Path(path)
        if not p.is_file():
            raise MultiNeuronError(f"experiment scores {str(p)!r} do not exist")
        meta = json.loads(_meta_path(p).read_text()) if _meta_path(p).exists() else {}
        return cls(pd.read_csv(p), meta)

    def equals(self, other: ExperimentScores, rtol: float = 0.0) -> bool:
        """Every row equal (in any order). ``rtol > 0``: float values (``logprob``, each of
        ``token_logprobs``) within that relative tolerance, the rest exact: results scored in
        batches of other shapes (another shard's, a resumed run's) differ by float rounding."""
        try:
            self.check_compatible(other, verb="compare")
        except MultiNeuronError:
            return False
        if len(self.rows) != len(other.rows):
            return False
        if not len(self.rows):
            return True
        a = self.rows.sort_values(KEY).reset_index(drop=True)
        b = other.rows[list(self.rows.columns)].sort_values(KEY).reset_index(drop=True)
        if rtol <= 0:
            return a.equals(b)
        close = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
        if TOKEN_COLUMN in a.columns:
            close.append(TOKEN_COLUMN)
        exact = [c for c in a.columns if c not in close]
        if not a[exact].equals(b[exact]):
            return False
        for c in close:
            x, y = (_floats(t[c]) if c == TOKEN_COLUMN else t[c].to_numpy(float) for t in (a, b))
            if x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=0.0, equal_nan=True):
                return False
        return True
