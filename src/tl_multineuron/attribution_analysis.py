"""One call from a model and a parallel dataset to attribution joined with sharing categories."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .accumulator import check_same_origin
from .analysis import AnalysisConfig, analyze
from .attribution import (
    IG_METHODS,
    IG_TARGETS,
    answer_token_ids,
    contribution_scores,
    effective_scores,
    integrated_gradients,
)
from .attribution_stats import AttributionStats, ScoreStats
from .classification import active_mask, categorize, validate_thresholds
from .data import ParallelDataset
from .errors import MultiNeuronError
from .masks import resolve_k
from .models import check_model, identity_meta, provenance
from .recording import RecordingConfig, iter_dataset
from .statistics import SharingStats
from .weights import model_weights

METHODS = ("contribution", "effective", "ig")


@dataclass(frozen=True)
class AttributionConfig:
    """What :func:`attribute` computes.

    methods: any of ``contribution``, ``effective``, ``ig``.
    k: top-K per layer, a count or a fraction of d_mlp.
    threshold / criterion: the activity rule for the sharing categories.
    layers: layers scored by contribution / effective (default all).
    ig_layers: layers attributed by IG (default: the last layer; each costs one batched
        forward+backward per prompt).
    ig_baseline: ``zero`` or ``mean`` (per-language mean activation over the dataset).
    use_embedding: effective score with the tied input embedding instead of W_U.
    """

    methods: tuple[str, ...] = ("contribution", "effective")
    k: int | float = 0.05
    threshold: float = 0.0
    criterion: str = "gt"
    layers: tuple[int, ...] | None = None
    ig_steps: int = 20
    ig_target: str = "logprob"
    ig_method: str = "gausslegendre"
    ig_baseline: str = "zero"
    ig_layers: tuple[int, ...] | None = None
    use_embedding: bool = False
    batch_size: int = 8

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise MultiNeuronError(
                f"attribution methods {list(self.methods)}; expected a "
                f"non-empty subset of {METHODS}"
            )
        validate_thresholds(self.threshold)
        if self.ig_target not in IG_TARGETS:
            raise MultiNeuronError(f"IG target {self.ig_target!r}; expected one of {IG_TARGETS}")
        if self.ig_method not in IG_METHODS:
            raise MultiNeuronError(f"IG method {self.ig_method!r}; expected one of {IG_METHODS}")
        if self.ig_baseline not in ("zero", "mean"):
            raise MultiNeuronError(f"IG baseline {self.ig_baseline!r}; expected 'zero' or 'mean'")
        if not isinstance(self.ig_steps, int) or self.ig_steps < 1:
            raise MultiNeuronError(f"IG steps must be an int >= 1, got {self.ig_steps!r}")
        if self.batch_size < 1:
            raise MultiNeuronError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for key in ("methods", "layers", "ig_layers"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AttributionConfig:
        d = dict(d)
        for key in ("methods", "layers", "ig_layers"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class AttributionResult:
    stats: AttributionStats
    scores: dict[str, torch.Tensor] | None = None  # [item, lang, layer, d_mlp] when kept


def answers_of(model: Any, dataset: ParallelDataset, items) -> torch.Tensor:
    """First answer token of every (item, language) row of ``items``."""
    prompts, answers, labels = [], [], []
    for it in items:
        for x in dataset.languages:
            prompts.append(it.prompts[x])
            answers.append(dataset.answer(it, x))
            labels.append(f"item {it.item_id!r}, language {x!r}")
    return answer_token_ids(model, prompts, answers, labels)


def new_attribution_stats(
    model: Any, dataset: ParallelDataset, config: AttributionConfig
) -> AttributionStats:
    rec = RecordingConfig(layers=config.layers)
    layers = tuple(rec.layer_indices(model))
    ig_layers = (
        tuple(config.ig_layers) if config.ig_layers is not None else (model.cfg.n_layers - 1,)
    )
    bad = [x for x in ig_layers if not 0 <= x < model.cfg.n_layers]
    if bad:
        raise MultiNeuronError(
            f"IG layer(s) {bad} do not exist: the model has {model.cfg.n_layers} layers"
        )
    k = resolve_k(config.k, model.cfg.d_mlp)
    methods = {
        m: ScoreStats(m, dataset.languages, ig_layers if m == "ig" else layers, k)
        for m in config.methods
    }
    meta = {
        **identity_meta(model),
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "config": config.to_dict(),
        "site": "blocks.{layer}.mlp.hook_post",
        "answer_token": "first token of the gold answer as it continues the prompt",
    }
    return AttributionStats(methods, meta)


def update_direct_scores(
    stats: AttributionStats,
    model: Any,
    config: AttributionConfig,
    acts: torch.Tensor,
    codes: torch.Tensor,
    tokens: torch.Tensor | None,
    layers: list[int],
) -> dict[str, torch.Tensor]:
    """Contribution / effective scores of a batch (``acts`` ``[item, lang, layer, d_mlp]``
    of ``layers``, answer ``tokens`` per (item, language) row), added to ``stats``."""
    weights = model_weights(model)
    n_it, N = acts.shape[:2]
    out: dict[str, torch.Tensor] = {}
    if "contribution" in config.methods:
        out["contribution"] = contribution_scores(acts, weights, layers)
    if "effective" in config.methods:
        flat = acts.reshape(n_it * N, len(layers), -1)
        out["effective"] = effective_scores(
            flat, tokens, weights, layers, config.use_embedding
        ).reshape(n_it, N, len(layers), -1)
    for m, sc in out.items():
        stats.methods[m].update(sc, codes)
    return out


def attribute(
    model: Any,
    dataset: ParallelDataset,
    config: AttributionConfig | None = None,
    *,
    progress: bool = False,
    stats: AttributionStats | None = None,
    start: int = 0,
    baseline_stats: SharingStats | None = None,
    keep_scores: bool = False,
    on_batch: Callable[[int, AttributionStats], None] | None = None,
    max_memory: int | str | None = None,
    attention: str = "auto",
) -> AttributionResult:
    """Attribution scores of every neuron for every (item, language), joined with the item's
    sharing categories and accumulated per language, layer and category. ``max_memory`` /
    ``attention`` govern the recording pass (see :func:`~tl_multineuron.recording.iter_dataset`).
    """
    config = config or AttributionConfig()
    check_model(model)
    model_weights(model)  # fail early if the weights cannot be read
    if stats is not None:
        check_same_origin(
            stats.meta, identity_meta(model), "attribution statistics", verb="continue"
        )
    stats = stats if stats is not None else new_attribution_stats(model, dataset, config)
    stats.meta.update(provenance(model, attention))
    layers = RecordingConfig(layers=config.layers).layer_indices(model)
    ig_layers = list(stats.methods["ig"].layers) if "ig" in stats.methods else []
    rec_layers = sorted(set(layers) | set(ig_layers))
    pos = {x: i for i, x in enumerate(rec_layers)}
    rec = RecordingConfig(layers=tuple(rec_layers))
    check_model(model, rec.hook_names(model))
    means = None
    if "ig" in config.methods and config.ig_baseline == "mean":
        if baseline_stats is None:
            baseline_stats = analyze(
                model, dataset, AnalysisConfig(batch_size=config.batch_size)
            ).stats
        means = baseline_stats.select_mean(dataset.languages)
        stat_layers = list(baseline_stats.meta.get("layers", range(baseline_stats.n_layers)))
        missing = [x for x in ig_layers if x not in stat_layers]
        if missing:
            raise MultiNeuronError(f"baseline statistics have no layer(s) {missing}")
    li = [pos[x] for x in layers]
    need_answers = "effective" in config.methods or "ig" in config.methods
    kept: dict[str, list[torch.Tensor]] = {m: [] for m in config.methods}
    batches = iter_dataset(
        model,
        dataset,
        rec,
        config.batch_size,
        start,
        progress,
        max_memory=max_memory,
        attention=attention,
    )
    for s, acts in batches:
        items = dataset.items[s : s + acts.shape[0]]
        n_it, N = acts.shape[:2]
        codes = categorize(
            active_mask(acts, config.threshold, config.criterion)[0], dataset.languages
        ).codes
        tokens = answers_of(model, dataset, items) if need_answers else None
        out = update_direct_scores(
            stats, model, config, acts[:, :, li], codes[:, li], tokens, layers
        )
        if "ig" in config.methods:
            ig = torch.empty(n_it, N, len(ig_layers), model.cfg.d_mlp)
            gaps, rel = [], []
            for i, it in enumerate(items):
                for j, x in enumerate(dataset.languages):
                    for k, layer in enumerate(ig_layers):
                        base = None if means is None else means[j, stat_layers.index(layer)]
                        r = integrated_gradients(
                            model,
                            it.prompts[x],
                            int(tokens[i * N + j]),
                            layer,
                            steps=config.ig_steps,
                            baseline=base,
                            target=config.ig_target,
                            method=config.ig_method,
                        )
                        ig[i, j, k] = r.attributions
                        gaps.append(r.completeness_gap)
                        rel.append(r.relative_gap)
            out["ig"] = ig
            stats.methods["ig"].update(ig, codes[:, [pos[x] for x in ig_layers]])
            stats.methods["ig"].add_gaps(gaps, rel)
        if keep_scores:
            for m, sc in out.items():
                kept[m].append(sc.detach().cpu())
        if on_batch is not None:
            on_batch(s + n_it, stats)
    scores = {m: torch.cat(v) for m, v in kept.items() if v} if keep_scores else None
    return AttributionResult(stats, scores)
