"""Causal experiments: answer scores under deactivation / amplification of neuron sets.

Every condition is scored with :mod:`~tl_multineuron.experiments.scoring` (one forward pass per
row: greedy match, gold log-probability, rank), and conditions of one scope share the prompt
pass and padded batches. Neuron sets:

* ``all-shared`` / ``specific``: *dynamic* (from each evaluated item's own parallel prompts,
  as in the paper; ``specific`` = specific to the row's language) or *static* (calibrated on a
  separate split: all-shared in at least ``min_frequency`` of the calibration items, specific
  to the language in at least ``specific_frequency``);
* ``partial-shared`` / ``non-activated``: the other two categories, dynamic or static (in at
  least ``min_frequency`` of the calibration items), so that every category can be deactivated;
* ``random``: equal-size controls of the all-shared set (same per-layer sizes, per item when
  dynamic), drawn outside it, one draw per seed; ``of`` names another category's set to control
  (in a layer where a set holds more than half the neurons no equal-size control lies outside
  it: there the control is drawn from the whole layer);
* ``matched``: like ``random``, and within each layer also matched to the controlled set's
  activation magnitude (RMS on the calibration split, in quantile bins).

Rows are ``(item, language)`` pairs, item-major, so every comparison can be paired
(:mod:`~tl_multineuron.experiments.comparisons`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..backends.experts import check_neuron_site
from ..backends.sites import NEURON_EDIT_HOOK, edit_hook, has_layer_subset
from ..data.answers import BoundaryFinding, boundary_findings, warn_boundary
from ..data.datasets import ParallelDataset
from ..data.splits import check_disjoint
from ..errors import MultiNeuronError
from ..sharing.analysis import AnalysisConfig, analyze
from ..sharing.classification import Categories, parse_category
from ..sharing.recording import RecordingConfig, get_tokenizer
from ..sharing.statistics import SharingStats
from .interventions import Intervention
from .neuron_sets import NeuronSet, activity_strata, control_seed, sample_like, static_sets
from .scoring import answer_rows, score_answers

TARGETS = ("none", "all-shared", "specific", "partial-shared", "non-activated", "random", "matched")
#: the sets a control can be drawn like (same per-layer sizes, outside the set)
CONTROLLED = ("all-shared", "partial-shared", "non-activated")
OTHER_CATEGORIES = CONTROLLED[1:]
CONTROLS = ("random", "matched")
MODES = ("static", "dynamic")
SCOPES = ("last", "all")


@dataclass(frozen=True)
class Condition:
    """One experimental condition. ``random`` / ``matched`` are controls of the set ``of``
    (all-shared by default; partial-shared or non-activated) of the same mode (``seed`` picks the
    draw; one draw serves every op and alpha). ``include_bos``: with scope ``all``, whether the
    BOS position is edited too."""

    target: str = "none"
    op: str = "none"  # none | zero | scale
    alpha: float = 1.0
    mode: str = "static"
    scope: str = "last"
    seed: int | None = None
    include_bos: bool = False
    of: str = "all-shared"

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
        if self.target in CONTROLS and self.seed is None:
            raise MultiNeuronError(f"a {self.target} control needs a seed")
        if self.target not in CONTROLS and self.seed is not None:
            raise MultiNeuronError(f"only random/matched controls take a seed, not {self.target}")
        if self.of not in CONTROLLED or (self.of != "all-shared" and self.target not in CONTROLS):
            raise MultiNeuronError(
                f"of={self.of!r}: controls are drawn like one of {CONTROLLED}; only "
                "random/matched controls take it"
            )
        if self.include_bos and self.scope != "all":
            raise MultiNeuronError("include_bos applies to scope 'all' only")
        if self.target == "none":  # one baseline, whatever the mode / scope
            object.__setattr__(self, "mode", "static")
            object.__setattr__(self, "scope", "last")
            object.__setattr__(self, "alpha", 1.0)

    @property
    def group(self) -> str:
        """The name without the seed: the seeds of a control form one group."""
        if self.target == "none":
            return "none"
        verb = "deactivate" if self.op == "zero" else f"amplify x{self.alpha:g}"
        where = self.scope + ("+bos" if self.include_bos else "")
        of = "" if self.of == "all-shared" else f" of {self.of}"
        return f"{verb} {self.target}{of} ({self.mode}, {where})"

    @property
    def name(self) -> str:
        return self.group + (f" seed={self.seed}" if self.seed is not None else "")

    @property
    def reference(self) -> Condition | None:
        """What this condition is compared with beyond ``none``: a control with the set it
        controls (same op, alpha, mode, scope)."""
        if self.target in CONTROLS:
            return replace(self, target=self.of, seed=None, of="all-shared")
        return None


def paper_conditions(
    alphas: Sequence[float | int] = (1.1, 1.5, 2.0, 3.0),
    scopes: Sequence[str] = ("last",),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    modes: Sequence[str] = MODES,
    *,
    matched: bool = True,
    amplify_controls: bool = True,
    include_bos: Sequence[bool] = (False,),
    other_categories: bool = False,
    other_seeds: Sequence[int] | None = None,
) -> list[Condition]:
    """The paper's grid with controls: none; deactivate all-shared / specific / random
    (each seed) / activity-matched random (each seed); amplify all-shared at each alpha and
    (``amplify_controls``) its random control at each alpha and seed. ``other_categories``:
    deactivate the partial-shared and non-activated static sets too, each with its own equal-size
    and (``matched``) activity-matched controls (``other_seeds``, default ``seeds``), so that
    every category is deactivated (static sets only: see the comment below)."""
    if not seeds:
        raise MultiNeuronError("random controls need at least one seed")
    out = [Condition()]
    for scope in scopes:
        for bos in include_bos if scope == "all" else (False,):
            for mode in modes:
                kw = dict(mode=mode, scope=scope, include_bos=bos)
                out.append(Condition("all-shared", "zero", **kw))
                out.append(Condition("specific", "zero", **kw))
                out += [Condition("random", "zero", seed=s, **kw) for s in seeds]
                if matched:
                    out += [Condition("matched", "zero", seed=s, **kw) for s in seeds]
                # static only: a dynamic partial-shared set holds most of a layer on an item (up
                # to 80% in Gemma 3 270M's last layers), so no equal-size control lies outside it
                others = other_categories and mode == "static"
                for cat in ("partial-shared", "non-activated") if others else ():
                    out.append(Condition(cat, "zero", **kw))
                    for ctrl in ("random", "matched") if matched else ("random",):
                        out += [
                            Condition(ctrl, "zero", seed=s, of=cat, **kw)
                            for s in (seeds if other_seeds is None else other_seeds)
                        ]
                for a in alphas:
                    out.append(Condition("all-shared", "scale", float(a), **kw))
                    if amplify_controls:
                        out += [Condition("random", "scale", float(a), seed=s, **kw) for s in seeds]
    return out


@dataclass(frozen=True)
class ExperimentSets:
    """The neuron sets every condition draws on, computed once.

    codes / specific_lang: the evaluated items' categories (dynamic sets), ``[item, layer,
    d_mlp]``; static_shared ``[layer, d_mlp]`` and static_specific ``[lang, layer, d_mlp]``
    from the calibration split; strata: per-layer magnitude bins for matched controls;
    site / layers: the hook edits act on and the block of each mask row (SAE feature sites
    cover the layers that carry an SAE, see
    :class:`~tl_multineuron.experiments.neuron_sets.NeuronSet`)."""

    languages: tuple[str, ...]
    codes: Int[Tensor, "item layer d_mlp"]
    specific_lang: Int[Tensor, "item layer d_mlp"]
    static_shared: Bool[Tensor, "layer d_mlp"] | None = None
    static_specific: Bool[Tensor, "lang layer d_mlp"] | None = None
    strata: Int[Tensor, "layer d_mlp"] | None = None
    site: str = NEURON_EDIT_HOOK
    layers: tuple[int, ...] | None = None
    offset: int = 0
    total: int | None = None
    #: static partial-shared and non-activated sets (``OTHER_CATEGORIES`` order)
    static_other: Bool[Tensor, "2 layer d_mlp"] | None = None

    @classmethod
    def build(
        cls,
        eval_categories: Categories,
        calibration: SharingStats | None,
        min_frequency: float = 0.9,
        specific_frequency: float = 0.5,
        n_bins: int = 20,
        site: str = NEURON_EDIT_HOOK,
        layers: tuple[int, ...] | None = None,
        offset: int = 0,
        total: int | None = None,
    ) -> ExperimentSets:
        """From the evaluated items' categories and the calibration split's statistics (whose
        site wins over ``site`` / ``layers``). ``offset`` / ``total``: these items are rows
        ``offset ..`` of ``total`` evaluated items (a shard): dynamic random controls are
        drawn as for all of them."""
        langs = tuple(eval_categories.languages)
        shared = specific = strata = other = None
        if calibration is not None:
            if tuple(calibration.languages) != langs:
                raise MultiNeuronError(
                    f"calibration languages {list(calibration.languages)} differ from the "
                    f"evaluated languages {list(langs)}"
                )
            shared, specific = static_sets(calibration, min_frequency, specific_frequency)
            site, layers = shared.site, shared.layers
            strata = activity_strata(calibration, n_bins)
            shared = shared.mask
            other = torch.stack(
                [calibration.neuron_mask(c, min_frequency) for c in OTHER_CATEGORIES]
            )
        return cls(
            langs,
            eval_categories.codes,
            eval_categories.specific_lang,
            shared,
            specific,
            strata,
            site,
            layers,
            offset,
            total,
            other,
        )

    @property
    def n_items(self) -> int:
        return self.codes.shape[0]

    @staticmethod
    def row_independent(cond: Condition) -> bool:
        """Whether ``cond`` edits the same mask in every row (a static all-shared set or a
        static control); otherwise it depends on the item or the language."""
        return cond.mode == "static" and cond.target not in ("none", "specific")

    def masks(self, cond: Condition) -> Bool[Tensor, "item lang layer d_mlp"]:
        """The neurons ``cond`` edits in each (item, language) row."""
        n_it, N = self.n_items, len(self.languages)
        L, D = self.codes.shape[1:]
        if cond.mode == "static" and cond.target != "none" and self.static_shared is None:
            raise MultiNeuronError(f"{cond.name}: static sets need a calibration split")
        if cond.target == "none":
            return torch.zeros(1, 1, L, D, dtype=torch.bool).expand(n_it, N, L, D)
        if cond.target == "specific":
            if cond.mode == "dynamic":
                lang = torch.arange(N).view(1, N, 1, 1)
                return self.specific_lang.unsqueeze(1) == lang
            return self.static_specific.unsqueeze(0).expand(n_it, N, L, D)
        base = cond.target if cond.target not in CONTROLS else cond.of
        if cond.mode == "dynamic":
            shared = self.codes == parse_category(base)
        elif base == "all-shared":
            shared = self.static_shared.unsqueeze(0)
        else:
            shared = self.static_other[OTHER_CATEGORIES.index(base)].unsqueeze(0)
        if cond.target not in CONTROLS:  # shared: [item, ...] dynamic, [1, ...] static
            return shared.unsqueeze(1).expand(n_it, N, L, D)
        if cond.target == "matched" and self.strata is None:
            raise MultiNeuronError(
                f"{cond.name}: activity-matched controls need a calibration split (magnitudes)"
            )
        strata = self.strata if cond.target == "matched" else None
        key = control_seed(int(cond.seed), cond.target)
        # drawn outside the set, except in a layer where the set holds more than half the
        # neurons (a static partial-shared set can): there no equal-size control lies outside
        # it, and the control is drawn from the whole layer
        n_set = shared.sum(-1, keepdim=True)
        outside = shared & (n_set <= shared.shape[-1] - n_set)
        if cond.mode == "dynamic":
            ctrl = sample_like(
                shared, key, outside, strata=strata, skip=self.offset, total=self.total
            )
        else:
            ctrl = sample_like(shared, key, outside, strata=strata)
        return ctrl.unsqueeze(1).expand(n_it, N, L, D)


def prepare_sets(
    model: Any,
    eval_set: ParallelDataset,
    calibration: ParallelDataset | None,
    min_frequency: float = 0.9,
    specific_frequency: float = 0.5,
    threshold: float = 0.0,
    batch_size: int = 8,
    recording: RecordingConfig | None = None,
    attention: str = "auto",
) -> ExperimentSets:
    """Analyse the evaluated items (dynamic sets) and the calibration split (static sets) at
    the site of ``recording`` (default: the MLP neurons' ``mlp.hook_post``); ``attention`` as
    in :func:`~tl_multineuron.sharing.analysis.analyze`."""
    rec = recording or RecordingConfig()
    check_neuron_site(model, rec.hook)
    cfg = AnalysisConfig(thresholds=(threshold,), batch_size=batch_size, recording=rec)
    cal = None
    if calibration is not None:
        check_disjoint(calibration, eval_set)
        if len(calibration) == 0:
            raise MultiNeuronError("the calibration split has no items")
        cal = analyze(model, calibration, cfg, attention=attention).stats
    ev = analyze(model, eval_set, cfg, keep_items=True, attention=attention)
    layers = tuple(rec.layer_indices(model))
    return ExperimentSets.build(
        ev.categories,
        cal,
        min_frequency,
        specific_frequency,
        site=edit_hook(rec.hook),
        layers=layers if has_layer_subset(rec.hook) else None,
    )


def condition_edit(
    masks: Tensor, cond: Condition, sets: ExperimentSets
) -> Callable[[Sequence[int]], Intervention | None]:
    """The condition's edit of a block of rows: one mask per layer where the set is the same
    in every row (static sets and controls), per-row masks otherwise."""
    value = 0.0 if cond.op == "zero" else float(cond.alpha)
    if cond.target == "none":
        return lambda rows: None
    if sets.row_independent(cond):  # masks: that one mask, expanded over the rows
        one = NeuronSet(masks[0, 0], cond.name, sets.site, sets.layers)
        iv = Intervention(one, cond.op, value, allow_empty=True)
        return lambda rows: iv
    flat = masks.reshape(-1, *masks.shape[2:])

    def edit(rows: Sequence[int]) -> Intervention:
        m = flat[torch.as_tensor(list(rows))].contiguous()
        return Intervention(m, cond.op, value, allow_empty=True, hook=sets.site, layers=sets.layers)

    return edit


def run_experiment(
    model: Any,
    eval_set: ParallelDataset,
    conditions: Sequence[Condition],
    calibration: ParallelDataset | None = None,
    *,
    sets: ExperimentSets | None = None,
    min_frequency: float = 0.9,
    specific_frequency: float = 0.5,
    threshold: float = 0.0,
    batch_size: int = 64,
    max_rows: int = 512,
    conditions_per_pass: int = 40,
    allow_empty: bool = False,
    done: Callable[[Condition], bool] | None = None,
    on_scored: Callable[[list[Condition], pd.DataFrame], None] | None = None,
    progress: bool = False,
    max_memory: int | str | None = None,
    recording: RecordingConfig | None = None,
    on_baseline: Callable[[list[BoundaryFinding]], None] | None = None,
    attention: str = "auto",
) -> pd.DataFrame:
    """Score ``eval_set`` under every condition (skipping those ``done`` says are done): one
    row per (condition, item, language). Static conditions need a ``calibration`` split (or
    ``sets``). ``on_scored(conditions, rows)`` is called after each group of conditions
    (``conditions_per_pass`` share one prompt pass) so callers can save as they go.
    ``max_memory`` bounds every scoring pass (see
    :func:`~tl_multineuron.experiments.scoring.score_answers`).
    ``recording``: the site whose units the sets hold (default MLP neurons; an SAE feature
    site edits features). After the unedited condition is scored, the answer boundary is
    checked (:func:`~tl_multineuron.data.answers.boundary_findings`): a language whose greedy first
    tokens differ from the gold's only in leading whitespace is a warning, and the findings go
    to ``on_baseline``. ``attention``: the attention of the recording and scoring passes
    (``auto`` picks what the model can run, see :mod:`tl_multineuron.backends.attention`)."""
    check_neuron_site(model, (recording or RecordingConfig()).hook)  # before any pass
    if not eval_set.has_answers:
        raise MultiNeuronError(f"dataset {eval_set.name!r}: experiments need gold answers")
    if calibration is None and sets is None:
        static = [c.name for c in conditions if c.mode == "static" and c.target != "none"]
        if static:
            raise MultiNeuronError(f"static conditions need a calibration split: {static[0]}")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise MultiNeuronError("conditions repeat: " + ", ".join(sorted(set(names))[:3]))
    todo = [c for c in conditions if done is None or not done(c)]
    if not todo:
        return pd.DataFrame()
    if sets is None:
        sets = prepare_sets(
            model,
            eval_set,
            calibration,
            min_frequency,
            specific_frequency,
            threshold,
            recording=recording,
            attention=attention,
        )
    if sets.n_items != len(eval_set) or sets.languages != tuple(eval_set.languages):
        raise MultiNeuronError(
            f"neuron sets are for {sets.n_items} items x {list(sets.languages)}; the evaluated "
            f"set has {len(eval_set)} x {list(eval_set.languages)}"
        )
    items = [(it, x) for it in eval_set.items for x in eval_set.languages]
    labels = [f"item {it.item_id!r}, language {x!r}" for it, x in items]
    rows = answer_rows(
        model,
        [it.prompts[x] for it, x in items],
        [eval_set.target(it, x) for it, x in items],
        labels,
    )
    base = pd.DataFrame(
        {
            "task": [it.task or eval_set.name for it, _ in items],
            "item_id": [it.item_id for it, _ in items],
            "language": [x for _, x in items],
            "answer": [it.answers[x] for it, x in items],
        }
    )
    frames = []
    by_scope: dict[tuple[str, bool], list[Condition]] = {}
    for c in todo:
        by_scope.setdefault((c.scope, c.include_bos), []).append(c)
    for (scope, bos), conds in by_scope.items():
        for s in range(0, len(conds), conditions_per_pass):
            chunk = conds[s : s + conditions_per_pass]
            edits, sizes = [], []
            for c in chunk:
                m = sets.masks(c)
                size = m.sum((-2, -1)).reshape(-1)
                if c.target != "none" and not allow_empty and (size == 0).any():
                    r = int((size == 0).nonzero()[0])
                    raise MultiNeuronError(
                        f"{c.name}: the neuron set is empty for {labels[r]} "
                        f"({int((size == 0).sum())} of {len(size)} rows); lower the set's "
                        "frequency threshold, or allow empty sets to score those rows unedited"
                    )
                edits.append(condition_edit(m, c, sets))
                sizes.append(size)
            scores = score_answers(
                model,
                rows,
                edits,
                scope=scope,
                include_bos=bos,
                batch_size=batch_size,
                max_rows=max_rows,
                progress=progress,
                max_memory=max_memory,
                attention=attention,
            )
            part = []
            for c, sc, size in zip(chunk, scores, sizes, strict=True):
                if c.target == "none":
                    found = boundary_findings(
                        get_tokenizer(model),
                        [x for _, x in items],
                        sc.first_token.tolist(),
                        [a[0] for a in rows.answers],
                    )
                    warn_boundary(found)
                    if on_baseline is not None:
                        on_baseline(found)
                df = pd.concat([base, sc.to_frame()], axis=1)
                for k, v in asdict(c).items():
                    df[k] = v
                df["condition"] = c.name
                df["group"] = c.group
                df["set_size"] = size.numpy()
                part.append(df)
            part_df = pd.concat(part, ignore_index=True)
            if on_scored is not None:
                on_scored(chunk, part_df)
            frames.append(part_df)
    return pd.concat(frames, ignore_index=True)


def accuracy_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per condition group (seeds pooled) and language (and ``all``): greedy-match accuracy
    (%), mean gold log-probability, rows, seeds and mean set size. Intervals and tests are in
    :func:`~tl_multineuron.experiments.comparisons.paired_comparisons`."""
    if rows.empty:
        raise MultiNeuronError("no scored rows to summarise")
    keys = ["group", "target", "op", "alpha", "mode", "scope", "include_bos"]
    both = pd.concat([rows, rows.assign(language="all")])
    out = (
        both.groupby([*keys, "language"], dropna=False, sort=False)
        .agg(
            accuracy=("greedy_match", "mean"),
            logprob=("logprob", "mean"),
            n=("greedy_match", "size"),
            n_seeds=("seed", "nunique"),
            set_size=("set_size", "mean"),
        )
        .reset_index()
    )
    out["accuracy"] = (out["accuracy"] * 100).round(2)
    out["n_seeds"] = out["n_seeds"].clip(lower=1)
    out["n"] = out["n"] // out["n_seeds"]
    out.loc[out.target == "none", ["mode", "scope"]] = "-"
    return out
