"""Streaming, mergeable dataset statistics of neuron sharing.

:class:`SharingStats` holds counts whose size depends only on thresholds x languages x layers x
neurons, never on the number of items: per-neuron category counts, per-language specific and
active counts, and per-language activation sums. Layer fractions, stability across inputs,
activation probabilities (for LAPE) and mean activations are all derived from them. Two
accumulators over disjoint shards merge into exactly the accumulator of the union.

Beside them, ``items`` (:class:`~tl_multineuron.sharing.item_summaries.ItemSummaries`, a few
numbers per item and layer) keeps what the paper's bands over items, tests across tasks and the
language x language co-activation need; files written before it (format 1) load without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from ..files import atomic_write
from .accumulator import (
    SQ_SUM_GRID,
    SUM_GRID,
    check_same_origin,
    merged_fingerprints,
    on_grid,
)
from .classification import (
    CATEGORY_NAMES,
    Categories,
    Category,
    active_mask,
    categorize,
    parse_category,
    threshold_position,
    validate_thresholds,
)
from .item_summaries import ItemSummaries

FORMAT_VERSION = 2  # 2: per-item summaries (``items``); format 1 files load without them
TENSOR_FIELDS = ("category_counts", "specific_counts", "active_counts", "act_sum", "act_sq_sum")


@dataclass
class SharingStats:
    """Accumulated sharing statistics over a dataset (see module docstring).

    category_counts: ``[thr, category, layer, neuron]`` items in which a neuron had a category.
    specific_counts: ``[thr, lang, layer, neuron]`` items in which it was specific to a language.
    active_counts: ``[thr, lang, layer, neuron]`` items in which it was active for a language.
    act_sum / act_sq_sum: ``[lang, layer, neuron]`` sums of activations and their squares.
    """

    languages: tuple[str, ...]
    thresholds: tuple[float, ...]
    criterion: str
    n_layers: int
    d_mlp: int
    n_items: int = 0
    meta: dict = field(default_factory=dict)
    category_counts: Int[Tensor, "thr 4 layer neuron"] | None = None
    specific_counts: Int[Tensor, "thr lang layer neuron"] | None = None
    active_counts: Int[Tensor, "thr lang layer neuron"] | None = None
    act_sum: Float[Tensor, "lang layer neuron"] | None = None
    act_sq_sum: Float[Tensor, "lang layer neuron"] | None = None
    items: ItemSummaries | None = None

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        self.thresholds = validate_thresholds(self.thresholds)
        if len(self.languages) < 2:
            raise MultiNeuronError(f"need at least 2 languages, got {list(self.languages)}")
        if self.criterion not in ("gt", "abs"):
            raise MultiNeuronError(f"criterion {self.criterion!r}; expected 'gt' or 'abs'")
        T, N, L, D = len(self.thresholds), len(self.languages), self.n_layers, self.d_mlp
        shapes = {
            "category_counts": (T, 4, L, D),
            "specific_counts": (T, N, L, D),
            "active_counts": (T, N, L, D),
            "act_sum": (N, L, D),
            "act_sq_sum": (N, L, D),
        }
        for name, shape in shapes.items():
            dtype = torch.float64 if name.startswith("act_") else torch.int32
            val = getattr(self, name)
            if val is None:
                setattr(self, name, torch.zeros(shape, dtype=dtype))
            elif tuple(val.shape) != shape:
                raise MultiNeuronError(f"{name} has shape {tuple(val.shape)}; expected {shape}")

    # -- accumulation --------------------------------------------------------------------
    def update(
        self, acts: Float[Tensor, "item lang layer neuron"], item_ids: Sequence[str] | None = None
    ) -> Categories:
        """Add a batch of items' activations (any device; counts stay on the CPU). Returns
        the batch's categories for every threshold (codes ``[thr, item, layer, neuron]``).
        ``item_ids`` name the items in the per-item summaries (default: their positions)."""
        N, L, D = len(self.languages), self.n_layers, self.d_mlp
        if acts.ndim != 4 or tuple(acts.shape[1:]) != (N, L, D):
            raise MultiNeuronError(
                f"activations of shape {tuple(acts.shape)}; expected [item, lang={N}, "
                f"layer={L}, neuron={D}]"
            )
        if not torch.isfinite(acts).all():
            bad = (~torch.isfinite(acts)).nonzero()[0].tolist()
            raise MultiNeuronError(
                f"non-finite activation at item {bad[0]} (of this batch), language "
                f"{self.languages[bad[1]]!r}, layer {bad[2]}, neuron {bad[3]}"
            )
        active = active_mask(acts, self.thresholds, self.criterion)  # [T, I, N, L, D]
        cats = categorize(active, self.languages)  # codes [T, I, L, D]
        codes = cats.codes
        for c in Category:
            self.category_counts[:, c] += (codes == c).sum(1, dtype=torch.int32).cpu()
        spec = active & (codes == Category.SPECIFIC).unsqueeze(2)
        self.specific_counts += spec.sum(1, dtype=torch.int32).cpu()
        self.active_counts += active.sum(1, dtype=torch.int32).cpu()
        a = acts.detach().to(torch.float64)
        self.act_sum += on_grid(a.sum(0).cpu(), SUM_GRID)
        self.act_sq_sum += on_grid((a * a).sum(0).cpu(), SQ_SUM_GRID)
        if self.items is not None:
            ids = item_ids or [str(self.n_items + i) for i in range(acts.shape[0])]
            self.items.update(active, codes, ids)
        self.n_items += acts.shape[0]
        return cats

    def check_compatible(self, other: SharingStats, verb: str = "merge") -> None:
        """An error naming the first field that differs (configuration, then origin)."""
        for attr in ("languages", "thresholds", "criterion", "n_layers", "d_mlp"):
            if getattr(self, attr) != getattr(other, attr):
                raise MultiNeuronError(
                    f"cannot {verb} statistics with different {attr}: "
                    f"{getattr(self, attr)!r} vs {getattr(other, attr)!r}"
                )
        check_same_origin(self.meta, other.meta, "statistics", verb)
        if (self.items is None) != (other.items is None):
            raise MultiNeuronError(
                f"cannot {verb} statistics with per-item summaries and statistics without them "
                "(written before they existed)"
            )
        if self.items is not None and other.items is not None:
            self.items.check_compatible(other.items, verb)

    def merge(self, other: SharingStats) -> SharingStats:
        """A new accumulator equal to one run over both shards. Counts are integers and the
        activation sums are kept on a binary grid, so every merge order gives the same bits."""
        self.check_compatible(other)
        out = self.copy()
        for name in TENSOR_FIELDS:
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.n_items = self.n_items + other.n_items
        if self.items is not None and other.items is not None:
            out.items = self.items.merge(other.items)
        out.meta["dataset_fingerprints"] = merged_fingerprints(self.meta, other.meta)
        return out

    def copy(self) -> SharingStats:
        return SharingStats(
            self.languages,
            self.thresholds,
            self.criterion,
            self.n_layers,
            self.d_mlp,
            self.n_items,
            json.loads(json.dumps(self.meta)),
            *(getattr(self, n).clone() for n in TENSOR_FIELDS),
            items=self.items.copy() if self.items is not None else None,
        )

    # -- derived quantities ----------------------------------------------------------------
    def _t(self, threshold: float | None) -> int:
        return threshold_position(self.thresholds, threshold)

    def _need_items(self) -> None:
        if self.n_items == 0:
            raise MultiNeuronError("no items accumulated yet")

    def layer_fractions(self, threshold: float | None = None) -> Float[Tensor, "layer 4"]:
        """Mean fraction of a layer's neurons in each category, per item."""
        self._need_items()
        c = self.category_counts[self._t(threshold)].sum(-1).T.double()
        return c / (self.n_items * self.d_mlp)

    def category_frequency(self, threshold: float | None = None) -> Float[Tensor, "4 layer neuron"]:
        """Fraction of items in which each neuron had each category."""
        self._need_items()
        return self.category_counts[self._t(threshold)].double() / self.n_items

    def neuron_mask(
        self,
        category: str | Category,
        min_frequency: float = 1.0,
        threshold: float | None = None,
    ) -> Bool[Tensor, "layer neuron"]:
        """Neurons with ``category`` in at least ``min_frequency`` of the items."""
        freq = self.category_frequency(threshold)[int(parse_category(category))]
        return _at_least(freq, min_frequency)

    def specific_mask(
        self, language: str, min_frequency: float = 0.5, threshold: float | None = None
    ) -> Bool[Tensor, "layer neuron"]:
        """Neurons specific to ``language`` in at least ``min_frequency`` of the items."""
        if language not in self.languages:
            raise MultiNeuronError(f"language {language!r} not in {list(self.languages)}")
        self._need_items()
        counts = self.specific_counts[self._t(threshold), self.languages.index(language)]
        return _at_least(counts.double() / self.n_items, min_frequency)

    def top_neurons(
        self, category: str | Category, layer: int, n: int = 5, threshold: float | None = None
    ) -> list[int]:
        """The ``n`` neurons of a (recorded-layer index) ``layer`` most often in ``category``
        (ties: larger mean |activation| first)."""
        if not 0 <= layer < self.n_layers:
            raise MultiNeuronError(f"layer index {layer} outside the {self.n_layers} recorded")
        freq = self.category_frequency(threshold)[int(parse_category(category)), layer]
        mag = self.mean_activation()[:, layer].abs().mean(0)
        key = freq * 1e6 + mag / (mag.max() + 1e-12)
        return key.topk(min(n, self.d_mlp)).indices.tolist()

    def stability(self, threshold: float | None = None) -> pd.DataFrame:
        """How stable a neuron's category is across inputs, per layer and category.

        ``always``: fraction of neurons in the category for every item; ``ever``: for at least
        one item; ``overlap``: always / ever (the paper's overlap across the test set);
        ``modal_share``: mean over neurons of the share of items in their most common category.
        """
        freq = self.category_frequency(threshold)
        always = (freq >= 1.0 - 1e-12).double().mean(-1)
        ever = (freq > 0).double().mean(-1)
        overlap = torch.where(ever > 0, always / ever.clamp_min(1e-30), torch.zeros_like(ever))
        modal = freq.max(0).values.mean(-1)
        idx = pd.MultiIndex.from_product(
            [range(self.n_layers), list(CATEGORY_NAMES)], names=["layer", "category"]
        )
        out = pd.DataFrame(
            {
                "always": always.T.reshape(-1).numpy(),  # [layer, category], layer-major
                "ever": ever.T.reshape(-1).numpy(),
                "overlap": overlap.T.reshape(-1).numpy(),
                "modal_share": modal.repeat_interleave(4).numpy(),
            },
            index=idx,
        ).reset_index()
        out.insert(0, "threshold", self.thresholds[self._t(threshold)])
        return out

    def specific_per_language(self, threshold: float | None = None) -> Float[Tensor, "lang layer"]:
        """Mean number of neurons per item specific to each language, per layer."""
        self._need_items()
        return self.specific_counts[self._t(threshold)].sum(-1).double() / self.n_items

    def activation_probability(
        self, threshold: float | None = None
    ) -> Float[Tensor, "lang layer neuron"]:
        """P(active | language) per neuron."""
        self._need_items()
        return self.active_counts[self._t(threshold)].double() / self.n_items

    def lape(self, threshold: float | None = None) -> Float[Tensor, "layer neuron"]:
        """Language activation probability entropy (Tang et al. 2024): low = language-specific.
        Neurons never active get NaN."""
        p = self.activation_probability(threshold)
        total = p.sum(0, keepdim=True)
        q = p / total.clamp_min(1e-30)
        ent = torch.special.entr(q).sum(0)  # -q log q, 0 at q = 0
        return torch.where(total[0] > 0, ent, torch.full_like(ent, float("nan")))

    def mean_activation(self) -> Float[Tensor, "lang layer neuron"]:
        self._need_items()
        return self.act_sum / self.n_items

    def select_mean(self, languages) -> Float[Tensor, "lang layer neuron"]:
        """Mean activations for ``languages`` (in that order)."""
        bad = [x for x in languages if x not in self.languages]
        if bad:
            raise MultiNeuronError(f"statistics have no language(s) {bad}")
        return self.mean_activation()[[self.languages.index(x) for x in languages]].float()

    def std_activation(self) -> Float[Tensor, "lang layer neuron"]:
        m = self.mean_activation()
        return (self.act_sq_sum / self.n_items - m * m).clamp_min(0).sqrt()

    # -- tables ------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """Tidy table: threshold, layer, category, language, value (mean fraction of the
        layer's neurons per item). ``language`` is ``"all"`` for category fractions and the
        language for per-language specific fractions."""
        cats = list(CATEGORY_NAMES) + ["specific"] * len(self.languages)
        langs = ["all"] * 4 + list(self.languages)
        parts = []
        for t in self.thresholds:  # per layer: the 4 categories, then specific per language
            values = torch.cat(
                [self.layer_fractions(t), (self.specific_per_language(t) / self.d_mlp).T], 1
            )
            idx = pd.MultiIndex.from_product(
                [[t], range(self.n_layers), range(len(cats))], names=["threshold", "layer", "k"]
            )
            parts.append(pd.DataFrame({"value": values.reshape(-1).double().numpy()}, index=idx))
        out = pd.concat(parts).reset_index()
        k = out.pop("k").to_numpy()
        out.insert(2, "category", np.asarray(cats, dtype=object)[k])
        out.insert(3, "language", np.asarray(langs, dtype=object)[k])
        return out

    def summary(self, threshold: float | None = None) -> pd.DataFrame:
        """Per-layer category percentages (a compact table for printing)."""
        frac = self.layer_fractions(threshold) * 100
        return pd.DataFrame(frac.numpy(), columns=list(CATEGORY_NAMES)).rename_axis("layer")

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "languages": list(self.languages),
            "thresholds": list(self.thresholds),
            "criterion": self.criterion,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "n_items": self.n_items,
            "meta_json": json.dumps(self.meta),
            **{n: getattr(self, n) for n in TENSOR_FIELDS},
            **({"items": self.items.state()} if self.items is not None else {}),
        }

    @classmethod
    def from_state(cls, s: dict) -> SharingStats:
        v = s.get("format_version")
        if v not in (1, FORMAT_VERSION):
            raise MultiNeuronError(
                f"statistics file format version {v!r}; this library reads 1 to {FORMAT_VERSION}"
            )
        return cls(
            tuple(s["languages"]),
            tuple(s["thresholds"]),
            s["criterion"],
            int(s["n_layers"]),
            int(s["d_mlp"]),
            int(s["n_items"]),
            json.loads(s["meta_json"]),
            *(s[n] for n in TENSOR_FIELDS),
            items=ItemSummaries.from_state(s["items"]) if "items" in s else None,
        )

    def save(self, path: str | Path) -> None:
        """Write losslessly (atomic)."""
        atomic_write(path, lambda tmp: torch.save(self.state(), tmp))

    @classmethod
    def load(cls, path: str | Path) -> SharingStats:
        p = Path(path)
        if not p.is_file():
            raise MultiNeuronError(f"statistics file {str(p)!r} does not exist")
        return cls.from_state(torch.load(p, weights_only=True))

    def equals(self, other: SharingStats) -> bool:
        """Exact equality of configuration and every count."""
        try:
            self.check_compatible(other, verb="compare")
        except MultiNeuronError:
            return False
        same_items = (self.items is None and other.items is None) or (
            self.items is not None and other.items is not None and self.items.equals(other.items)
        )
        return (
            self.n_items == other.n_items
            and same_items
            and all(torch.equal(getattr(self, n), getattr(other, n)) for n in TENSOR_FIELDS)
        )


def _at_least(freq: Tensor, min_frequency: float) -> Tensor:
    if not 0.0 < min_frequency <= 1.0:
        raise MultiNeuronError(f"min_frequency must be in (0, 1], got {min_frequency}")
    return freq >= min_frequency - 1e-12


def merge_all(parts: Sequence[SharingStats]) -> SharingStats:
    """Merge several shards."""
    if not parts:
        raise MultiNeuronError("merge_all needs at least one SharingStats")
    out = parts[0].copy()
    for p in parts[1:]:
        out = out.merge(p)
    return out
