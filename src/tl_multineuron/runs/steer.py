"""Run directories of the steering studies (``tl-multineuron steer``): resumable, atomic.

Accuracy study (``OUT/accuracy/``): ``calibration.pt`` (statistics of the calibration split:
the static sets and means), ``search_scores.csv`` (calibration rows under every configuration
of the search, rewritten after each pass), ``search.csv`` (the surface), ``chosen.json``,
``heldout_scores.csv`` and ``heldout.csv`` (paired comparisons), ``verdict.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..backends.models import identity_meta, provenance
from ..data.datasets import ParallelDataset
from ..data.splits import calibration_split, split_record
from ..errors import MultiNeuronError
from ..experiments.scores import ExperimentScores
from ..files import atomic_write, write_json
from ..sharing.accumulator import check_same_origin
from ..sharing.analysis import AnalysisConfig, analyze
from ..sharing.statistics import SharingStats
from ..steering.sets import SteerConfig, SteeringSets, search_space
from ..steering.study import (
    choose,
    heldout_comparisons,
    score_steering,
    search_surface,
    verdict,
)
from .directories import RunDir


@dataclass(frozen=True)
class AccuracySteerConfig:
    """The accuracy study. The calibration split (the first ``calibration`` items) gives the
    static sets; the search scores its first ``search_items`` items; the last ``eval_items``
    are evaluated once. ``bands``: ``None`` = :func:`~tl_multineuron.steering.sets.default_bands`.
    ``per_pass`` configurations share one pass over the rows (one prompt-prefix pass each):
    the default search (31) runs in one; results are saved after each pass."""

    eval_items: int = 48
    calibration: int = 64
    search_items: int = 24
    bands: tuple[tuple[int, int], ...] | None = None
    alphas: tuple[float, ...] = (1.25, 1.5)
    betas: tuple[float, ...] = (1.0, 0.5)
    mu_strengths: tuple[float, ...] = (0.5,)
    seeds: tuple[int, ...] = (0, 1, 2)
    min_frequency: float = 0.9
    specific_frequency: float = 0.5
    max_english_drop: float = 1.0
    english: str = "en"
    batch_size: int = 8
    score_batch: int = 64
    max_rows: int = 512
    per_pass: int = 40
    max_memory: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.search_items < 1 or self.search_items > self.calibration:
            raise MultiNeuronError(
                f"search_items {self.search_items}: expected 1..calibration ({self.calibration})"
            )
        if not self.seeds:
            raise MultiNeuronError("the held-out comparison needs at least one random seed")

    def identity(self) -> dict:
        d = asdict(self)
        for k in ("batch_size", "score_batch", "max_rows", "per_pass", "max_memory"):
            d.pop(k)
        return d

    def configs(self, n_layers: int) -> list[SteerConfig]:
        return search_space(n_layers, self.bands, self.alphas, self.betas, self.mu_strengths)


def calibration_stats(
    model: Any, cal: ParallelDataset, path: Path, resume: bool, batch_size: int = 8
) -> SharingStats:
    """The calibration split's statistics (sets and means), saved to ``path``; reused on
    resume."""
    if resume and path.exists():
        return SharingStats.load(path)
    stats = analyze(model, cal, AnalysisConfig(batch_size=batch_size)).stats
    stats.save(path)
    return stats


def _scores(path: Path, meta: dict, resume: bool) -> ExperimentScores:
    if resume and path.exists():
        s = ExperimentScores.load(path)
        check_same_origin(s.meta, meta, "steering scores", verb="continue")
        return s
    return ExperimentScores(meta=meta)


def _score_into(
    model: Any,
    ds: ParallelDataset,
    sets: SteeringSets,
    todo: list[tuple[SteerConfig, int | None]],
    path: Path,
    meta: dict,
    cfg: AccuracySteerConfig,
    resume: bool,
    progress: bool,
    say: Any,
) -> pd.DataFrame:
    scores = _scores(path, meta, resume)
    done = scores.conditions()

    def name(c: SteerConfig, seed: int | None) -> str:
        return c.name + (f" random seed={seed}" if seed is not None else "")

    left = [(c, s) for c, s in todo if name(c, s) not in done]

    def save(rows: pd.DataFrame) -> None:
        scores.update(rows)
        scores.save(path)
        say(f"{ds.name}: {len(scores.conditions())}/{len(todo)} configurations scored")

    if left:
        score_steering(
            model, ds, sets, left, batch_size=cfg.score_batch, max_rows=cfg.max_rows,
            per_pass=cfg.per_pass, on_scored=save, progress=progress, max_memory=cfg.max_memory,
        )  # fmt: skip
    return scores.rows


def run_accuracy_study(
    model: Any,
    ds: ParallelDataset,
    out: str | Path,
    cfg: AccuracySteerConfig,
    identity: dict,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    log: Any = None,
) -> pd.DataFrame:
    """Calibrate, search, choose and evaluate once into ``out``; returns the held-out
    comparisons (:func:`~tl_multineuron.steering.study.heldout_comparisons`)."""
    out = Path(out)
    say = log or (lambda *_: None)
    if cfg.english not in ds.languages:
        say(f"{ds.name}: no {cfg.english!r} rows; the English constraint does not apply")
    cal, ev = calibration_split(ds, cfg.eval_items, cfg.calibration)
    search = cal.head(cfg.search_items)
    n_layers = model.cfg.n_layers
    configs = cfg.configs(n_layers)  # a band outside the model fails before any pass
    run = RunDir(
        out,
        {**identity, "steer": cfg.identity()},
        resume=resume,
        overwrite=overwrite,
        kind="steer-accuracy",
        stats_file="heldout_scores.csv",
    )
    run.write_run(
        {**split_record(cal, ev), "search_items": len(search), **provenance(model, "auto")}
    )
    t0 = time.perf_counter()
    stats = calibration_stats(model, cal, out / "calibration.pt", resume, cfg.batch_size)
    sets = SteeringSets.from_stats(stats, cfg.min_frequency, cfg.specific_frequency)
    say(f"{ds.name}: calibration statistics {time.perf_counter() - t0:.1f}s")
    t1 = time.perf_counter()
    meta = {"dataset": ds.name, **identity_meta(model)}
    todo = [(SteerConfig(), None)] + [(c, None) for c in configs]
    rows = _score_into(
        model, search, sets, todo, out / "search_scores.csv",
        {**meta, "dataset_fingerprint": search.fingerprint()}, cfg, resume, progress, say,
    )  # fmt: skip
    surface = search_surface(rows, cfg.english)
    atomic_write(out / "search.csv", lambda t: surface.to_csv(t, index=False))
    best = choose(surface, cfg.max_english_drop)
    chosen = next(c for c in configs if c.name == best)
    write_json(
        out / "chosen.json",
        {"config": chosen.to_dict(), "name": best, "search_seconds": time.perf_counter() - t1,
         "on_calibration": surface[surface["config"] == best].iloc[0].to_dict()},
    )  # fmt: skip
    say(f"{ds.name}: search of {len(configs)} configurations {time.perf_counter() - t1:.1f}s; "
        f"chosen {best}")  # fmt: skip
    todo = [(SteerConfig(), None), (chosen, None)] + [(chosen, s) for s in cfg.seeds]
    held = _score_into(
        model, ev, sets, todo, out / "heldout_scores.csv",
        {**meta, "dataset_fingerprint": ev.fingerprint()}, cfg, resume, progress, say,
    )  # fmt: skip
    comp = heldout_comparisons(held, cfg.english)
    atomic_write(out / "heldout.csv", lambda t: comp.to_csv(t, index=False))
    v = verdict(comp, cfg.english, cfg.max_english_drop)  # without English: all rows count
    write_json(out / "verdict.json", {"chosen": best, **v})
    run.close()
    return comp
