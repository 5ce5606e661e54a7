"""Per-row attribution summaries: for every (item, language) row, layer and sharing category,
how many of the top-K neurons fall in the category, the attribution magnitude it holds, and its
largest score. Four numbers per (row, layer, category), never per neuron.

They let attribution be split by anything known per row after the fact, such as whether the
model answered the row correctly (:mod:`~tl_multineuron.attribution.correctness`), and give the
paper's effective-score statistic (per item the maximum per category, then the mean over items).
Kept inside :class:`~tl_multineuron.attribution.stats.ScoreStats`; merging appends rows in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import MultiNeuronError

TENSORS = ("topk", "mass", "peak")


@dataclass
class RowAttribution:
    """topk: ``[item, lang, layer, 4]`` top-K neurons per category; mass: summed |score|;
    peak: the largest score (-inf where the row has no neuron of the category)."""

    languages: tuple[str, ...]
    layers: tuple[int, ...]
    k: int
    item_ids: list[str] = field(default_factory=list)
    topk: Int[Tensor, "item lang layer 4"] | None = None
    mass: Float[Tensor, "item lang layer 4"] | None = None
    peak: Float[Tensor, "item lang layer 4"] | None = None

    def __post_init__(self) -> None:
        self.languages, self.layers = tuple(self.languages), tuple(self.layers)
        self.item_ids = list(self.item_ids)
        shape = (len(self.item_ids), len(self.languages), len(self.layers), 4)
        for name, dtype in zip(TENSORS, (torch.int32, torch.float64, torch.float64), strict=True):
            val = getattr(self, name)
            if val is None:
                setattr(self, name, torch.zeros(shape, dtype=dtype))
            elif tuple(val.shape) != shape:
                raise MultiNeuronError(f"{name} has shape {tuple(val.shape)}; expected {shape}")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def update(
        self,
        item_ids: Sequence[str],
        topk: Int[Tensor, "item lang layer 4"],
        mass: Float[Tensor, "item lang layer 4"],
        peak: Float[Tensor, "item lang layer 4"],
    ) -> None:
        dup = sorted(set(item_ids) & set(self.item_ids))
        if dup or len(set(item_ids)) != len(item_ids):
            raise MultiNeuronError(f"item(s) {dup[:5] or list(item_ids)} attributed twice")
        self.topk = torch.cat([self.topk, topk.to(torch.int32).cpu()])
        self.mass = torch.cat([self.mass, mass.double().cpu()])
        self.peak = torch.cat([self.peak, peak.double().cpu()])
        self.item_ids += list(item_ids)

    def check_compatible(self, other: RowAttribution, verb: str = "merge") -> None:
        for attr in ("languages", "layers", "k"):
            if getattr(self, attr) != getattr(other, attr):
                raise MultiNeuronError(
                    f"cannot {verb} per-row attribution with different {attr}: "
                    f"{getattr(self, attr)!r} vs {getattr(other, attr)!r}"
                )

    def merge(self, other: RowAttribution) -> RowAttribution:
        self.check_compatible(other)
        both = set(self.item_ids) & set(other.item_ids)
        if both:
            raise MultiNeuronError(f"cannot merge per-row attribution: {sorted(both)[:5]} in both")
        return RowAttribution(
            self.languages,
            self.layers,
            self.k,
            self.item_ids + other.item_ids,
            *(torch.cat([getattr(self, n), getattr(other, n)]) for n in TENSORS),
        )

    def equals(self, other: RowAttribution) -> bool:
        try:
            self.check_compatible(other, "compare")
        except MultiNeuronError:
            return False
        return self.item_ids == other.item_ids and all(
            torch.equal(getattr(self, n), getattr(other, n)) for n in TENSORS
        )

    def state(self) -> dict:
        return {
            "languages": list(self.languages),
            "layers": list(self.layers),
            "k": self.k,
            "item_ids": list(self.item_ids),
            **{n: getattr(self, n).clone() for n in TENSORS},
        }

    @classmethod
    def from_state(cls, s: dict) -> RowAttribution:
        return cls(
            tuple(s["languages"]),
            tuple(s["layers"]),
            int(s["k"]),
            list(s["item_ids"]),
            *(s[n] for n in TENSORS),
        )

    def peak_means(self) -> Float[Tensor, "lang layer 4"]:
        """The paper's effective-score statistic: per item and category the largest score
        (0 where the item has no neuron of the category, as the authors' notebook), averaged over
        items, per language and layer."""
        if not self.n_items:
            raise MultiNeuronError("no rows attributed yet")
        return torch.where(torch.isfinite(self.peak), self.peak, 0.0).mean(0)
