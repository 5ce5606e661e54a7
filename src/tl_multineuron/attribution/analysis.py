"""One call from a model and a parallel dataset to attribution joined with sharing categories."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..backends.experts import check_neuron_site
from ..backends.logits import mlp_residual_scales
from ..backends.models import check_model, identity_meta, provenance
from ..backends.sites import GATE, site_hook, site_label, site_transforms
from ..backends.weights import model_weights
from ..data.datasets import ParallelDataset
from ..errors import MultiNeuronError
from ..sharing.accumulator import check_same_origin
from ..sharing.analysis import AnalysisConfig, analyze
from ..sharing.classification import categorize_acts, validate_thresholds
from ..sharing.masks import resolve_k
from ..sharing.recording import RecordingConfig, iter_dataset_with
from ..sharing.statistics import SharingStats
from .knowledge import DAI_FRACTION, DAI_PRESET, DAI_SHARE, KnowledgeStats
from .rows import RowAttribution
from .scores import (
    IG_METHODS,
    IG_TARGETS,
    answer_token_ids,
    contribution_scores,
    effective_scores,
    integrated_gradients,
)
from .stats import N_BOOT, AttributionStats, ScoreStats

METHODS = ("contribution", "effective", "ig")
IG_PRESETS = ("dai",)
POST = "mlp.hook_post"
BASELINE_METHODS = ("riemann_left", "riemann_trapezoid")  # include the alpha = 0 point
RULES = {"post>t": (POST, "gt"), "|post|>t": (POST, "abs"), "gate>t": (GATE, "gt")}


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
    ig_preset: ``"dai"``: Dai et al.'s knowledge-neuron recipe (probability target, 20-step
        left Riemann sum, zero baseline; the ig_* fields must say so, see
        :meth:`dai`), plus coarse (``kn_fraction`` x max) and refined (shared by more than
        ``kn_share`` of an item's languages) knowledge neurons per category.
    use_embedding: effective score with the tied input embedding instead of W_U.
    hook: the site whose activity defines the categories (``mlp.hook_post`` or ``gate``);
        scores are always of the post-activation, the input of W_out.
    compare_rules: also join the contribution scores with the categories under ``post>t``,
        ``|post|>t`` and (gated MLPs) ``gate>t``.
    n_boot: bootstrap replicates (over items) for the enrichment intervals.
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
    ig_layers: tuple[int, ...] | str | None = None
    use_embedding: bool = False
    batch_size: int = 8
    hook: str = POST
    compare_rules: bool = False
    n_boot: int = N_BOOT
    ig_preset: str | None = None
    kn_fraction: float = DAI_FRACTION
    kn_share: float = DAI_SHARE

    @classmethod
    def dai(cls, **kw) -> AttributionConfig:
        """A configuration following Dai et al.'s knowledge-neuron recipe."""
        return cls(**{"methods": ("ig",), **DAI_PRESET, "ig_preset": "dai", **kw})

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
        if self.hook not in (POST, GATE):
            raise MultiNeuronError(
                f"attribution site {self.hook!r}; expected {POST!r} or {GATE!r} (scores are of "
                "the post-activation; the site only decides the categories)"
            )
        if isinstance(self.ig_layers, str) and self.ig_layers != "all":
            raise MultiNeuronError(f"ig_layers {self.ig_layers!r}; expected layer indices or 'all'")
        if not isinstance(self.n_boot, int) or self.n_boot < 0:
            raise MultiNeuronError(f"n_boot must be an int >= 0, got {self.n_boot!r}")
        if self.ig_preset is not None:
            if self.ig_preset not in IG_PRESETS:
                raise MultiNeuronError(
                    f"IG preset {self.ig_preset!r}; expected one of {IG_PRESETS}"
                )
            got = {k: getattr(self, k) for k in DAI_PRESET}
            if got != DAI_PRESET or "ig" not in self.methods:
                raise MultiNeuronError(
                    f"the 'dai' preset means methods including 'ig' and {DAI_PRESET}; got "
                    f"methods {list(self.methods)} and {got} (use AttributionConfig.dai())"
                )
            for name in ("kn_fraction", "kn_share"):
                v = getattr(self, name)
                if not 0 <= v < 1:
                    raise MultiNeuronError(f"{name} must be in [0, 1), got {v!r}")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for key in ("methods", "layers", "ig_layers"):
            d[key] = list(d[key]) if isinstance(d[key], tuple) else d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AttributionConfig:
        d = dict(d)
        for key in ("methods", "layers", "ig_layers"):
            if isinstance(d.get(key), list):
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
            answers.append(dataset.target(it, x))
            labels.append(f"item {it.item_id!r}, language {x!r}")
    return answer_token_ids(model, prompts, answers, labels)


def new_attribution_stats(
    model: Any, dataset: ParallelDataset, config: AttributionConfig
) -> AttributionStats:
    rec = RecordingConfig(layers=config.layers)
    layers = tuple(rec.layer_indices(model))
    n = model.cfg.n_layers
    if config.ig_layers == "all":
        ig_layers = tuple(range(n))
    else:
        ig_layers = tuple(config.ig_layers) if config.ig_layers is not None else (n - 1,)
    bad = [x for x in ig_layers if not 0 <= x < model.cfg.n_layers]
    if bad:
        raise MultiNeuronError(
            f"IG layer(s) {bad} do not exist: the model has {model.cfg.n_layers} layers"
        )
    k = resolve_k(config.k, model.cfg.d_mlp)
    langs = dataset.languages
    methods = {
        m: ScoreStats(
            m,
            langs,
            ig_layers if m == "ig" else layers,
            k,
            n_boot=config.n_boot,
            rows=RowAttribution(langs, ig_layers if m == "ig" else layers, k),
        )
        for m in config.methods
    }
    rules = {}
    if config.compare_rules:
        if "contribution" not in config.methods:
            raise MultiNeuronError("compare_rules joins the contribution scores: add that method")
        rules = {
            r: ScoreStats("contribution", langs, layers, k, n_boot=config.n_boot)
            for r in rule_names(model)
        }
    if config.hook == GATE:
        site_transforms(model, GATE, [0])  # a clear error on a non-gated MLP
    knowledge = (
        KnowledgeStats(langs, ig_layers, config.kn_fraction, config.kn_share)
        if config.ig_preset == "dai"
        else None
    )
    weights = model_weights(model)
    meta = {
        **identity_meta(model),
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "config": config.to_dict(),
        "site": site_label(config.hook),
        "scored_site": site_label(POST),
        "score_version": 2,
        "norms": {
            **weights.norms.to_meta(),
            # the model's own output-logit scale and residual multipliers (Granite, Cohere)
            "logit_scale": weights.logit_scale,
            "mlp_residual_scale": mlp_residual_scales(model).tolist(),
        },
        "answer_token": "first token of the gold answer as it continues the prompt",
    }
    return AttributionStats(methods, meta, rules, knowledge)


def rule_names(model: Any) -> list[str]:
    """The activity rules compared on ``model`` (``gate>t`` only for gated MLPs)."""
    gated = bool(getattr(model.cfg, "gated_mlp", False))
    return [r for r in RULES if gated or RULES[r][0] != GATE]


def update_direct_scores(
    stats: AttributionStats,
    model: Any,
    config: AttributionConfig,
    acts: torch.Tensor,
    codes: torch.Tensor,
    tokens: torch.Tensor | None,
    layers: list[int],
    item_ids: list[str] | None = None,
    final_resid: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Contribution / effective scores of a batch (``acts`` ``[item, lang, layer, d_mlp]``
    post-activations of ``layers``, answer ``tokens`` per (item, language) row, the last
    residual ``[item, lang, d_model]`` when the model has a final norm), added to ``stats``."""
    weights = model_weights(model)
    n_it, N = acts.shape[:2]
    out: dict[str, torch.Tensor] = {}
    post = weights.post_scale(acts, layers)
    if "contribution" in config.methods:
        out["contribution"] = contribution_scores(acts, weights, layers, post)
    if "effective" in config.methods:
        final = None
        if weights.has_final_norm:
            if final_resid is None:
                raise MultiNeuronError("effective scores need the last residual (final norm)")
            final = weights.norms.final.scale(final_resid.reshape(n_it * N, -1))
        flat = acts.reshape(n_it * N, len(layers), -1)
        out["effective"] = effective_scores(
            flat,
            tokens,
            weights,
            layers,
            config.use_embedding,
            post.reshape(n_it * N, len(layers)),
            final,
        ).reshape(n_it, N, len(layers), -1)
    for m, sc in out.items():
        stats.methods[m].update(sc, codes, item_ids)
    return out


def final_residual_hook(model: Any) -> str:
    """The hook whose value, at the scored position, is the final norm's input."""
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def announce_ig_cost(
    model: Any,
    dataset: ParallelDataset,
    start: int,
    ig_layers: list[int],
    config: AttributionConfig,
    progress: bool,
) -> dict:
    """State the cost of the IG part before it starts: passes, rows, and (timed on one
    pass of the first prompt) the projected time. Printed when ``progress``; returned."""
    import sys
    import time

    n_prompts = (len(dataset) - start) * len(dataset.languages)
    passes = n_prompts * len(ig_layers)
    cost = {
        "prompts": n_prompts,
        "layers": len(ig_layers),
        "passes": passes,
        "rows_per_pass": config.ig_steps + 2,
    }
    if passes and len(dataset) > start:
        it = dataset.items[start]
        x = dataset.languages[0]
        tok = int(answers_of(model, dataset, [it])[0])
        t0 = time.perf_counter()
        integrated_gradients(
            model,
            it.prompts[x],
            tok,
            ig_layers[-1],
            steps=config.ig_steps,
            target=config.ig_target,
            method=config.ig_method,
        )
        cost["seconds_per_pass"] = time.perf_counter() - t0
        cost["projected_seconds"] = cost["seconds_per_pass"] * passes
    if progress:
        eta = cost.get("projected_seconds")
        from tqdm.auto import tqdm

        tqdm.write(
            f"IG: {n_prompts} prompts x {len(ig_layers)} layer(s) = {passes} forward+backward "
            f"passes of {config.ig_steps + 2} rows"
            + (
                f"; ~{cost['seconds_per_pass']:.2f} s each, projected {eta / 60:.1f} min"
                if eta is not None
                else ""
            ),
            file=sys.stderr,
        )
    return cost


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
    announce: bool | None = None,
) -> AttributionResult:
    """Attribution scores of every neuron for every (item, language), joined with the item's
    sharing categories and accumulated per language, layer and category. ``max_memory`` /
    ``attention`` govern the recording pass (see
    :func:`~tl_multineuron.sharing.recording.iter_dataset`). With IG, its cost (passes, and the
    time projected from one timed pass) is stated before the run starts when ``announce``
    (default: ``progress``) and kept in ``meta["ig_cost"]``.
    """
    config = config or AttributionConfig()
    check_model(model)
    check_neuron_site(model, config.hook, config.layers)  # MoE blocks have no neuron site
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
    weights = model_weights(model)
    final_hook = final_residual_hook(model)
    need_gate = config.hook == GATE or any(RULES[r][0] == GATE for r in stats.rules)
    gate_hooks = [f"blocks.{x}.{site_hook(GATE)}" for x in rec_layers] if need_gate else []
    gate_fns = site_transforms(model, GATE, rec_layers) if need_gate else []
    extra = gate_hooks + (
        [final_hook] if "effective" in config.methods and weights.has_final_norm else []
    )
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
    if ig_layers and config.ig_method in BASELINE_METHODS and weights.has_post_norm:
        msg = (
            f"IG method {config.ig_method!r} evaluates the gradient at the baseline itself; with "
            "a zero baseline this model's post-MLP norm then sees a zero input and its gradient "
            "is ~1/sqrt(eps): expect large completeness gaps (see meta['ig_warning']); "
            "'gausslegendre' or 'riemann_middle' avoid that point"
        )
        warnings.warn(msg, stacklevel=2)
        stats.meta["ig_warning"] = msg
    if ig_layers and start < len(dataset):
        cost = announce_ig_cost(
            model, dataset, start, ig_layers, config, progress if announce is None else announce
        )
        stats.meta["ig_cost"] = cost
    li = [pos[x] for x in layers]
    need_answers = "effective" in config.methods or "ig" in config.methods
    kept: dict[str, list[torch.Tensor]] = {m: [] for m in config.methods}
    batches = iter_dataset_with(
        model,
        dataset,
        rec,
        config.batch_size,
        start,
        progress,
        extra_hooks=extra,
        max_memory=max_memory,
        attention=attention,
    )
    for s, acts, extras in batches:
        items = dataset.items[s : s + acts.shape[0]]
        ids = [it.item_id for it in items]
        n_it, N = acts.shape[:2]
        gate = (
            torch.stack([f(extras[h]) for f, h in zip(gate_fns, gate_hooks, strict=True)], 2)
            if need_gate
            else None
        )
        site_acts = gate if config.hook == GATE else acts
        codes = categorize_acts(
            site_acts, config.threshold, config.criterion, dataset.languages
        ).codes
        tokens = answers_of(model, dataset, items) if need_answers else None
        out = update_direct_scores(
            stats,
            model,
            config,
            acts[:, :, li],
            codes[:, li],
            tokens,
            layers,
            ids,
            extras.get(final_hook),
        )
        for r, rs in stats.rules.items():
            hook, crit = RULES[r]
            if (hook, crit) == (config.hook, config.criterion):  # the run's own categories
                rc = codes[:, li]
            else:
                src = (gate if hook == GATE else acts)[:, :, li]
                rc = categorize_acts(src, config.threshold, crit, dataset.languages).codes
            rs.update(out["contribution"], rc, ids)
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
            ig_codes = codes[:, [pos[x] for x in ig_layers]]
            stats.methods["ig"].update(ig, ig_codes, ids)
            stats.methods["ig"].add_gaps(gaps, rel)
            if stats.knowledge is not None:
                stats.knowledge.update(ig, ig_codes)
        if keep_scores:
            for m, sc in out.items():
                kept[m].append(sc.detach().cpu())
        if on_batch is not None:
            on_batch(s + n_it, stats)
    scores = {m: torch.cat(v) for m, v in kept.items() if v} if keep_scores else None
    return AttributionResult(stats, scores)
