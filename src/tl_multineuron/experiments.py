"""Accuracy experiments under interventions, against equal-size random controls.

Conditions deactivate or amplify neuron sets during KV-cached greedy generation: the set is
either *dynamic* (computed from each evaluated item's own parallel prompts, as in the paper)
or *static* (calibrated on a separate split: neurons all-shared in at least ``min_frequency``
of the calibration items, then applied to new prompts). Random controls have exactly the
per-layer sizes of their target set (per item for dynamic sets) and several seeds. Every row
records its scope (``last``: the last prompt token and every generated token; ``all``: every
position) and both scores: generated-prefix match (primary) and first-token match (lenient).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from .analysis import AnalysisConfig, analyze
from .classification import Category
from .data import ParallelDataset
from .errors import MultiNeuronError
from .evaluation import EvalConfig, evaluate
from .interventions import Intervention
from .neuron_sets import NeuronSet

TARGETS = ("none", "all-shared", "specific", "random")
MODES = ("static", "dynamic")
SCOPES = ("last", "all")


@dataclass(frozen=True)
class Condition:
    """One experimental condition. ``random`` targets are equal-size controls of the
    all-shared set of the same mode."""

    target: str = "none"
    op: str = "none"  # none | zero | scale
    alpha: float = 1.0
    mode: str = "static"
    scope: str = "last"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise MultiNeuronError(f"target {self.target!r}; expected one of {TARGETS}")
        if self.op not in ("none", "zero", "scale"):
            raise MultiNeuronError(f"op {self.op!r}; expected none, zero or scale")
        if (self.target == "none") != (self.op == "none"):
            raise MultiNeuronError("target 'none' goes with op 'none' and only with it")
        if self.mode not in MODES or self.scope not in SCOPES:
            raise MultiNeuronError(
                f"mode {self.mode!r} / scope {self.scope!r}: expected one of {MODES} / {SCOPES}"
            )
        if not math.isfinite(self.alpha):
            raise MultiNeuronError(f"alpha {self.alpha!r} is not finite")
        if self.target == "random" and self.seed is None:
            raise MultiNeuronError("a random control needs a seed")

    @property
    def name(self) -> str:
        if self.target == "none":
            return "none"
        verb = "deactivate" if self.op == "zero" else f"amplify x{self.alpha:g}"
        seed = f" seed={self.seed}" if self.seed is not None else ""
        return f"{verb} {self.target} ({self.mode}, {self.scope}){seed}"


def paper_conditions(
    alphas: Sequence[float | int] = (1.1, 1.25, 1.5, 2.0, 3.0),
    scopes: Sequence[str] = SCOPES,
    seeds: Sequence[int] = (0, 1, 2),
    modes: Sequence[str] = MODES,
) -> list[Condition]:
    """none; deactivate all-shared / random equal-size / specific; amplify all-shared."""
    out = [Condition()]
    for scope in scopes:
        for mode in modes:
            out.append(Condition("all-shared", "zero", mode=mode, scope=scope))
            out += [Condition("random", "zero", mode=mode, scope=scope, seed=s) for s in seeds]
            out.append(Condition("specific", "zero", mode=mode, scope=scope))
            out += [Condition("all-shared", "scale", float(a), mode, scope) for a in alphas]
    return out


@dataclass
class _Sets:
    """Everything the conditions need, computed once."""

    codes: torch.Tensor  # [item, layer, d_mlp] eval items' categories (dynamic)
    specific_lang: torch.Tensor
    static_shared: NeuronSet | None
    static_specific: dict[str, NeuronSet] | None


def _row_masks(cond: Condition, sets: _Sets, s: int, e: int, n_lang: int) -> torch.Tensor:
    rows = []
    for r in range(s, e):
        item, lang = divmod(r, n_lang)
        if cond.mode == "dynamic":
            shared = sets.codes[item] == Category.ALL_SHARED
            spec = sets.specific_lang[item] == lang
        else:
            shared = sets.static_shared.mask
            spec = list(sets.static_specific.values())[lang].mask
        if cond.target == "all-shared":
            m = shared
        elif cond.target == "specific":
            m = spec
        else:  # random, same per-layer sizes as the all-shared set (per item when dynamic)
            key = cond.seed * 1_000_003 + (item if cond.mode == "dynamic" else 0)
            m = NeuronSet(shared).random_like(key).mask
        rows.append(m)
    return torch.stack(rows)


def run_condition(
    model: Any,
    dataset: ParallelDataset,
    cond: Condition,
    sets: _Sets,
    eval_config: EvalConfig,
    progress: bool = False,
) -> pd.DataFrame:
    """Generations of ``dataset`` under one condition: one row per (item, language)."""
    n_lang = dataset.n_languages
    sizes: list[float] = []

    def hooks(s: int, e: int) -> list:
        if cond.target == "none":
            return []
        masks = _row_masks(cond, sets, s, e, n_lang)
        sizes.extend(masks.sum((1, 2)).tolist())
        op, value = ("zero", 0.0) if cond.op == "zero" else ("scale", cond.alpha)
        return Intervention(masks, op, value, cond.scope, allow_empty=True).fwd_hooks(model)

    df = evaluate(model, dataset, eval_config, progress, hooks_for_batch=hooks)
    for k, v in asdict(cond).items():
        df[k] = v
    df["condition"] = cond.name
    df["set_size"] = sizes if sizes else 0
    return df


def prepare_sets(
    model: Any,
    eval_set: ParallelDataset,
    calibration: ParallelDataset | None,
    min_frequency: float,
    threshold: float,
    specific_frequency: float,
    batch_size: int = 8,
) -> _Sets:
    cfg = AnalysisConfig(thresholds=(threshold,), batch_size=batch_size)
    ev = analyze(model, eval_set, cfg, keep_items=True)
    static_shared = static_specific = None
    if calibration is not None:
        overlap = {i.item_id for i in calibration} & {i.item_id for i in eval_set}
        if overlap:
            raise MultiNeuronError(
                f"calibration and evaluation items overlap: {sorted(overlap)[:5]}"
            )
        cal = analyze(model, calibration, cfg).stats
        static_shared = NeuronSet.from_stats(cal, "all-shared", min_frequency)
        static_shared.require_nonempty()
        static_specific = {
            x: NeuronSet.specific(cal, x, specific_frequency) for x in eval_set.languages
        }
    return _Sets(ev.categories.codes, ev.categories.specific_lang, static_shared, static_specific)


def run_experiment(
    model: Any,
    eval_set: ParallelDataset,
    conditions: Sequence[Condition],
    calibration: ParallelDataset | None = None,
    *,
    min_frequency: float = 0.9,
    specific_frequency: float = 0.5,
    threshold: float = 0.0,
    eval_config: EvalConfig | None = None,
    done: Callable[[Condition], bool] | None = None,
    on_condition: Callable[[Condition, pd.DataFrame], None] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Run every condition (skipping those ``done`` says are done) and return all
    generations. Static conditions need a ``calibration`` split."""
    eval_config = eval_config or EvalConfig()
    if calibration is None and any(c.mode == "static" and c.target != "none" for c in conditions):
        raise MultiNeuronError("static conditions need a calibration split")
    sets = prepare_sets(model, eval_set, calibration, min_frequency, threshold, specific_frequency)
    frames = []
    it = conditions
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(conditions, desc="conditions", unit="cond")
    for cond in it:
        if done is not None and done(cond):
            continue
        df = run_condition(model, eval_set, cond, sets, eval_config)
        if on_condition is not None:
            on_condition(cond, df)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def _t95(df: int) -> float:
    if df in _T95:
        return _T95[df]
    keys = [k for k in sorted(_T95) if k <= df]
    return _T95[keys[-1]] if keys else 1.96


def accuracy_summary(gens: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per condition and language (and ``all``), seeds averaged with a 95% t
    interval over seeds (random controls); both metrics, labelled."""
    if gens.empty:
        raise MultiNeuronError("no generations to summarise")
    keys = ["target", "op", "alpha", "mode", "scope"]
    g = gens.copy()
    g["seed"] = g["seed"].fillna(-1)
    both = pd.concat([g, g.assign(language="all")])
    per_seed = (
        both.groupby([*keys, "seed", "language"], dropna=False)
        .agg(
            prefix_match=("prefix_match", "mean"),
            first_token_match=("first_token_match", "mean"),
            n=("prefix_match", "size"),
            set_size=("set_size", "mean"),
        )
        .reset_index()
    )
    rows = []
    for k, grp in per_seed.groupby([*keys, "language"], dropna=False):
        row = dict(zip([*keys, "language"], k, strict=True))
        row["n_seeds"] = len(grp)
        row["n"] = int(grp.n.iloc[0])
        row["set_size"] = float(grp.set_size.mean())
        for m in ("prefix_match", "first_token_match"):
            vals = grp[m] * 100
            mean = float(vals.mean())
            half = (
                _t95(len(vals) - 1) * float(vals.std(ddof=1)) / math.sqrt(len(vals))
                if len(vals) > 1
                else 0.0
            )
            row[f"{m}_acc"] = round(mean, 2)
            row[f"{m}_ci95"] = round(half, 2)
        rows.append(row)
    out = pd.DataFrame(rows)
    out.loc[out.target == "none", ["mode", "scope"]] = "-"
    return out.drop_duplicates(subset=[*keys, "language"]).reset_index(drop=True)
