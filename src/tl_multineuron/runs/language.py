"""The output-language study's run directory (``OUT/language/``): resumable, atomic.

Files: ``calibration.pt`` (statistics of the calibration split: specific sets and means),
``diff_means.pt`` (one residual vector per target), ``identifier.csv`` (the identifier's
accuracy on the dataset's gold answers, per language), ``generations.csv`` (one row per
condition x item, rewritten after each condition) and ``language_control.csv``
(:func:`~tl_multineuron.steering.language.control_table`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..data.answers import text_prefix_match
from ..data.datasets import ParallelDataset
from ..data.splits import calibration_split, split_record
from ..errors import MultiNeuronError
from ..experiments.evaluation import generate_greedy
from ..experiments.interventions import apply
from ..files import atomic_write
from ..sharing.recording import get_tokenizer
from ..steering.identifier import LanguageIdentifier, identifier_accuracy
from ..steering.language import (
    METHODS,
    control_table,
    diff_of_means,
    language_edit,
    specific_set,
)
from ..steering.sets import SteeringSets
from .directories import RunDir, scorer_provenance
from .steer import calibration_stats

RELIABLE = 90.0  # identifier accuracy (%) on gold answers below which a target is flagged


@dataclass(frozen=True)
class LanguageSteerConfig:
    """Prompts in ``source``, steered toward each of ``targets`` (default: every other
    language) with ``methods`` at each of ``strengths``; the last ``eval_items`` items are
    generated, the first ``calibration`` give the sets, means and diff-means vectors."""

    source: str = "en"
    targets: tuple[str, ...] | None = None
    methods: tuple[str, ...] = METHODS
    strengths: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    dom_layer: int | None = None
    eval_items: int = 24
    calibration: int = 64
    min_frequency: float = 0.9
    specific_frequency: float = 0.5
    max_new_tokens: int = 8
    batch_size: int = 24

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise MultiNeuronError(f"language steering methods {bad or '[]'}; expected {METHODS}")
        if not self.strengths:
            raise MultiNeuronError("language steering needs at least one strength")
        if self.max_new_tokens < 1:
            raise MultiNeuronError(f"max_new_tokens {self.max_new_tokens}: need >= 1")

    def checked(self, ds: ParallelDataset) -> LanguageSteerConfig:
        """Languages exist in ``ds`` and the identifier supports them; fills ``targets``."""
        langs = list(ds.languages)
        if self.source not in langs:
            raise MultiNeuronError(f"source language {self.source!r} is not in the data ({langs})")
        targets = self.targets or tuple(x for x in langs if x != self.source)
        bad = [x for x in targets if x not in langs or x == self.source]
        if bad:
            raise MultiNeuronError(
                f"target language(s) {bad}: expected languages of the data other than the "
                f"source {self.source!r} ({langs})"
            )
        LanguageIdentifier(langs)  # every language must be identifiable
        return LanguageSteerConfig(**{**asdict(self), "targets": tuple(targets)})

    def identity(self) -> dict:
        d = asdict(self)
        d.pop("batch_size")
        return d


def conditions(cfg: LanguageSteerConfig) -> list[tuple[str, float, str | None]]:
    """(method, strength, target) to generate: ``none`` and ``deactivate`` once (they do not
    depend on the target), the rest per target and strength."""
    out: list[tuple[str, float, str | None]] = [("none", 0.0, None)]
    if "deactivate" in cfg.methods:
        out.append(("deactivate", 1.0, None))
    for t in cfg.targets or ():
        for m in cfg.methods:
            if m != "deactivate":
                out += [(m, float(s), t) for s in cfg.strengths]
    return out


def _cond_name(method: str, strength: float, target: str | None) -> str:
    if method == "none":
        return "none"
    if target is None:
        return method
    return f"{method} x{strength:g} -> {target}"


def run_language_study(
    model: Any,
    ds: ParallelDataset,
    out: str | Path,
    cfg: LanguageSteerConfig,
    identity: dict,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    log: Any = None,
) -> pd.DataFrame:
    """Generate every condition into ``out`` and score it; returns the control table."""
    out = Path(out)
    say = log or (lambda *_: None)
    cfg = cfg.checked(ds)
    if not ds.has_answers:
        raise MultiNeuronError(f"dataset {ds.name!r}: relevance needs gold answers")
    cal, ev = calibration_split(ds, cfg.eval_items, cfg.calibration)
    layer = cfg.dom_layer if cfg.dom_layer is not None else (2 * model.cfg.n_layers) // 3
    if not 0 <= layer < model.cfg.n_layers:
        raise MultiNeuronError(
            f"--dom-layer {layer}: the model has layers 0..{model.cfg.n_layers - 1}"
        )
    run = RunDir(
        out,
        {**identity, "language_steer": {**cfg.identity(), "dom_layer": layer}},
        resume=resume,
        overwrite=overwrite,
        kind="steer-language",
        stats_file="generations.csv",
    )
    run.write_run({**split_record(cal, ev), **scorer_provenance(model, "auto")})
    ident = LanguageIdentifier(ds.languages)
    acc = identifier_accuracy(ident, {x: [it.answers[x] for it in ds.items] for x in ds.languages})
    acc["reliable"] = acc["accuracy"] >= RELIABLE
    atomic_write(out / "identifier.csv", lambda t: acc.to_csv(t, index=False))
    stats = calibration_stats(model, cal, out / "calibration.pt", resume)
    sets = SteeringSets.from_stats(stats, cfg.min_frequency, cfg.specific_frequency)
    conds = conditions(cfg)
    # an empty specific set fails before any generation
    if {"deactivate", "lape+deactivate"} & set(cfg.methods):
        specific_set(sets, cfg.source, "source")
    if {"lape", "lape+deactivate"} & set(cfg.methods):
        for t in cfg.targets or ():
            specific_set(sets, t, "target")
    vec_file = out / "diff_means.pt"
    vectors: dict[str, torch.Tensor] = {}
    if "diff-means" in cfg.methods:
        if resume and vec_file.exists():
            vectors = torch.load(vec_file, weights_only=True)
        else:
            src = cal.prompts(cfg.source)
            vectors = {t: diff_of_means(model, cal.prompts(t), src, layer) for t in cfg.targets}
            atomic_write(vec_file, lambda f: torch.save(vectors, f))
    gen_file = out / "generations.csv"
    done = pd.read_csv(gen_file, keep_default_na=False) if resume and gen_file.exists() else None
    frames = [done] if done is not None else []
    have = set(done["condition"]) if done is not None else set()
    prompts = ev.prompts(cfg.source)
    tok = get_tokenizer(model)
    t0 = time.perf_counter()
    for k, (m, s, t) in enumerate(conds):
        name = _cond_name(m, s, t)
        if name in have:
            continue
        edit = language_edit(m, s, cfg.source, t or cfg.source, sets, vectors, layer)
        with apply(model, *([edit] if edit is not None else [])):
            gens = generate_greedy(model, prompts, cfg.max_new_tokens, cfg.batch_size)
        texts = [tok.decode(g).split("\n")[0].strip() for g in gens]
        frames.append(
            pd.DataFrame(
                {
                    "condition": name, "method": m, "strength": s, "target": t or "",
                    "item_id": [it.item_id for it in ev.items], "generated": texts,
                }
            )
        )  # fmt: skip
        rows = pd.concat(frames, ignore_index=True)
        atomic_write(gen_file, lambda f, rows=rows: rows.to_csv(f, index=False))
        say(
            f"{ds.name}: {k + 1}/{len(conds)} language conditions ({time.perf_counter() - t0:.0f}s)"
        )
    rows = pd.concat(frames, ignore_index=True)
    table = control_table(expand_targets(rows, ev, cfg, ident))
    reliable = dict(zip(acc["language"], acc["reliable"], strict=True))
    table["identifier_reliable"] = table["target"].map(reliable)
    atomic_write(out / "language_control.csv", lambda t: table.to_csv(t, index=False))
    run.close()
    return table


def expand_targets(
    rows: pd.DataFrame, ev: ParallelDataset, cfg: LanguageSteerConfig, ident: LanguageIdentifier
) -> pd.DataFrame:
    """Score generations per target: ``none`` / ``deactivate`` rows count for every target.
    Adds ``detected``, ``in_target`` (identified as the target) and ``relevant`` (starts with
    the target's gold answer)."""
    gold = {it.item_id: {x: ev.target(it, x) for x in ev.languages} for it in ev.items}
    rows = rows.assign(detected=ident.detect(rows["generated"].astype(str).tolist()))
    parts = []
    for t in cfg.targets or ():
        own = rows[(rows["target"] == t) | (rows["target"] == "")].copy()
        own["target"] = t
        own["in_target"] = own["detected"] == t
        own["relevant"] = [
            text_prefix_match(str(g), gold[i][t])
            for g, i in zip(own["generated"], own["item_id"], strict=True)
        ]
        parts.append(own)
    return pd.concat(parts, ignore_index=True)
