"""Language-specific neuron sets, identified several ways from one recording pass.

Every method reads the same :class:`~tl_multineuron.sharing.statistics.SharingStats` (one
recording pass over parallel prompts: per language, how often each neuron is active, specific,
and its activation sums) and returns a :class:`LanguageSets`: a mask ``[lang, layer, d_mlp]``
(a neuron may belong to several languages under LAPE) and the per-neuron score each method
ranks by, so sets of different methods can be cut to equal sizes.

* ``sharing-matters`` (Wang et al. 2024, this library's categories): active in language L alone
  in >= ``min_frequency`` of the items. Score: that frequency.
* ``lape`` (Tang et al. 2024; ``identify.py`` of RUCAIBox/Language-Specific-Neurons): with
  ``p[L]`` the probability that the neuron is active for L, the entropy of ``p`` normalised over
  the languages; neurons none of whose ``p`` exceeds the ``filter_rate`` quantile of all ``p``
  are dropped; the ``top_rate`` share of all neurons (every layer) with the lowest entropy is
  kept, each assigned to every language whose ``p`` exceeds the ``activation_bar_ratio``
  quantile. The paper's bar: top 1%, 0.95, 0.95. Score: minus the entropy.
* ``act-prob-90p`` (as in csalt-research/LangSpecificNeurons): the LAPE selection above, with
  "active" meaning above the neuron's own ``quantile`` (0.9) of its activations pooled
  over the languages instead of above 0. Needs an
  :class:`~tl_multineuron.sharing.histogram.ActivationHistogram` from the same recording pass
  (the quantile is interpolated inside its bin). A per-language threshold would make every
  language's probability ``1 - q`` by construction, so the pooled one is used. Score: minus the
  entropy.
* ``magnitude``: the neuron's mean activation for L minus its mean over the other languages;
  the ``top_rate`` share of all neurons with the largest difference, per language. Score: the
  difference.

Activation probabilities here are per item at the recorded token (by default the last prompt
token), not per token of running text as in Tang et al.; the recording pass decides. Counts are
read at the statistics' first threshold (0 by default: active = post-activation > 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from ..sharing.histogram import ActivationHistogram
from ..sharing.statistics import SharingStats
from .neuron_sets import NeuronSet

METHODS = ("sharing-matters", "lape", "act-prob-90p", "magnitude")
DEFAULTS: dict[str, dict[str, float]] = {
    "sharing-matters": {"min_frequency": 0.5},
    "lape": {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95},
    "act-prob-90p": {
        "quantile": 0.9,
        "top_rate": 0.01,
        "filter_rate": 0.95,
        "activation_bar_ratio": 0.95,
    },
    "magnitude": {"top_rate": 0.01},
}


@dataclass(frozen=True)
class LanguageSets:
    """One method's language-specific sets: ``masks[L]`` the neurons specific to language L,
    ``scores[L]`` the method's ranking score (higher = more specific to L)."""

    method: str
    languages: tuple[str, ...]
    masks: Bool[Tensor, "lang layer d_mlp"]
    scores: Float[Tensor, "lang layer d_mlp"]
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.masks.shape != self.scores.shape or self.masks.shape[0] != len(self.languages):
            raise MultiNeuronError(
                f"{self.method}: masks {tuple(self.masks.shape)} / scores "
                f"{tuple(self.scores.shape)} for {len(self.languages)} languages"
            )

    def sizes(self) -> Int[Tensor, "lang layer"]:
        """Neurons per language and layer."""
        return self.masks.sum(-1)

    def size(self, language: str) -> int:
        return int(self.masks[self._index(language)].sum())

    def neuron_set(self, language: str) -> NeuronSet:
        """Language ``language``'s set; an empty set is an error naming method and language."""
        m = self.masks[self._index(language)]
        if not m.any():
            raise MultiNeuronError(
                f"{self.method}: language {language!r} has no specific neurons "
                f"({_params_text(self.params)}); relax the method's parameters"
            )
        return NeuronSet(m, f"{self.method}-{language}")

    def limited(self, sizes: dict[str, int]) -> LanguageSets:
        """Each language's set cut to its ``sizes[L]`` highest-scoring neurons (every layer
        together); asking for more than a set holds is an error."""
        masks = self.masks.clone()
        for language, k in sizes.items():
            i = self._index(language)
            have = int(self.masks[i].sum())
            if not 0 <= k <= have:
                raise MultiNeuronError(
                    f"{self.method}: cannot cut language {language!r}'s {have} neurons to {k}"
                )
            flat = torch.where(self.masks[i], self.scores[i], -math.inf).flatten()
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[flat.topk(k).indices] = True  # ties: the lower index first (stable topk)
            masks[i] = keep.view_as(masks[i]) & self.masks[i]
        return replace(self, masks=masks, params={**self.params, "limited": dict(sizes)})

    def to_frame(self) -> pd.DataFrame:
        """One row per (language, layer): method, language, layer, size."""
        sizes = self.sizes()
        L = sizes.shape[1]
        idx = pd.MultiIndex.from_product([self.languages, range(L)], names=["language", "layer"])
        df = pd.DataFrame({"size": sizes.flatten().numpy()}, index=idx).reset_index()
        return df.assign(method=self.method)[["method", "language", "layer", "size"]]

    def _index(self, language: str) -> int:
        if language not in self.languages:
            raise MultiNeuronError(
                f"{self.method}: language {language!r} is not among {list(self.languages)}"
            )
        return self.languages.index(language)


def identify_language_sets(
    stats: SharingStats,
    method: str,
    histogram: ActivationHistogram | None = None,
    **params: float,
) -> LanguageSets:
    """The language-specific sets of ``method`` (see the module docstring) with ``params``
    over the method's defaults (``DEFAULTS``); an unknown or out-of-range parameter is an
    error naming the method. ``histogram``: the recording pass's activation histogram, needed
    by ``act-prob-90p`` only."""
    if method not in METHODS:
        raise MultiNeuronError(f"language-specificity method {method!r}; expected one of {METHODS}")
    unknown = sorted(set(params) - set(DEFAULTS[method]))
    if unknown:
        raise MultiNeuronError(
            f"{method}: unknown parameter(s) {unknown}; expected {sorted(DEFAULTS[method])}"
        )
    p = {**DEFAULTS[method], **params}
    for name, v in p.items():
        if not (isinstance(v, int | float) and 0 < float(v) <= 1):
            raise MultiNeuronError(f"{method}: {name} {v!r}; expected a number in (0, 1]")
    if method == "act-prob-90p":
        masks, scores = _act_prob(stats, histogram, **p)
    else:
        masks, scores = _METHODS[method](stats, **p)
    return LanguageSets(method, tuple(stats.languages), masks, scores.float(), p)


def equalize(sets: Sequence[LanguageSets]) -> list[LanguageSets]:
    """The sets of several methods cut, per language, to the smallest of their non-empty sizes
    (each method keeps its own highest-scoring neurons), for a comparison at equal size. A
    method that finds nothing for a language stays empty there (and the matrix says so): one
    method's empty set does not erase the others'."""
    if not sets:
        raise MultiNeuronError("equalize: no sets")
    first = sets[0]
    for s in sets[1:]:
        if s.languages != first.languages or s.masks.shape != first.masks.shape:
            raise MultiNeuronError(
                f"equalize: {s.method} has languages {list(s.languages)} / shape "
                f"{tuple(s.masks.shape)}; {first.method} has {list(first.languages)} / "
                f"{tuple(first.masks.shape)}"
            )
    k = {x: min((s.size(x) for s in sets if s.size(x)), default=0) for x in first.languages}
    return [s.limited({x: min(n, s.size(x)) for x, n in k.items()}) for s in sets]


def _sharing_matters(stats: SharingStats, min_frequency: float) -> tuple[Tensor, Tensor]:
    _need_items(stats)
    freq = stats.specific_counts[0].double() / stats.n_items  # [lang, layer, d_mlp]
    return freq >= min_frequency - 1e-12, freq


def _lape(
    stats: SharingStats, top_rate: float, filter_rate: float, activation_bar_ratio: float
) -> tuple[Tensor, Tensor]:
    _need_items(stats)
    p = stats.active_counts[0].double() / stats.n_items  # [lang, layer, d_mlp]
    return _entropy_selection(p, top_rate, filter_rate, activation_bar_ratio)


def _act_prob(
    stats: SharingStats,
    histogram: ActivationHistogram | None,
    quantile: float,
    top_rate: float,
    filter_rate: float,
    activation_bar_ratio: float,
) -> tuple[Tensor, Tensor]:
    if histogram is None:
        raise MultiNeuronError(
            "act-prob-90p needs the recording pass's activation histogram (histogram=...)"
        )
    if quantile >= 1:
        raise MultiNeuronError(f"act-prob-90p: quantile {quantile}; expected a number in (0, 1)")
    same = (histogram.languages, histogram.n_layers, histogram.d_mlp, histogram.n_items)
    if same != (stats.languages, stats.n_layers, stats.d_mlp, stats.n_items):
        raise MultiNeuronError(
            f"act-prob-90p: the histogram ({list(histogram.languages)}, {histogram.n_layers} "
            f"layers x {histogram.d_mlp}, {histogram.n_items} items) is not of the statistics' "
            f"recording pass ({list(stats.languages)}, {stats.n_layers} x {stats.d_mlp}, "
            f"{stats.n_items} items)"
        )
    p = histogram.exceed_probability(quantile)
    return _entropy_selection(p, top_rate, filter_rate, activation_bar_ratio)


def _entropy_selection(
    p: Tensor, top_rate: float, filter_rate: float, activation_bar_ratio: float
) -> tuple[Tensor, Tensor]:
    """Tang et al.'s selection on per-language probabilities ``p`` ``[lang, layer, d_mlp]``."""
    total = p.sum(0, keepdim=True)
    ent = torch.special.entr(p / total.clamp_min(1e-30)).sum(0)  # [layer, d_mlp]
    flat = p.flatten()
    filter_value = flat.kthvalue(max(1, round(len(flat) * filter_rate))).values
    kept = torch.where((p > filter_value).any(0), ent, torch.full_like(ent, math.inf))
    n = max(1, round(ent.numel() * top_rate))
    picked = torch.zeros(ent.numel(), dtype=torch.bool)
    picked[(-kept.flatten()).topk(n).indices] = True
    picked = picked.view_as(ent) & kept.isfinite()
    bar = flat.kthvalue(max(1, round(len(flat) * activation_bar_ratio))).values
    masks = picked.unsqueeze(0) & (p > bar)
    return masks, (-ent).unsqueeze(0).expand_as(p)  # the score: -entropy, before the filter


def _magnitude(stats: SharingStats, top_rate: float) -> tuple[Tensor, Tensor]:
    mean = stats.mean_activation()  # [lang, layer, d_mlp]
    N = mean.shape[0]
    others = (mean.sum(0, keepdim=True) - mean) / (N - 1)
    diff = mean - others
    n = max(1, round(diff[0].numel() * top_rate))
    flat = diff.flatten(1)
    masks = torch.zeros_like(flat, dtype=torch.bool)
    masks.scatter_(1, flat.topk(n, dim=1).indices, True)
    return masks.view_as(diff) & (diff > 0), diff


def _need_items(stats: SharingStats) -> None:
    if stats.n_items < 1:
        raise MultiNeuronError("language-specific sets need statistics over at least one item")


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "default parameters"


_METHODS = {"sharing-matters": _sharing_matters, "lape": _lape, "magnitude": _magnitude}
