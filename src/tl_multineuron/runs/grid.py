"""The paper's experiment grid over a task: one recording pass, then every condition.

One pass over the calibration and evaluation items of a task records the MLP activations
once and feeds, batch by batch: the sharing statistics of all those items (``stats.pt``,
with a threshold sweep), contribution / effective attribution (``attribution.pt``), the
calibration split's statistics (static sets, magnitudes for matched controls) and the
evaluated items' categories (dynamic sets). The experiment then scores every condition
(``scores.csv``), summarises it (``summary.csv``) and compares it, paired by item and language
(``comparisons.csv``). Each file is written atomically; ``resume`` skips what is done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..attribution.analysis import (
    AttributionConfig,
    answers_of,
    final_residual_hook,
    new_attribution_stats,
    update_direct_scores,
)
from ..attribution.stats import AttributionStats
from ..backends.models import identity_meta
from ..backends.sites import NEURON_EDIT_HOOK, is_feature_site
from ..backends.weights import model_weights
from ..data.datasets import ParallelDataset
from ..data.splits import calibration_split, split_record
from ..errors import MultiNeuronError
from ..experiments.comparisons import paired_comparisons
from ..experiments.conditions import Condition, ExperimentSets, accuracy_summary, run_experiment
from ..experiments.scores import ExperimentScores
from ..files import atomic_write, write_json
from ..sharing.accumulator import check_same_origin
from ..sharing.analysis import AnalysisConfig, new_stats
from ..sharing.classification import Categories
from ..sharing.recording import RecordingConfig, iter_dataset_with
from ..sharing.statistics import SharingStats
from .directories import RunDir, scorer_provenance, write_stats_tables
from .shards import Shard


@dataclass(frozen=True)
class GridConfig:
    """One task's grid. ``eval_items``: the last N items are evaluated; ``calibration``: the
    first N items (at most all the others) calibrate the static sets. ``hook``: the site whose
    units the sets hold (MLP neurons by default; an SAE feature site edits features and has
    no attribution)."""

    conditions: tuple[Condition, ...]
    eval_items: int = 48
    calibration: int = 64
    thresholds: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    min_frequency: float = 0.9
    specific_frequency: float = 0.5
    k: int | float = 50
    batch_size: int = 8
    score_batch: int = 64
    max_rows: int = 512
    conditions_per_pass: int = 40
    allow_empty: bool = False
    analysis: bool = True
    max_memory: str | None = None
    attention: str = "auto"
    extra: dict = field(default_factory=dict)
    hook: str = NEURON_EDIT_HOOK

    def __post_init__(self) -> None:
        if self.eval_items < 1 or self.calibration < 1:
            raise MultiNeuronError(
                f"eval_items {self.eval_items} / calibration {self.calibration}: need >= 1"
            )
        if not self.conditions:
            raise MultiNeuronError("a grid needs at least one condition")
        if self.thresholds[0] != 0.0 and self.analysis:
            raise MultiNeuronError("the first threshold of a grid is the sets' threshold, 0")

    def identity(self) -> dict:
        d = asdict(self)
        d["conditions"] = [c.name for c in self.conditions]
        if d["hook"] == NEURON_EDIT_HOOK:  # runs made before sites were a grid setting
            d.pop("hook")
        for key in (
            "batch_size",
            "score_batch",
            "max_rows",
            "conditions_per_pass",
            "max_memory",
            "attention",
        ):
            d.pop(key)
        return d


def record_pass(
    model: Any,
    cal: ParallelDataset,
    ev: ParallelDataset,
    cfg: GridConfig,
    progress: bool = False,
) -> tuple[SharingStats | None, AttributionStats | None, SharingStats, Categories]:
    """One pass over calibration + evaluation items (:func:`split`): (stats, attribution,
    calibration stats, evaluated items' categories)."""
    used = ev.with_items(cal.items + ev.items)
    rec = RecordingConfig(hook=cfg.hook)
    acfg = AnalysisConfig(thresholds=cfg.thresholds if cfg.analysis else (0.0,), recording=rec)
    stats = new_stats(model, used, acfg)
    cal_stats = new_stats(model, cal, AnalysisConfig(recording=rec))
    attr_cfg = AttributionConfig(k=cfg.k)
    scored = cfg.analysis and not is_feature_site(cfg.hook)  # scores need W_out rows
    attr = new_attribution_stats(model, used, attr_cfg) if scored else None
    layers = rec.layer_indices(model)
    codes, spec = [], []
    n_cal = len(cal)
    final = final_residual_hook(model)
    need_final = attr is not None and model_weights(model).has_final_norm

    def batches():  # calibration and evaluated items never share a batch: every shard of the
        # evaluated items then records the calibration split identically (padding, rounding)
        for offset, part in ((0, cal), (n_cal, ev)):
            for s, acts, extras in iter_dataset_with(
                model,
                part,
                rec,
                cfg.batch_size,
                0,
                progress,
                extra_hooks=[final] if need_final else [],
                max_memory=cfg.max_memory,
                attention=cfg.attention,
            ):
                yield offset + s, acts, extras

    for s, acts, extras in batches():
        batch_items = used.items[s : s + acts.shape[0]]
        ids = [it.item_id for it in batch_items]
        cats = stats.update(acts, ids)
        c0 = cats.codes[0].cpu()
        if attr is not None:
            toks = answers_of(model, used, batch_items)
            update_direct_scores(
                attr, model, attr_cfg, acts, c0, toks, layers, ids, extras.get(final)
            )
        k = max(0, min(acts.shape[0], n_cal - s))  # this batch's calibration items
        if k:
            cal_stats.update(acts[:k], ids[:k])
        if k < acts.shape[0]:
            codes.append(c0[k:])
            spec.append(cats.specific_lang[0, k:].cpu())
    return (
        stats if cfg.analysis else None,
        attr,
        cal_stats,
        Categories(torch.cat(codes), torch.cat(spec), ev.languages),
    )


def run_task(
    model: Any,
    ds: ParallelDataset,
    out: str | Path,
    cfg: GridConfig,
    identity: dict,
    *,
    resume: bool = False,
    overwrite: bool = False,
    kind: str = "grid",
    progress: bool = False,
    log: Any = None,
    shard: Shard | None = None,
) -> pd.DataFrame:
    """Run one task's grid into ``out``; returns its comparisons. ``shard``: evaluate only
    that shard of the evaluated items (the calibration split, hence the static sets, is the
    same in every shard; ``tl-multineuron merge`` joins them)."""
    out = Path(out)
    say = log or (lambda *_: None)
    cal, ev = calibration_split(ds, cfg.eval_items, cfg.calibration)
    offset, n_eval = 0, len(ev)
    if shard is not None:
        rec = shard.record(n_eval, ds.fingerprint())
        identity = {**identity, "shard": {**rec, "unit": "evaluated items"}}
        offset = rec["start"]
        ev = ev.slice(rec["start"], rec["stop"])
    run = RunDir(
        out,
        {**identity, "grid": cfg.identity()},
        resume=resume,
        overwrite=overwrite,
        kind=kind,
        stats_file="scores.csv",
    )
    run.write_run({**split_record(cal, ev), **scorer_provenance(model, cfg.attention)})
    sets_file = out / "sets.pt"
    t0 = time.perf_counter()
    if resume and sets_file.exists():
        blob = torch.load(sets_file, weights_only=True)
        cal_stats = SharingStats.from_state(blob["calibration"])
        cats = Categories(blob["codes"], blob["specific_lang"], tuple(blob["languages"]))
        say(f"{ds.name}: recording pass already done")
    else:
        stats, attr, cal_stats, cats = record_pass(model, cal, ev, cfg, progress)
        if stats is not None:
            stats.save(out / "stats.pt")
            write_stats_tables(stats, out)
        if attr is not None:
            attr.save(out / "attribution.pt")
            atomic_write(out / "attribution.csv", lambda t: attr.to_frame().to_csv(t, index=False))
        blob = {
            "calibration": cal_stats.state(),
            "codes": cats.codes,
            "specific_lang": cats.specific_lang,
            "languages": list(cats.languages),
        }
        atomic_write(sets_file, lambda t: torch.save(blob, t))
        say(f"{ds.name}: recording pass {time.perf_counter() - t0:.1f}s")
    sets = ExperimentSets.build(
        cats,
        cal_stats,
        cfg.min_frequency,
        cfg.specific_frequency,
        offset=offset,
        total=n_eval,
    )
    scores_file = out / "scores.csv"
    meta = {"dataset": ds.name, "dataset_fingerprint": ev.fingerprint(), **identity_meta(model)}
    if resume and scores_file.exists():
        scores = ExperimentScores.load(scores_file)
        check_same_origin(scores.meta, meta, "experiment scores", verb="continue")
    else:
        scores = ExperimentScores(meta=meta)
    done = scores.conditions()

    def save(conds: list[Condition], rows: pd.DataFrame) -> None:
        scores.update(rows)
        scores.save(scores_file)
        say(f"{ds.name}: {len(scores.conditions())}/{len(cfg.conditions)} conditions scored")

    t1 = time.perf_counter()
    run_experiment(
        model,
        ev,
        cfg.conditions,
        sets=sets,
        batch_size=cfg.score_batch,
        max_rows=cfg.max_rows,
        conditions_per_pass=cfg.conditions_per_pass,
        allow_empty=cfg.allow_empty,
        done=lambda c: c.name in done,
        on_scored=save,
        progress=progress,
        max_memory=cfg.max_memory,
        attention=cfg.attention,
        on_baseline=lambda found: write_json(
            out / BOUNDARY_FILE, {"findings": [f.to_dict() for f in found]}
        ),
    )
    say(f"{ds.name}: conditions {time.perf_counter() - t1:.1f}s")
    comp = write_experiment_tables(scores.rows, out)
    run.close()
    return comp


#: The answer-boundary check of a run's unedited condition (see ``run_experiment``).
BOUNDARY_FILE = "answer_boundary.json"


def write_experiment_tables(rows: pd.DataFrame, out: str | Path) -> pd.DataFrame:
    """``summary.csv`` and ``comparisons.csv`` of scored rows; returns the comparisons."""
    out = Path(out)
    summ = accuracy_summary(rows)
    atomic_write(out / "summary.csv", lambda t: summ.to_csv(t, index=False))
    comp = paired_comparisons(rows)
    atomic_write(out / "comparisons.csv", lambda t: comp.to_csv(t, index=False))
    return comp


def headline(comp: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """The comparisons of one metric as a compact table (delta [interval], p)."""
    c = comp[comp["metric"] == metric]
    return pd.DataFrame(
        {
            "task": c["task"],
            "condition": c["condition"],
            "vs": c["reference"],
            "value": c["value"].round(2),
            "reference": c["reference_value"].round(2),
            "delta [95% CI]": [
                f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                for d, lo, hi in zip(c["delta"], c["ci_low"], c["ci_high"], strict=True)
            ],
            "p": c["p_value"].map(lambda p: f"{p:.2g}"),
            "n": c["n_rows"],
        }
    )


def write_index(out: str | Path, tasks: Sequence[str], extra: dict) -> None:
    atomic_write(
        Path(out) / "grid.json",
        lambda t: Path(t).write_text(json.dumps({"tasks": list(tasks), **extra}, indent=2)),
    )
