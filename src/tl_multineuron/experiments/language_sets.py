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
* ``act-prob-90p`` (Mondal et al.; csalt-research/LangSpecificNeurons ``activation.py`` and
  ``lang_neurons.py``): token level only (:func:`token_language_sets` on
  :class:`~tl_multineuron.sharing.act_prob.ActProbStats`): a language's relevance is the share of
  its tokens whose pre-activation exceeds the language's own 90th percentile (the mean of
  per-batch quantiles), and each language keeps, independently, its top ``round(top_rate * L *
  d)`` neurons by relevance (``top_rate`` 0.00125 as there; no entropy, no filter, no bar; a
  neuron may belong to several languages). Score: the relevance.
* ``magnitude``: the neuron's mean activation for L minus its mean over the other languages;
  the ``top_rate`` share of all neurons with the largest difference, per language. Score: the
  difference.

Activation probabilities here are per item at the recorded token (by default the last prompt
token), not per token of running text as in Tang et al.; the recording pass decides. Counts are
read at the statistics' first threshold (0 by default: active = post-activation > 0).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from ..files import atomic_write, read_torch_file
from ..sharing.act_prob import ActProbStats
from ..sharing.statistics import SharingStats
from ..sharing.token_stats import TokenStats
from .neuron_sets import NeuronSet

METHODS = ("sharing-matters", "lape", "act-prob-90p", "magnitude")
DEFAULTS: dict[str, dict[str, float]] = {
    "sharing-matters": {"min_frequency": 0.5},
    "lape": {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95},
    "act-prob-90p": {"quantile": 0.9, "top_rate": 0.00125},
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

    def save_lape(self, path: str | Path) -> None:
        """Write the sets in LAPE's ``*.neuron.pth`` format (RUCAIBox/Language-Specific-Neurons
        ``identify.py``): a list over the languages, in ``self.languages`` order, of a list
        over the layers of sorted ``LongTensor`` s of neuron indices. The file carries no
        language names (LAPE's order is positional): keep ``self.languages`` with it. A
        language with no neuron is written as empty tensors (``identify.py`` drops trailing
        empty languages; :func:`load_lape_sets` reads both). Written atomically."""
        out = [
            [layer.nonzero().flatten().long().sort().values for layer in self.masks[i]]
            for i in range(len(self.languages))
        ]
        atomic_write(path, lambda tmp: torch.save(out, tmp))

    def save_csalt(self, path: str | Path) -> None:
        """The sets as csalt's pickle ``{lang: LongTensor[m, 2]}`` of ``(layer, neuron)`` rows
        in layer-major order (an empty ``[0, 2]`` tensor for a language without neurons),
        written atomically with :mod:`pickle` as csalt writes it; read back with
        :func:`~tl_multineuron.experiments.peer_files.load_csalt_sets`."""
        out = {x: self.masks[i].nonzero().long() for i, x in enumerate(self.languages)}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                pickle.dump(out, f)

        atomic_write(path, write)

    def _index(self, language: str) -> int:
        if language not in self.languages:
            raise MultiNeuronError(
                f"{self.method}: language {language!r} is not among {list(self.languages)}"
            )
        return self.languages.index(language)


def load_lape_sets(
    path: str | Path,
    languages: Sequence[str],
    d_mlp: int,
    n_layers: int | None = None,
    method: str = "lape-file",
) -> LanguageSets:
    """Language sets from a LAPE ``*.neuron.pth`` file (see :meth:`LanguageSets.save_lape`),
    its entries named by ``languages`` in order (the file carries no names). Fewer entries
    than languages are read as LAPE's trailing languages without neurons; more is an error.
    Every layer count must agree (and equal ``n_layers`` when given), every index be an
    integer in ``[0, d_mlp)``; errors name the file, the language and the layer. Scores are 1
    on the set (a file carries no ranking)."""
    where = str(path)
    languages = tuple(languages)
    if len(set(languages)) != len(languages) or not languages:
        raise MultiNeuronError(f"{where}: languages {list(languages)} must be distinct, >= 1")
    data = read_torch_file(path, "LAPE neuron file")
    if not isinstance(data, list | tuple) or not all(isinstance(x, list | tuple) for x in data):
        raise MultiNeuronError(
            f"{where}: expected a list over languages of lists over layers of LongTensors "
            f"(LAPE's format); got {type(data).__name__}"
        )
    if len(data) > len(languages):
        raise MultiNeuronError(
            f"{where} holds {len(data)} languages but {len(languages)} were named "
            f"({list(languages)}): name every language of the file, in its order"
        )
    layer_counts = {len(x) for x in data}
    if len(layer_counts) > 1:
        raise MultiNeuronError(f"{where}: the languages hold different layer counts {layer_counts}")
    L = n_layers if n_layers is not None else (layer_counts.pop() if layer_counts else None)
    if L is None:
        raise MultiNeuronError(f"{where}: no language in the file; give n_layers")
    masks = torch.zeros(len(languages), L, d_mlp, dtype=torch.bool)
    for i, per_layer in enumerate(data):
        if len(per_layer) != L:
            raise MultiNeuronError(
                f"{where}, language {languages[i]!r}: {len(per_layer)} layers; the model has {L}"
            )
        for layer, idx in enumerate(per_layer):
            t = torch.as_tensor(idx)
            if t.numel() == 0:
                continue
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or t.ndim != 1:
                raise MultiNeuronError(
                    f"{where}, language {languages[i]!r}, layer {layer}: expected a 1-D tensor of "
                    f"neuron indices; got {t.dtype} of shape {tuple(t.shape)}"
                )
            bad = t[(t < 0) | (t >= d_mlp)]
            if bad.numel():
                raise MultiNeuronError(
                    f"{where}, language {languages[i]!r}, layer {layer}: neuron index "
                    f"{int(bad[0])} outside the model's {d_mlp} neurons per layer"
                )
            masks[i, layer, t.long()] = True
    return LanguageSets(method, languages, masks, masks.float(), {"file": Path(path).name})


def identify_language_sets(stats: SharingStats, method: str, **params: float) -> LanguageSets:
    """The language-specific sets of ``method`` (see the module docstring) with ``params``
    over the method's defaults (``DEFAULTS``) from one recording pass over items; an unknown or
    out-of-range parameter is an error naming the method. ``act-prob-90p`` is defined on
    tokens of running text only (:func:`token_language_sets`)."""
    if method not in METHODS:
        raise MultiNeuronError(f"language-specificity method {method!r}; expected one of {METHODS}")
    if method not in ITEM_METHODS:
        raise MultiNeuronError(
            f"{method} is defined on tokens of running text (its authors' per-language "
            "quantiles over batches of text): record_act_prob + token_language_sets"
        )
    p = _check_params(method, params)
    masks, scores = _METHODS[method](stats, **p)
    return LanguageSets(method, tuple(stats.languages), masks, scores.float(), p)


#: the methods defined over items' recorded token (what :func:`identify_language_sets` runs)
ITEM_METHODS = ("sharing-matters", "lape", "magnitude")
#: the methods defined over tokens of running text (what :func:`token_language_sets` runs)
TOKEN_METHODS = ("lape", "act-prob-90p")


def token_language_sets(
    stats: TokenStats | ActProbStats, method: str, **params: float
) -> LanguageSets:
    """LAPE or Act-Prob-90p as their authors run them, on token-level statistics of running
    text: LAPE's :func:`lape_select` in float32 on ``over_zero / n`` of a
    :class:`~tl_multineuron.sharing.token_stats.TokenStats`; Act-Prob-90p's
    :func:`act_prob_select` on the relevance of an
    :class:`~tl_multineuron.sharing.act_prob.ActProbStats` (its ``quantile`` is the one it was
    recorded at). Parameters and defaults as ``DEFAULTS`` (the papers')."""
    if method not in TOKEN_METHODS:
        raise MultiNeuronError(
            f"token-level method {method!r}; expected one of {TOKEN_METHODS} (sharing-matters "
            "and magnitude are defined on items: identify_language_sets)"
        )
    want = TokenStats if method == "lape" else ActProbStats
    if not isinstance(stats, want):
        raise MultiNeuronError(f"{method} reads {want.__name__}; got {type(stats).__name__}")
    p = _check_params(method, params)
    if method == "lape":
        probs = stats.probabilities()
        masks, ent = lape_select(probs, p["top_rate"], p["filter_rate"],
                                 p["activation_bar_ratio"])  # fmt: skip
        scores = (-ent).unsqueeze(0).expand_as(masks).float()
    else:
        if abs(p["quantile"] - stats.q) > 1e-12:
            raise MultiNeuronError(f"act-prob-90p: statistics recorded at quantile {stats.q}, "
                                   f"asked for {p['quantile']}")  # fmt: skip
        masks, scores = act_prob_select(stats.relevance(), p["top_rate"])
    params_out = {**p, "unit": "token", "site": stats.site}
    return LanguageSets(method, tuple(stats.languages), masks, scores, params_out)


def act_prob_select(
    relevance: Float[Tensor, "lang layer d_mlp"], top_rate: float = 0.00125
) -> tuple[Bool[Tensor, "lang layer d_mlp"], Float[Tensor, "lang layer d_mlp"]]:
    """Act-Prob-90p's selection exactly as ``lang_neurons.py`` (``_get_set_indep_neurons``)
    runs it: per language independently, ``torch.topk`` of the relevance over every layer's
    neurons flattened layer-major (its tie order), ``k = round(top_rate * L * d)`` (a ``k``
    that rounds to 0 taken as 1). Returns the masks and the relevance as the score."""
    if relevance.ndim != 3:
        raise MultiNeuronError(
            f"act-prob relevance of shape {tuple(relevance.shape)}; expected [lang, layer, d_mlp]"
        )
    N, L, D = relevance.shape
    k = max(1, round(top_rate * L * D))
    masks = torch.zeros(N, L * D, dtype=torch.bool)
    for i in range(N):  # per language, as there (topk of each language's flattened relevance)
        _, top = torch.topk(relevance[i].flatten(), k=k, largest=True)
        masks[i, top] = True
    return masks.view(N, L, D), relevance.float()


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


def _check_params(method: str, params: dict) -> dict:
    """``params`` over the method's defaults; an unknown or out-of-range one is an error."""
    unknown = sorted(set(params) - set(DEFAULTS[method]))
    if unknown:
        raise MultiNeuronError(
            f"{method}: unknown parameter(s) {unknown}; expected {sorted(DEFAULTS[method])}"
        )
    p = {**DEFAULTS[method], **params}
    for name, v in p.items():
        if not (isinstance(v, int | float) and 0 < float(v) <= 1):
            raise MultiNeuronError(f"{method}: {name} {v!r}; expected a number in (0, 1]")
    return p


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


def _entropy_selection(
    p: Tensor, top_rate: float, filter_rate: float, activation_bar_ratio: float
) -> tuple[Tensor, Tensor]:
    """Tang et al.'s selection on per-language probabilities ``p`` ``[lang, layer, d_mlp]``:
    :func:`lape_select` (its score: minus the entropy, before the filter)."""
    masks, ent = lape_select(p, top_rate, filter_rate, activation_bar_ratio, torch.float64)
    return masks, (-ent.double()).unsqueeze(0).expand_as(p)


def lape_select(
    probs: Float[Tensor, "lang layer d_mlp"],
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
    dtype: torch.dtype = torch.float32,
) -> tuple[Bool[Tensor, "lang layer d_mlp"], Float[Tensor, "layer d_mlp"]]:
    """LAPE's selection exactly as ``identify.py`` of RUCAIBox/Language-Specific-Neurons runs
    it, on activation probabilities ``probs`` (``over_zero / n`` per language), in float32 as
    there (``dtype``: the per-item methods of :func:`identify_language_sets` run it in float64,
    as their committed results were made; the order of near-equal entropies at the cut can
    differ between the two):

    1. entropy of each neuron's probabilities normalised over the languages (a neuron active
       in no language: 0 / 0 taken as 0, entropy 0);
    2. ``filter``: the ``round(numel * filter_rate)``-th smallest of all probabilities
       (``kthvalue``); a neuron none of whose probabilities is strictly above it gets entropy
       ``inf``;
    3. the ``round(numel * top_rate)`` neurons of lowest entropy over every layer
       (``topk(largest=False)`` on the layer-major flattening: its tie order), the ``inf`` ones
       included where fewer pass the filter, as in the original;
    4. ``bar``: the ``round(numel * activation_bar_ratio)``-th smallest probability; a picked
       neuron belongs to every language whose probability is strictly above it.

    Returns the masks and the entropies (before the filter). The only departure: a rank
    that rounds to 0 is taken as 1 (``kthvalue(0)`` / ``topk(0)`` would fail or pick nothing)."""
    p = probs.to(dtype)
    if p.ndim != 3:
        raise MultiNeuronError(
            f"LAPE probabilities of shape {tuple(p.shape)}; expected [lang, layer, d_mlp]"
        )
    # identify.py's layout, contiguous as there (the sums below then reduce in its order)
    lpn = p.permute(1, 2, 0).contiguous()  # [layer, inter, lang]
    normed = lpn / lpn.sum(-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    logs = torch.where(normed > 0, normed.log(), 0)
    ent = -torch.sum(normed * logs, dim=-1)  # [layer, inter]
    flat = lpn.flatten()
    top_prob = _lape_bar(flat, filter_rate)
    unfiltered = ent.clone()
    ent[(lpn > top_prob).sum(-1) == 0] = torch.inf
    n = max(1, round(ent.numel() * top_rate))
    _, index = ent.flatten().topk(n, largest=False)
    rows, cols = index // ent.size(1), index % ent.size(1)
    bar = _lape_bar(flat, activation_bar_ratio)
    chosen = torch.zeros_like(lpn, dtype=torch.bool)  # [layer, inter, lang]
    chosen[rows, cols] = lpn[rows, cols] > bar
    return chosen.permute(2, 0, 1).contiguous(), unfiltered


def _lape_bar(flat: Tensor, rate: float) -> float:
    """LAPE's quantile bar: the ``round(numel * rate)``-th smallest of all probabilities
    (``kthvalue``; a rank that rounds to 0 taken as 1)."""
    return flat.kthvalue(max(1, round(len(flat) * rate))).values.item()


def lape_diagnostics(
    probs: Float[Tensor, "lang layer d_mlp"],
    languages: Sequence[str],
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
) -> pd.DataFrame:
    """Why LAPE finds what it finds: per language, the distribution of its activation
    probabilities (mean, quantiles, the shares at exactly 0 and 1), LAPE's two bars (the
    ``filter_rate`` and ``activation_bar_ratio`` quantiles of all probabilities, as
    :func:`lape_select` computes them), how many neurons exceed the bar, and the set size."""
    masks, _ = lape_select(probs, top_rate, filter_rate, activation_bar_ratio)
    flat = probs.float().flatten()
    filt, bar = _lape_bar(flat, filter_rate), _lape_bar(flat, activation_bar_ratio)
    q = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    out = []
    for i, x in enumerate(languages):
        p = probs[i].double().flatten()
        med, q90, q99 = torch.quantile(p, q).tolist()
        out.append({"language": x, "mean": p.mean().item(), "median": med, "q90": q90,
                    "q99": q99, "share_zero": (p == 0).double().mean().item(),
                    "share_one": (p == 1).double().mean().item(), "filter_bar": filt,
                    "activation_bar": bar, "above_bar": int((p > bar).sum()),
                    "set_size": int(masks[i].sum())})  # fmt: skip
    return pd.DataFrame(out)


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
