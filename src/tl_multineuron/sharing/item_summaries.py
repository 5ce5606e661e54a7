"""Per-item summaries of neuron sharing: a few numbers per item and layer, never per neuron.

:class:`ItemSummaries` keeps, for every item, threshold and layer: how many neurons fell in each
category, how many were specific to each language, and for every pair of languages how many
neurons were active in both (the diagonal: active in that language). Over the dataset it also
counts which combinations of languages make up the partial-shared neurons (a sparse count per
language subset). Memory grows with items x thresholds x layers x languages², never with
neurons. It lives inside :class:`~tl_multineuron.sharing.statistics.SharingStats` (updated from
the same activity masks, checkpointed, resumed and merged with it); merging shards appends
their items in order, so shards merged in order equal one run.

From it: the paper's category curves with a band over items (:meth:`ItemSummaries.bands`),
per-item fractions for tests across tasks, the language x language co-activation matrices
(:mod:`tl_multineuron.sharing.language_pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from .classification import CATEGORY_NAMES, Category, codes_from_counts, threshold_position

TENSOR_FIELDS = ("counts", "specific", "pairs", "subset_keys", "subset_counts")
#: the paper's bands: the middle half of items and their full range
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: a batch is summarised from one histogram of language subsets per (threshold, item, layer)
#: while it needs at most this many bins (8 languages, 6 thresholds, 16 items, 18 layers:
#: 442,368); from the masks beyond
HISTOGRAM_BINS = 2**22


@dataclass
class ItemSummaries:
    """Per-item counts (see module docstring).

    counts: ``[item, thr, layer, 4]`` neurons per category.
    specific: ``[item, thr, layer, lang]`` neurons specific to each language.
    pairs: ``[item, thr, layer, lang, lang]`` neurons active in both languages (diagonal: in
    that one).
    subset_keys / subset_counts: partial-shared neurons per (threshold, layer, language subset),
    summed over items; a key is ``(thr * n_layers + layer) << n_lang | subset`` (bit *i*: the
    *i*-th language), sorted.
    """

    languages: tuple[str, ...]
    thresholds: tuple[float, ...]
    n_layers: int
    d_mlp: int
    item_ids: list[str] = field(default_factory=list)
    counts: Int[Tensor, "item thr layer 4"] | None = None
    specific: Int[Tensor, "item thr layer lang"] | None = None
    pairs: Int[Tensor, "item thr layer lang lang2"] | None = None
    subset_keys: Int[Tensor, " key"] | None = None
    subset_counts: Int[Tensor, " key"] | None = None

    def __post_init__(self) -> None:
        self.languages, self.thresholds = tuple(self.languages), tuple(self.thresholds)
        self.item_ids = list(self.item_ids)
        if len(self.languages) > 62:
            raise MultiNeuronError(f"per-item summaries keep at most 62 languages, got {self.N}")
        T, N, L = len(self.thresholds), self.N, self.n_layers
        shapes = {
            "counts": (0, T, L, 4),
            "specific": (0, T, L, N),
            "pairs": (0, T, L, N, N),
            "subset_keys": (0,),
            "subset_counts": (0,),
        }
        for name, shape in shapes.items():
            dtype = torch.int64 if name.startswith("subset") else torch.int32
            val = getattr(self, name)
            if val is None:
                setattr(self, name, torch.zeros(shape, dtype=dtype))
            elif tuple(val.shape[1:]) != shape[1:]:
                raise MultiNeuronError(f"{name} has shape {tuple(val.shape)}; expected {shape}")
        n = len(self.item_ids)
        for name in ("counts", "specific", "pairs"):
            if getattr(self, name).shape[0] != n:
                raise MultiNeuronError(
                    f"{name} holds {getattr(self, name).shape[0]} items, ids {n}"
                )

    @property
    def N(self) -> int:
        return len(self.languages)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # -- accumulation --------------------------------------------------------------------
    def update(
        self,
        active: Bool[Tensor, "thr item lang layer neuron"],
        codes: Int[Tensor, "thr item layer neuron"],
        item_ids: Sequence[str],
    ) -> None:
        """Add a batch from its activity masks and category codes (as
        :meth:`SharingStats.update` computes them)."""
        T, n_items, N, L, D = active.shape
        if (len(self.thresholds), self.N, self.n_layers, self.d_mlp) != (T, N, L, D):
            raise MultiNeuronError(
                f"activity of shape {tuple(active.shape)}; expected [thr={len(self.thresholds)}, "
                f"item, lang={self.N}, layer={self.n_layers}, neuron={self.d_mlp}]"
            )
        if len(item_ids) != n_items:
            raise MultiNeuronError(f"{len(item_ids)} item ids for a batch of {n_items} items")
        dup = sorted(set(item_ids) & set(self.item_ids))
        if dup or len(set(item_ids)) != len(item_ids):
            raise MultiNeuronError(f"item(s) {dup[:5] or list(item_ids)} summarised twice")
        subset = subset_codes(active)
        if (T * n_items * L) << N <= HISTOGRAM_BINS:
            counts, specific, pairs, partial = _from_histogram(subset, N)
        else:
            counts, specific, pairs, partial = _from_masks(active, codes.long(), subset)
        self.counts = torch.cat([self.counts, counts.transpose(0, 1).cpu()])
        self.specific = torch.cat([self.specific, specific.transpose(0, 1).cpu()])
        self.pairs = torch.cat([self.pairs, pairs.transpose(0, 1).cpu()])
        self._merge_subsets(*partial)
        self.item_ids += list(item_ids)

    def _merge_subsets(self, keys: Tensor, counts: Tensor) -> None:
        allk = torch.cat([self.subset_keys, keys])
        uniq, inv = allk.unique(return_inverse=True)
        total = torch.zeros(len(uniq), dtype=torch.int64)
        total.index_add_(0, inv, torch.cat([self.subset_counts, counts.to(torch.int64)]))
        self.subset_keys, self.subset_counts = uniq, total

    def check_compatible(self, other: ItemSummaries, verb: str = "merge") -> None:
        for attr in ("languages", "thresholds", "n_layers", "d_mlp"):
            if getattr(self, attr) != getattr(other, attr):
                raise MultiNeuronError(
                    f"cannot {verb} per-item summaries with different {attr}: "
                    f"{getattr(self, attr)!r} vs {getattr(other, attr)!r}"
                )

    def merge(self, other: ItemSummaries) -> ItemSummaries:
        """Both shards' items, ``self``'s first (merged in order, equal to one run)."""
        self.check_compatible(other)
        both = set(self.item_ids) & set(other.item_ids)
        if both:
            raise MultiNeuronError(
                f"cannot merge per-item summaries: item(s) {sorted(both)[:5]} in both"
            )
        out = ItemSummaries(
            self.languages,
            self.thresholds,
            self.n_layers,
            self.d_mlp,
            self.item_ids + other.item_ids,
            *(torch.cat([getattr(self, n), getattr(other, n)]) for n in TENSOR_FIELDS[:3]),
            self.subset_keys.clone(),
            self.subset_counts.clone(),
        )
        out._merge_subsets(other.subset_keys, other.subset_counts)
        return out

    def copy(self) -> ItemSummaries:
        return ItemSummaries.from_state(self.state())

    def equals(self, other: ItemSummaries) -> bool:
        try:
            self.check_compatible(other, "compare")
        except MultiNeuronError:
            return False
        return self.item_ids == other.item_ids and all(
            torch.equal(getattr(self, n), getattr(other, n)) for n in TENSOR_FIELDS
        )

    # -- persistence (inside SharingStats' file) --------------------------------------------
    def state(self) -> dict:
        return {
            "languages": list(self.languages),
            "thresholds": list(self.thresholds),
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "item_ids": list(self.item_ids),
            **{n: getattr(self, n).clone() for n in TENSOR_FIELDS},
        }

    @classmethod
    def from_state(cls, s: dict) -> ItemSummaries:
        return cls(
            tuple(s["languages"]),
            tuple(s["thresholds"]),
            int(s["n_layers"]),
            int(s["d_mlp"]),
            list(s["item_ids"]),
            *(s[n] for n in TENSOR_FIELDS),
        )

    # -- derived ---------------------------------------------------------------------------
    def threshold_index(self, threshold: float | None) -> int:
        return threshold_position(self.thresholds, threshold)

    def need_items(self) -> None:
        if self.n_items == 0:
            raise MultiNeuronError("no per-item summaries accumulated yet")

    def fractions(self, threshold: float | None = None) -> Float[Tensor, "item layer 4"]:
        """Each item's fraction of a layer's neurons in each category."""
        self.need_items()
        return self.counts[:, self.threshold_index(threshold)].double() / self.d_mlp

    def pooled_fractions(self, threshold: float | None = None) -> Float[Tensor, "item 4"]:
        """Each item's fraction of all recorded neurons in each category (layers pooled)."""
        return self.fractions(threshold).mean(1)

    def bands(self, threshold: float | None = None) -> pd.DataFrame:
        """The paper's category curves with their spread over items: per layer and category the
        mean fraction and the min, quartiles, median and max over items."""
        f = self.fractions(threshold)  # [item, layer, 4]
        q = torch.quantile(f, torch.tensor(QUANTILES, dtype=f.dtype), dim=0)  # [5, layer, 4]
        L = self.n_layers
        out = pd.DataFrame(
            {
                "threshold": self.thresholds[self.threshold_index(threshold)],
                "layer": np.repeat(np.arange(L), 4),
                "category": list(CATEGORY_NAMES) * L,
                "mean": f.mean(0).reshape(-1).numpy(),
                **{
                    name: q[k].reshape(-1).numpy()
                    for k, name in enumerate(("min", "q25", "median", "q75", "max"))
                },
                "n_items": self.n_items,
            }
        )
        return out

    def subsets(self, threshold: float | None = None) -> pd.DataFrame:
        """Which combinations of languages make up the partial-shared neurons: per layer (and
        pooled, layer ``"all"``) each subset's count of (item, neuron) pairs and its share of
        that layer's partial-shared pairs, most frequent first."""
        self.need_items()
        t, N, L = self.threshold_index(threshold), self.N, self.n_layers
        cell = self.subset_keys >> N
        keep = (cell // L) == t
        layer, subset = (cell[keep] % L), self.subset_keys[keep] & ((1 << N) - 1)
        n = self.subset_counts[keep]
        frame = pd.DataFrame({"layer": layer.numpy(), "subset": subset.numpy(), "count": n.numpy()})
        pooled = frame.groupby("subset", as_index=False)["count"].sum().assign(layer="all")
        frame = pd.concat([frame.astype({"layer": object}), pooled], ignore_index=True)
        frame["share"] = frame["count"] / frame.groupby("layer")["count"].transform("sum")
        bits = np.array([1 << i for i in range(N)])
        names = np.array(self.languages, dtype=object)
        frame["languages"] = [
            "+".join(names[(s & bits) > 0]) for s in frame["subset"].to_numpy(dtype=np.int64)
        ]
        frame["n_languages"] = [bin(int(s)).count("1") for s in frame["subset"]]
        frame.insert(0, "threshold", self.thresholds[t])
        frame = frame.sort_values(
            ["layer", "count"], key=_layer_then_count, ascending=[True, False]
        )
        return frame.drop(columns="subset").reset_index(drop=True)


def _layer_then_count(col: pd.Series) -> pd.Series:
    if col.name == "layer":  # numbered layers first, then "all"
        return col.map(lambda x: 10**9 if x == "all" else int(x))
    return col


def subset_codes(
    active: Bool[Tensor, "thr item lang layer neuron"],
) -> Int[Tensor, "thr item layer neuron"]:
    """Each neuron's set of active languages as bits (bit *i*: the *i*-th language)."""
    T, n_items, N, L, D = active.shape
    dtype = torch.int32 if N < 31 else torch.int64
    subset = torch.zeros((T, n_items, L, D), dtype=dtype, device=active.device)
    for i in range(N):  # a loop over languages (N <= 62), never over neurons
        subset |= active[:, :, i].to(dtype) << i
    return subset


def _partial_keys(per_cell: Tensor) -> tuple[Tensor, Tensor]:
    """Sparse (key, count) of the nonzero bins of ``[thr, layer, subset]`` counts."""
    keys = per_cell.flatten().nonzero().squeeze(1)
    return keys.cpu(), per_cell.flatten()[keys].cpu()


Summaries = tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]


def _from_histogram(subset: Tensor, N: int) -> Summaries:
    """Every summary from one histogram of subsets per (threshold, item, layer): category
    counts, per-language specific counts and language-pair counts are sums over its bins."""
    T, n_items, L, _ = subset.shape
    S, dev = 1 << N, subset.device
    cell = torch.arange(T * n_items * L, device=dev, dtype=torch.int64).view(T, n_items, L, 1)
    hist = torch.bincount(((cell << N) | subset).flatten(), minlength=T * n_items * L * S)
    hist = hist.view(T, n_items, L, S)
    lang = torch.arange(N, device=dev)
    members = (torch.arange(S, device=dev).unsqueeze(-1) >> lang) & 1  # [S, N]
    cat = codes_from_counts(members.sum(-1), N).long()  # each subset's category
    counts = torch.zeros((T, n_items, L, 4), dtype=torch.int64, device=dev)
    counts.index_add_(-1, cat, hist)
    specific = hist[..., 1 << lang]  # a single language is a specific neuron (N >= 2)
    members = members.double()
    both = (members.unsqueeze(-1) * members.unsqueeze(-2)).view(S, N * N)
    pairs = (hist.double() @ both).round().view(T, n_items, L, N, N)  # exact: counts < 2**53
    partial = hist.sum(1) * (cat == Category.PARTIAL_SHARED)  # [T, L, S]
    return (
        counts.to(torch.int32),
        specific.to(torch.int32),
        pairs.to(torch.int32),
        _partial_keys(partial),
    )


def _from_masks(active: Tensor, codes: Tensor, subset: Tensor) -> Summaries:
    """The same summaries from the masks, for batches whose histogram would be too large."""
    T, n_items, N, L, D = active.shape
    counts = torch.zeros((T, n_items, L, 4), dtype=torch.int32, device=codes.device)
    counts.scatter_add_(-1, codes, torch.ones_like(codes, dtype=torch.int32))
    spec = active & (codes == Category.SPECIFIC).unsqueeze(2)  # [T, I, N, L, D]
    a = active.permute(0, 1, 3, 2, 4).float()  # [T, I, L, N, D]; counts <= d_mlp < 2**24
    pairs = (a @ a.transpose(-1, -2)).round().to(torch.int32)  # [T, I, L, N, N]
    cell = torch.arange(T * L, device=active.device, dtype=torch.int64).view(T, 1, L, 1)
    keys, n = ((cell << N) | subset)[codes == Category.PARTIAL_SHARED].unique(return_counts=True)
    return (
        counts,
        spec.sum(-1, dtype=torch.int32).permute(0, 1, 3, 2),
        pairs,
        (keys.cpu(), n.cpu()),
    )
