"""Sharing categories of neurons across the languages of one item.

A neuron is *active* for a language when its activation ``a > t`` (criterion ``gt``, the
paper's) or ``|a| > t`` (criterion ``abs``). Per item and layer every neuron falls in exactly
one category by how many of the N languages it is active in: all-shared (N), partial-shared
(2..N-1), specific (1; and which language), non-activated (0). Everything is one count over a
``[lang, layer, neuron]`` boolean tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int, Integer
from torch import Tensor

from ..errors import MultiNeuronError

LANG_DIM = -3  # acts and masks are [..., lang, layer, neuron]


class Category(IntEnum):
    """Sharing category codes (stored as int8)."""

    NON_ACTIVATED = 0
    SPECIFIC = 1
    PARTIAL_SHARED = 2
    ALL_SHARED = 3

    @property
    def label(self) -> str:
        return CATEGORY_NAMES[self.value]


CATEGORY_NAMES = ("non-activated", "specific", "partial-shared", "all-shared")


def parse_category(name: str | int | Category) -> Category:
    """``'all-shared'``, ``'all_shared'``, ``3`` or ``Category.ALL_SHARED`` -> Category."""
    if isinstance(name, Category):
        return name
    if isinstance(name, int):
        return Category(name)
    key = name.strip().lower().replace("_", "-")
    if key not in CATEGORY_NAMES:
        raise MultiNeuronError(f"unknown category {name!r}; expected one of {CATEGORY_NAMES}")
    return Category(CATEGORY_NAMES.index(key))


def validate_thresholds(thresholds: float | Sequence[float]) -> tuple[float, ...]:
    """A tuple of finite, distinct thresholds (a single float becomes a 1-tuple)."""
    ts = (thresholds,) if isinstance(thresholds, (int, float)) else tuple(thresholds)
    if not ts:
        raise MultiNeuronError("no threshold given")
    for t in ts:
        if not isinstance(t, (int, float)) or not math.isfinite(t):
            raise MultiNeuronError(f"threshold {t!r} is not a finite number")
    if len(set(ts)) != len(ts):
        raise MultiNeuronError(f"threshold sweep {list(ts)} repeats a value")
    return tuple(float(t) for t in ts)


def threshold_position(thresholds: Sequence[float], threshold: float | None) -> int:
    """The index of ``threshold`` in a recorded sweep (``None``: the first); a threshold that
    was not recorded is an error naming the sweep."""
    if threshold is None:
        return 0
    for i, t in enumerate(thresholds):
        if abs(t - threshold) < 1e-12:
            return i
    raise MultiNeuronError(
        f"threshold {threshold!r} was not recorded; thresholds: {list(thresholds)}"
    )


def active_mask(
    acts: Float[Tensor, "*batch lang layer neuron"],
    thresholds: float | Sequence[float],
    criterion: str = "gt",
) -> Bool[Tensor, "thr *batch lang layer neuron"]:
    """Which neurons are active, for every threshold of a sweep (one comparison each)."""
    ts = validate_thresholds(thresholds)
    if criterion not in ("gt", "abs"):
        raise MultiNeuronError(f"criterion {criterion!r}; expected 'gt' or 'abs'")
    x = acts.abs() if criterion == "abs" else acts
    if len(ts) == 1:
        return (x > ts[0]).unsqueeze(0)
    t = torch.tensor(ts, dtype=x.dtype, device=x.device).view(-1, *([1] * x.ndim))
    return x.unsqueeze(0) > t


@dataclass(frozen=True)
class Categories:
    """Per-item sharing categories.

    codes: ``Category`` values, int8 ``[*batch, layer, neuron]``.
    specific_lang: index into ``languages`` for specific neurons, -1 elsewhere.
    """

    codes: Int[Tensor, "*batch layer neuron"]
    specific_lang: Int[Tensor, "*batch layer neuron"]
    languages: tuple[str, ...]

    def mask(self, category: str | int | Category) -> Bool[Tensor, "*batch layer neuron"]:
        return self.codes == int(parse_category(category))

    def specific_mask(self, language: str) -> Bool[Tensor, "*batch layer neuron"]:
        if language not in self.languages:
            raise MultiNeuronError(f"language {language!r} not in {list(self.languages)}")
        return self.specific_lang == self.languages.index(language)

    def counts(self) -> Int[Tensor, "*batch layer 4"]:
        """Number of neurons per category (last dim ordered as ``Category``)."""
        return torch.stack([(self.codes == c).sum(-1) for c in range(4)], dim=-1)

    def to_frame(self) -> pd.DataFrame:
        """Tidy counts: one row per (batch index..., layer, category)."""
        counts = self.counts()
        flat = counts.reshape(-1, counts.shape[-2], 4)
        rows = []
        for b in range(flat.shape[0]):
            for layer in range(flat.shape[1]):
                for c in range(4):
                    rows.append((b, layer, CATEGORY_NAMES[c], int(flat[b, layer, c])))
        return pd.DataFrame(rows, columns=["item", "layer", "category", "count"])


def codes_from_counts(count: Integer[Tensor, "*shape"], n_lang: int) -> Int[Tensor, "*shape"]:
    """Category codes (int8) from how many of ``n_lang`` languages are active: 0 none, 1 one
    (specific), 2 some (partial-shared), 3 all (all-shared)."""
    return count.clamp(max=2).to(torch.int8) + (count == n_lang).to(torch.int8)


def categorize(
    active: Bool[Tensor, "*batch lang layer neuron"], languages: Sequence[str] | None = None
) -> Categories:
    """Sharing categories from an activity mask whose third-last dim is the language."""
    if active.dtype != torch.bool:
        raise MultiNeuronError(f"categorize expects a bool mask, got dtype {active.dtype}")
    n_lang = active.shape[LANG_DIM]
    langs = tuple(languages) if languages is not None else tuple(str(i) for i in range(n_lang))
    if len(langs) != n_lang:
        raise MultiNeuronError(
            f"{len(langs)} language labels {list(langs)} for a mask with {n_lang} languages"
        )
    if n_lang < 2:
        raise MultiNeuronError(f"need at least 2 languages to categorize, got {n_lang}")
    if n_lang > 127:
        raise MultiNeuronError(f"at most 127 languages (int8 labels), got {n_lang}")
    # One integer reduction over the language dim counts active languages; the language of
    # a specific neuron is then looked up only where exactly one is active (no full argmax).
    small = n_lang < 256
    count = active.view(torch.uint8).sum(LANG_DIM, dtype=torch.uint8 if small else torch.int32)
    codes = codes_from_counts(count, n_lang)
    specific_lang = torch.full(count.shape, -1, dtype=torch.int8, device=active.device)
    flat_lang = active.movedim(LANG_DIM, 0).reshape(n_lang, -1)
    sel = (count.reshape(-1) == 1).nonzero().squeeze(1)
    weights = torch.arange(
        n_lang, dtype=torch.uint8 if small else torch.int32, device=active.device
    )[:, None]
    # the one active language of each specific neuron: sum of (language index x active)
    lang_of = (flat_lang[:, sel].view(torch.uint8) * weights).sum(0, dtype=weights.dtype)
    specific_lang.view(-1)[sel] = lang_of.to(torch.int8)
    return Categories(codes, specific_lang, langs)


def categorize_acts(
    acts: Float[Tensor, "*batch lang layer neuron"],
    threshold: float = 0.0,
    criterion: str = "gt",
    languages: Sequence[str] | None = None,
) -> Categories:
    """Shortcut: categories of raw activations at one threshold."""
    return categorize(active_mask(acts, threshold, criterion)[0], languages)
