"""Joining shard result directories (``--shard K/N``, or the ranks of a ``torchrun`` run) into
one directory that reads like a single run.

Every kind of run a shard directory holds is merged: analyze (``stats.pt``, per-item
categories), attribute (``attribution.pt``) and intervene (``scores.csv``, ``sets.pt``). The
shards must come from one configuration, model and dataset (their identities may differ only
in the shard and its items' fingerprint), be of one split, disjoint, complete and finished.
Accumulators merge exactly (:mod:`tl_multineuron.sharing.accumulator`), so the result equals one run
over all items.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..attribution.stats import AttributionStats
from ..errors import MultiNeuronError
from ..experiments.scores import ExperimentScores
from ..files import atomic_write
from ..sharing.statistics import SharingStats
from .directories import (
    RUN_FILE,
    RunDir,
    read_identity,
    shard_ends,
    write_attribution_tables,
    write_stats_tables,
)
from .shards import check_cover

# kind -> (run file, accumulator file)
KINDS = {
    "analyze": (RUN_FILE, "stats.pt"),
    "attribute": ("run-attribute.json", "attribution.pt"),
    "intervene": ("run-intervene.json", "scores.csv"),
}
_PER_SHARD = ("shard", "dataset_fingerprint")  # identity fields that differ between shards


def shard_kinds(path: str | Path) -> list[str]:
    """The kinds of run a directory holds."""
    return [k for k, (run, _) in KINDS.items() if (Path(path) / run).is_file()]


def _identity(path: Path, kind: str) -> dict:
    ident = read_identity(path / KINDS[kind][0])
    if "shard" not in ident:
        raise MultiNeuronError(f"{path}: its {kind} run is not a shard (made without --shard)")
    return ident


def check_shards(dirs: Sequence[str | Path], kind: str) -> tuple[dict, list[tuple[Path, dict]]]:
    """``(merged identity, [(dir, shard record)] in shard order)`` after checking that the
    shards' ``kind`` runs are of one configuration and dataset, disjoint and complete."""
    runs = [(Path(d), _identity(Path(d), kind)) for d in dirs]
    first, base = runs[0][0], {k: v for k, v in runs[0][1].items() if k not in _PER_SHARD}
    for d, ident in runs[1:]:
        other = {k: v for k, v in ident.items() if k not in _PER_SHARD}
        diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
        if diff:
            raise MultiNeuronError(
                f"{d} is a shard of another run than {first}: {diff[0]} differs "
                f"({other.get(diff[0])!r} vs {base.get(diff[0])!r})"
            )
    records = [ident["shard"] for _, ident in runs]
    if len({r["of"] for r in records}) != 1:
        raise MultiNeuronError("the shards come from different datasets (fingerprints differ)")
    order = check_cover(records, int(records[0]["n_items"]))
    by_index = {int(ident["shard"]["index"]): d for d, ident in runs}
    identity = {**base, "dataset_fingerprint": records[0]["of"]}
    identity.pop("kind", None)
    return identity, [(by_index[int(r["index"])], r) for r in order]


def _finished(d: Path, rec: dict, n_items: int, what: str) -> None:
    want = int(rec["stop"]) - int(rec["start"])
    if n_items != want:
        raise MultiNeuronError(
            f"{d}: shard {rec['index']}/{rec['count']} holds {n_items} of its {want} {what}; "
            "finish it with --resume first"
        )


def merge_shards(
    dirs: Sequence[str | Path],
    out: str | Path,
    overwrite: bool = False,
    *,
    kinds: Sequence[str] | None = None,
    resume: bool = False,
    reduced: SharingStats | None = None,
) -> dict[str, int]:
    """Merge every kind of run the shard directories hold (or only ``kinds``) into ``out``;
    returns ``{kind: items}``. ``resume``: ``out`` may already hold this merge. ``reduced``:
    the shards' sharing statistics already summed (a torchrun all-reduce), used as they are."""
    if not dirs:
        raise MultiNeuronError("no shards to merge")
    kinds = list(kinds) if kinds is not None else shard_kinds(dirs[0])
    if not kinds:
        raise MultiNeuronError(f"{dirs[0]}: no run.json / run-*.json; not a result directory")
    for d in dirs[1:]:
        lacking = [k for k in kinds if k not in shard_kinds(d)]
        if lacking:
            raise MultiNeuronError(f"{d}: holds no {lacking[0]} run, but {dirs[0]} does")
    plans = {k: check_shards(dirs, k) for k in kinds}  # every check before anything is written
    done = {}
    for kind, (identity, shards) in plans.items():
        opts = {"overwrite": overwrite, "resume": resume}
        if kind == "analyze":
            opts["reduced"] = reduced
        done[kind] = _MERGERS[kind](identity, shards, Path(out), **opts)
    return done


def _merge_analyze(
    identity: dict,
    shards: list,
    out: Path,
    overwrite: bool,
    resume: bool,
    reduced: SharingStats | None = None,
) -> int:
    stats = reduced if reduced is not None else _merged(shards, SharingStats.load, "stats.pt")
    if reduced is not None and stats.n_items != int(shards[0][1]["n_items"]):
        raise MultiNeuronError(
            f"the reduced statistics hold {stats.n_items} of {shards[0][1]['n_items']} items"
        )
    with _writing(out, identity, "analyze", shards, overwrite, resume) as run:
        if identity.get("save_items"):  # per-item categories, renumbered to global items
            for d, rec in shards:
                for f, (a, b) in shard_ends(d).items():
                    s = int(rec["start"])
                    dest = out / "items" / f"codes-{s + a:07d}-{s + b:07d}.pt"
                    atomic_write(dest, lambda t, f=f: shutil.copyfile(f, t))
        run.checkpoint(stats)
        write_stats_tables(stats, out)
    return stats.n_items


def _merge_attribute(identity: dict, shards: list, out: Path, overwrite: bool, resume: bool) -> int:
    stats = _merged(shards, AttributionStats.load, "attribution.pt")
    with _writing(out, identity, "attribute", shards, overwrite, resume) as run:
        run.checkpoint(stats)
        write_attribution_tables(stats, out)
    return stats.n_items


def _merge_intervene(identity: dict, shards: list, out: Path, overwrite: bool, resume: bool) -> int:
    from .grid import write_experiment_tables

    conditions = set((identity.get("grid") or {}).get("conditions") or ())
    scores, blobs = None, []
    for d, rec in shards:
        part = ExperimentScores.load(d / "scores.csv")
        missing = sorted(conditions - part.conditions())
        if missing:
            raise MultiNeuronError(
                f"{d}: shard {rec['index']}/{rec['count']} has not scored {len(missing)} "
                f"condition(s) (e.g. {missing[0]!r}); finish it with --resume first"
            )
        _finished(d, rec, part.n_items, "evaluated items")
        scores = part if scores is None else scores.merge(part)
        blobs.append(torch.load(d / "sets.pt", weights_only=True))
    cal = SharingStats.from_state(blobs[0]["calibration"])
    for (d, _), b in zip(shards[1:], blobs[1:], strict=True):
        if not cal.equals(SharingStats.from_state(b["calibration"])):
            raise MultiNeuronError(
                f"{d}: its calibration statistics differ from {shards[0][0]}'s, so its static "
                "sets would too; were the shards made by different code or weights?"
            )
    sets = {
        "calibration": blobs[0]["calibration"],
        "codes": torch.cat([b["codes"] for b in blobs]),
        "specific_lang": torch.cat([b["specific_lang"] for b in blobs]),
        "languages": blobs[0]["languages"],
    }
    with _writing(out, identity, "intervene", shards, overwrite, resume):
        atomic_write(out / "sets.pt", lambda t: torch.save(sets, t))
        scores.save(out / "scores.csv")
        write_experiment_tables(scores.rows, out)
    return scores.n_items


def _merged(shards: list, load: Any, name: str) -> Any:
    """The accumulators ``name`` of finished shards, merged in shard order."""
    out = None
    for d, rec in shards:
        part = load(d / name)
        _finished(d, rec, part.n_items, "items")
        out = part if out is None else out.merge(part)
    return out


@contextmanager
def _writing(
    out: Path, identity: dict, kind: str, shards: list, overwrite: bool, resume: bool
) -> Iterator[RunDir]:
    """``out`` bound to the merged run of ``kind`` (its run file written, naming the shards),
    released afterwards."""
    run = RunDir(
        out, identity, overwrite=overwrite, resume=resume, kind=kind, stats_file=KINDS[kind][1]
    )
    try:
        merged_from = [str(d) for d, _ in shards]
        run.write_run({"merged_from": merged_from, "n_items": int(shards[0][1]["n_items"])})
        yield run
    finally:
        run.close()


_MERGERS = {"analyze": _merge_analyze, "attribute": _merge_attribute, "intervene": _merge_intervene}
