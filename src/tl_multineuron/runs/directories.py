"""Result directories: configuration check, atomic checkpoints and resume.

A run directory holds ``run.json`` (configuration + provenance), ``stats.pt`` (the
accumulator, rewritten atomically after every checkpoint, with the number of items done) and,
optionally, per-item category shards under ``items/``. A directory that holds results of a
different configuration is never overwritten unless asked.

Checkpoints commit per-item results and statistics together: the items done since the last
checkpoint are written as one shard ``items/codes-START-END.pt`` first, then ``stats.pt``
(atomically); ``stats.pt``'s item count is the commit. A shard past it (a crash between the two
writes) is removed on resume, so a resume with the same or another batch size continues the
shards without duplicates or gaps.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import MultiNeuronError
from ..files import atomic_write, write_json
from ..sharing.statistics import SharingStats
from .locks import DirectoryLock

RUN_FILE = "run.json"
#: tables written from the per-item summaries beside the statistics
ITEM_TABLES = (
    "category_bands.csv",
    "partial_subsets.csv",
    "language_pairs.csv",
    "language_similarity.csv",
)
STATS_FILE = "stats.pt"
# files each kind of run writes, and files derived from any of them (stale once one changes)
OWN_FILES = {
    "analyze": (
        "stats.pt",
        "layer_fractions.csv",
        "stability.csv",
        "views.json",
        "items",
        *ITEM_TABLES,
    ),
    "attribute": ("attribution.pt", "attribution.csv", "enrichment.csv"),
    "intervene": (
        "scores.csv",
        "scores.csv.meta.json",
        "summary.csv",
        "comparisons.csv",
        "sets.pt",
        "answer_boundary.json",
    ),
    "grid": (
        "answer_boundary.json",
        "scores.csv",
        "scores.csv.meta.json",
        "summary.csv",
        "comparisons.csv",
        "sets.pt",
        "stats.pt",
        "attribution.pt",
        "attribution.csv",
        "layer_fractions.csv",
        "stability.csv",
        *ITEM_TABLES,
    ),
    "steer-accuracy": (
        "calibration.pt",
        "search_scores.csv",
        "search_scores.csv.meta.json",
        "search.csv",
        "chosen.json",
        "heldout_scores.csv",
        "heldout_scores.csv.meta.json",
        "heldout.csv",
        "verdict.json",
    ),
    "steer-language": (
        "calibration.pt",
        "diff_means.pt",
        "identifier.csv",
        "generations.csv",
        "language_control.csv",
    ),
    "specificity": (
        "calibration.pt",
        "histogram.pt",  # written by runs before the histogram's removal
        "token_stats.pt",
        "act_prob.pt",
        "lape_probabilities.csv",
        "cost.csv",
        "sets.pt",
        "sets.csv",
        "matrix.csv",
        "selectivity.csv",
        "identifier.csv",
        "generations.csv",
        "output_language.csv",
    ),
}
DERIVED_FILES = ("report.html",)
# identity fields that runs sharing one directory (and one report) must agree on
SHARED_IDENTITY = ("model", "dtype", "dataset", "dataset_fingerprint", "languages")


def source_commit() -> dict:
    """The git commit of the tl_multineuron source that runs (``commit``; ``dirty`` when it
    has uncommitted changes), or ``{}`` outside a git checkout."""
    import subprocess

    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if head.returncode != 0:
            return {}
        status = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} (in directory) vs {vb!r} (now)")
    return out


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
        if self.path.exists() and not self.path.is_dir():
            raise MultiNeuronError(
                f"output path {str(self.path)!r} is a file; expected a directory (or a new path)"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MultiNeuronError(f"cannot create output directory {str(self.path)!r}: {e}") from e
        if not os.access(self.path, os.W_OK):
            raise MultiNeuronError(f"output directory {str(self.path)!r} is not writable")
        self.lock = DirectoryLock(self.path).acquire()  # before anything is read or removed
        self._staged: list[tuple[int, list[str], torch.Tensor, torch.Tensor]] = []
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
        if overwrite:
            self._remove(kind)
        self._check_neighbours()

    def _remove(self, kind: str) -> None:
        """``--overwrite``: this kind's results and every file derived from them."""
        for name in (self.stats_name, self.run_name, *OWN_FILES.get(kind, ()), *DERIVED_FILES):
            f = self.path / name
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink(missing_ok=True)

    def _check_neighbours(self) -> None:
        """Other kinds of run in the same directory must be of the same model and data: the
        report joins them."""
        for other in run_files(self.path):
            if other.name == self.run_name:
                continue
            ident = read_identity(other)
            bad = [
                f"{k}: {a!r} ({other.name}) vs {b!r} (now)"
                for k, a, b in _shared_mismatches(ident, self.identity)
            ]
            if bad:
                raise MultiNeuronError(
                    f"output directory {str(self.path)!r} holds {other.name} of another model "
                    f"or dataset ({'; '.join(bad)}); its report would mix them. Use another "
                    "directory, or remove that run's files"
                )

    def close(self) -> None:
        """Release the directory for other processes."""
        self.lock.release()

    def write_run(self, extra: dict) -> None:
        """Write ``run-*.json``: the identity, the command line that made it, when it started
        (unless ``extra`` says) and ``extra``."""
        import shlex
        import sys
        import time

        command = shlex.join([Path(sys.argv[0]).name, *map(self._shown, sys.argv[1:])])
        write_json(
            self.path / self.run_name,
            {
                "identity": self.identity,
                "command": command,
                **source_commit(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **extra,
            },
        )

    def _shown(self, arg: str) -> str:
        """A command-line argument as the run file records it: the results directory given as
        an absolute path by its name (run files name no path of the machine that made them)."""
        if not arg.startswith("/"):
            return arg
        here = {self.path.resolve(), self.path.parent.resolve()}
        return Path(arg).name if Path(arg).resolve() in here else arg

    def load_checkpoint(self, loader: Any = SharingStats.load) -> Any:
        """The committed accumulator (or ``None``); per-item shards past it are removed."""
        f = self.path / self.stats_name
        stats = loader(f) if f.exists() else None
        done = stats.n_items if stats is not None else 0
        for shard, (_, end) in shard_ends(self.path).items():
            if end > done:
                shard.unlink()
        return stats

    def stage_items(
        self, start: int, item_ids: list[str], codes: torch.Tensor, specific_lang: torch.Tensor
    ) -> None:
        """Keep one batch's per-item categories until the next :meth:`checkpoint`."""
        staged = self._staged
        if staged and staged[-1][0] + len(staged[-1][1]) != start:
            raise MultiNeuronError(
                f"per-item results out of order: a batch starting at item {start} after one "
                f"ending at {staged[-1][0] + len(staged[-1][1])}"
            )
        staged.append((start, list(item_ids), codes, specific_lang))

    def checkpoint(self, stats: Any) -> None:
        """Commit: staged per-item results (one shard), then the accumulator (anything with
        ``save(path)``), both atomically; the accumulator's item count is the commit."""
        staged = self._staged
        if staged:
            start, end = staged[0][0], staged[-1][0] + len(staged[-1][1])
            if end != stats.n_items:
                raise MultiNeuronError(
                    f"per-item results end at item {end} but the statistics hold "
                    f"{stats.n_items} items"
                )
            blob = {
                "item_ids": [i for s in staged for i in s[1]],
                "codes": torch.cat([s[2] for s in staged]),
                "specific_lang": torch.cat([s[3] for s in staged]),
            }
            atomic_write(
                self.path / "items" / f"codes-{start:07d}-{end:07d}.pt",
                lambda tmp: torch.save(blob, tmp),
            )
            self._staged = []
        stats.save(self.path / self.stats_name)


def run_files(path: str | Path) -> list[Path]:
    """The run configuration files (``run.json``, ``run-*.json``) of a results directory."""
    path = Path(path)
    return sorted(p for p in (path / RUN_FILE, *path.glob("run-*.json")) if p.is_file())


def read_identity(f: Path) -> dict:
    try:
        return json.loads(f.read_text()).get("identity", {})
    except ValueError as e:
        raise MultiNeuronError(f"{f}: not valid JSON ({e})") from e


def _shared_mismatches(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """``(field, a's value, b's value)`` for every shared identity field both set differently."""
    return [(k, a[k], b[k]) for k in SHARED_IDENTITY if k in a and k in b and a[k] != b[k]]


def check_consistent(path: str | Path) -> dict:
    """The identity fields the runs of a directory share; an error naming the field and the
    files when two runs disagree (a report must not mix them)."""
    shared: dict = {}
    first: dict[str, str] = {}
    for f in run_files(path):
        ident = read_identity(f)
        bad = _shared_mismatches(shared, ident)
        if bad:
            k, was, now = bad[0]
            raise MultiNeuronError(
                f"{str(path)!r} mixes runs: {k} is {was!r} in {first[k]} but {now!r} in "
                f"{f.name}; rerun one of them with --overwrite or use separate directories"
            )
        for k in SHARED_IDENTITY:
            if k in ident and k not in shared:
                shared[k], first[k] = ident[k], f.name
    return shared


def write_stats_tables(stats: SharingStats, out: str | Path) -> None:
    """``layer_fractions.csv`` and ``stability.csv`` (every threshold) of a run directory, and
    from the per-item summaries (statistics written before them have none): ``category_bands.csv``
    (spread over items), ``language_pairs.csv`` (co-activation of every pair of languages),
    ``partial_subsets.csv`` (which languages make up the partial-shared neurons) and
    ``language_similarity.csv`` (co-activation against typological distances)."""
    import pandas as pd

    from ..sharing.language_pairs import pair_table, similarity_table

    out = Path(out)
    atomic_write(out / "layer_fractions.csv", lambda t: stats.to_frame().to_csv(t, index=False))
    stab = pd.concat([stats.stability(t) for t in stats.thresholds])
    atomic_write(out / "stability.csv", lambda t: stab.to_csv(t, index=False))
    items = stats.items
    if items is None or items.n_items == 0:
        return
    tables = {
        "category_bands.csv": pd.concat([items.bands(t) for t in items.thresholds]),
        "partial_subsets.csv": pd.concat([items.subsets(t) for t in items.thresholds]),
        "language_pairs.csv": pair_table(items),
        "language_similarity.csv": similarity_table(items),
    }
    for name, frame in tables.items():
        atomic_write(out / name, lambda t, f=frame: f.to_csv(t, index=False))


def write_attribution_tables(stats: Any, out: str | Path) -> None:
    """``attribution.csv`` (per layer, category and method) and ``enrichment.csv`` (every
    language x layer cell: top-K share, base rate, ratio and its interval) of an
    :class:`~tl_multineuron.attribution.stats.AttributionStats`."""
    import pandas as pd

    out = Path(out)
    df = stats.to_frame()
    atomic_write(out / "attribution.csv", lambda t: df.to_csv(t, index=False))
    enr = pd.concat(
        [s.enrichment_frame(over=()) for s in stats.methods.values()], ignore_index=True
    )
    atomic_write(out / "enrichment.csv", lambda t: enr.to_csv(t, index=False))


def shard_ends(path: Path) -> dict[Path, tuple[int, int]]:
    """Per-item shards of a run directory and their item ranges ``[start, end)``."""
    out = {}
    for f in (path / "items").glob("codes-*.pt"):
        parts = f.stem.split("-")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[f] = (int(parts[1]), int(parts[2]))
        else:  # written before checkpoints committed items (one shard per batch): read it
            start = int(parts[1])
            n = len(torch.load(f, weights_only=True)["item_ids"])
            out[f] = (start, start + n)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def load_item_categories(path: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Concatenate per-item category shards of a run directory: ids, codes, specific_lang.
    Shards must cover ``[0, n)`` without gaps or overlaps (an error names the first that
    does not)."""
    shards = shard_ends(Path(path))
    if not shards:
        raise MultiNeuronError(f"{str(path)!r} has no per-item categories (run with --save-items)")
    end = 0
    for f, (s, e) in shards.items():
        if s != end:
            raise MultiNeuronError(
                f"{f}: per-item shard covers items [{s}, {e}) but the previous one ends at "
                f"{end} ({'a gap' if s > end else 'an overlap'}); rerun with --overwrite"
            )
        end = e
    files = list(shards)
    parts = [torch.load(f, weights_only=True) for f in files]
    ids = [i for p in parts for i in p["item_ids"]]
    return (
        ids,
        torch.cat([p["codes"] for p in parts]),
        torch.cat([p["specific_lang"] for p in parts]),
    )


def scorer_provenance(model: Any, attention: str = "auto") -> dict:
    """Where a run that scores answers ran (:func:`~tl_multineuron.backends.models.provenance`)
    and which path the scorer's metrics took (vocabulary-blocked, or the whole vocabulary and
    why: :func:`~tl_multineuron.experiments.answer_metrics.metrics_path`)."""
    from ..backends.models import provenance
    from ..experiments.answer_metrics import metrics_path

    return {**provenance(model, attention), "answer_metrics": metrics_path(model)}
