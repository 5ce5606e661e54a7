"""Result directories: configuration check, atomic checkpoints and resume.

A run directory holds ``run.json`` (configuration + provenance), ``stats.pt`` (the
accumulator, rewritten atomically after every checkpoint, with the number of items done) and,
optionally, per-item category shards under ``items/``. A directory that holds results of a
different configuration is never overwritten unless asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import MultiNeuronError
from .statistics import SharingStats, atomic_write

RUN_FILE = "run.json"
STATS_FILE = "stats.pt"


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} (in directory) vs {vb!r} (now)")
    return out


def write_json(path: Path, obj: Any) -> None:
    atomic_write(
        path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    )


class RunDir:
    """An output directory bound to one configuration (``identity``)."""

    def __init__(
        self,
        path: str | Path,
        identity: dict,
        *,
        resume: bool = False,
        overwrite: bool = False,
        kind: str = "analyze",
        stats_file: str = STATS_FILE,
    ) -> None:
        self.path = Path(path)
        self.identity = {"kind": kind, **identity}
        self.run_name = RUN_FILE if kind == "analyze" else f"run-{kind}.json"
        self.stats_name = stats_file
        run_file = self.path / self.run_name
        if run_file.exists() and not overwrite:
            old = json.loads(run_file.read_text()).get("identity", {})
            diffs = _diff(old, json.loads(json.dumps(self.identity)))
            if diffs:
                raise MultiNeuronError(
                    f"output directory {str(self.path)!r} holds results of a different "
                    f"configuration ({'; '.join(diffs)}); use another directory or --overwrite"
                )
            if not resume and (self.path / self.stats_name).exists():
                raise MultiNeuronError(
                    f"output directory {str(self.path)!r} already holds results of this "
                    "configuration; pass --resume to continue them or --overwrite to redo them"
                )
        if overwrite and self.path.exists():
            for f in (self.stats_name, self.run_name):
                (self.path / f).unlink(missing_ok=True)
            items = self.path / "items"
            if kind == "analyze" and items.exists():
                for f in items.glob("*.pt"):
                    f.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def write_run(self, extra: dict) -> None:
        write_json(self.path / self.run_name, {"identity": self.identity, **extra})

    def load_checkpoint(self, loader: Any = SharingStats.load) -> Any:
        f = self.path / self.stats_name
        return loader(f) if f.exists() else None

    def checkpoint(self, stats: Any) -> None:
        """Save the accumulator atomically (anything with ``save(path)``)."""
        stats.save(self.path / self.stats_name)

    def save_items(
        self, start: int, item_ids: list[str], codes: torch.Tensor, specific_lang: torch.Tensor
    ) -> None:
        atomic_write(
            self.path / "items" / f"codes-{start:07d}.pt",
            lambda tmp: torch.save(
                {"item_ids": item_ids, "codes": codes, "specific_lang": specific_lang}, tmp
            ),
        )


def write_stats_tables(stats: SharingStats, out: str | Path) -> None:
    """``layer_fractions.csv`` and ``stability.csv`` (every threshold) of a run directory."""
    import pandas as pd

    out = Path(out)
    atomic_write(out / "layer_fractions.csv", lambda t: stats.to_frame().to_csv(t, index=False))
    stab = pd.concat([stats.stability(t) for t in stats.thresholds])
    atomic_write(out / "stability.csv", lambda t: stab.to_csv(t, index=False))


def load_item_categories(path: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Concatenate per-item category shards of a run directory: ids, codes, specific_lang."""
    files = sorted((Path(path) / "items").glob("codes-*.pt"))
    if not files:
        raise MultiNeuronError(f"{str(path)!r} has no per-item categories (run with --save-items)")
    parts = [torch.load(f, weights_only=True) for f in files]
    ids = [i for p in parts for i in p["item_ids"]]
    return (
        ids,
        torch.cat([p["codes"] for p in parts]),
        torch.cat([p["specific_lang"] for p in parts]),
    )
