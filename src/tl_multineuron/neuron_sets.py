"""Neuron sets: a boolean mask ``[layer, d_mlp]`` with set algebra, builders and a file format."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .classification import Categories, parse_category
from .errors import MultiNeuronError
from .files import atomic_write
from .masks import topk_mask
from .statistics import SharingStats


def magnitude_strata(
    magnitude: Float[Tensor, "layer d_mlp"], n_bins: int = 20
) -> Int[Tensor, "layer d_mlp"]:
    """Per-layer quantile bins (0..n_bins-1) of a neuron magnitude (e.g. RMS activation on a
    calibration split): strata for activity-matched controls."""
    if n_bins < 1:
        raise MultiNeuronError(f"n_bins must be >= 1, got {n_bins}")
    D = magnitude.shape[-1]
    rank = magnitude.argsort(dim=-1, stable=True).argsort(-1)
    return (rank * n_bins) // D


def sample_like(
    target: Bool[Tensor, "*set layer d_mlp"],
    seed: int,
    exclude: Bool[Tensor, "*set layer d_mlp"] | None = None,
    strata: Int[Tensor, "layer d_mlp"] | None = None,
) -> Bool[Tensor, "*set layer d_mlp"]:
    """Random neuron sets with exactly ``target``'s per-layer sizes (for each leading index),
    never in ``exclude`` (default: the target itself).

    With ``strata`` (a bin per neuron, e.g. :func:`magnitude_strata`), each bin of each layer
    gets as many neurons as the target has there (activity matching); where a bin has too
    few candidates, the shortfall is drawn uniformly from the layer's remaining candidates.
    A layer with fewer candidates than the target's size is an error.
    """
    if target.dtype != torch.bool or target.ndim < 2:
        raise MultiNeuronError(
            f"target must be a bool [..., layer, d_mlp] mask, got {target.dtype}"
        )
    *lead, L, D = target.shape
    t = target.reshape(-1, L, D)
    ex = (exclude if exclude is not None else target).expand_as(target).reshape(-1, L, D)
    cand = ~ex
    sizes = t.sum(-1)
    short = sizes > cand.sum(-1)
    if short.any():
        n, layer = short.nonzero()[0].tolist()
        raise MultiNeuronError(
            f"cannot draw {int(sizes[n, layer])} control neurons in layer {layer} (set {n}): "
            f"only {int(cand[n, layer].sum())} neurons lie outside the excluded set"
        )
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(t.shape, generator=g, dtype=torch.float64)
    bins = (strata if strata is not None else torch.zeros(L, D, dtype=torch.long)).long()
    if tuple(bins.shape) != (L, D):
        raise MultiNeuronError(f"strata of shape {tuple(bins.shape)}; expected ({L}, {D})")
    nb = int(bins.max()) + 1
    bins_n = bins.expand(t.shape[0], L, D)
    # sort each layer by bin, candidates first (in random order) within each bin
    key = bins_n.double() + torch.where(cand, u * 0.5, 0.5 + u * 0.5)
    order = key.argsort(-1)
    sorted_bins = bins_n.gather(-1, order)
    size = torch.zeros(L, nb, dtype=torch.long).scatter_add_(1, bins, torch.ones_like(bins))
    start = (size.cumsum(-1) - size).expand(t.shape[0], L, nb)
    rank = torch.arange(D).expand_as(order) - start.gather(-1, sorted_bins)
    want = torch.zeros(t.shape[0], L, nb, dtype=torch.long).scatter_add_(-1, bins_n, t.long())
    have = torch.zeros_like(want).scatter_add_(-1, bins_n, cand.long())
    take = torch.minimum(want, have)
    chosen = torch.zeros_like(t).scatter_(-1, order, rank < take.gather(-1, sorted_bins))
    deficit = (want - take).sum(-1)
    if deficit.any():  # bins short of candidates: fill from the layer's other candidates
        v = torch.rand(t.shape, generator=g, dtype=torch.float64)
        left = cand & ~chosen
        r2 = torch.where(left, v, -1.0).argsort(-1, descending=True).argsort(-1)
        chosen |= left & (r2 < deficit[..., None])
    return chosen.reshape(*lead, L, D)


def _check_all_layers(stats: SharingStats) -> None:
    if stats.meta.get("layers") not in (None, list(range(stats.n_layers))):
        raise MultiNeuronError("neuron sets need statistics recorded over all layers")


@dataclass(frozen=True)
class NeuronSet:
    """A set of MLP neurons of a model with ``n_layers x d_mlp`` neurons."""

    mask: Bool[Tensor, "layer d_mlp"]
    name: str = ""

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool or self.mask.ndim != 2:
            raise MultiNeuronError(
                f"a neuron set is a bool [layer, d_mlp] mask, got {self.mask.dtype} "
                f"{tuple(self.mask.shape)}"
            )
        object.__setattr__(self, "mask", self.mask.detach().cpu())

    # -- builders ------------------------------------------------------------------------
    @classmethod
    def from_indices(
        cls, indices: Mapping[int, Sequence[int]], n_layers: int, d_mlp: int, name: str = ""
    ) -> NeuronSet:
        """From ``{layer: [neuron, ...]}``; indices are checked against the model size."""
        mask = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
        for layer, idx in indices.items():
            layer = int(layer)
            if not 0 <= layer < n_layers:
                raise MultiNeuronError(
                    f"neuron set {name!r}: layer {layer} does not exist (model has {n_layers})"
                )
            t = torch.as_tensor(list(idx), dtype=torch.long)
            if t.numel() and (t.min() < 0 or t.max() >= d_mlp):
                bad = t[(t < 0) | (t >= d_mlp)].tolist()
                raise MultiNeuronError(
                    f"neuron set {name!r}: layer {layer} has neuron indices {bad} outside "
                    f"[0, {d_mlp})"
                )
            mask[layer, t] = True
        return cls(mask, name)

    @classmethod
    def from_stats(
        cls,
        stats: SharingStats,
        category: str,
        min_frequency: float = 1.0,
        threshold: float | None = None,
    ) -> NeuronSet:
        """Neurons in ``category`` in at least ``min_frequency`` of the calibration items."""
        _check_all_layers(stats)
        m = stats.neuron_mask(category, min_frequency, threshold)
        return cls(m, f"{parse_category(category).label}>={min_frequency:g}")

    @classmethod
    def specific(
        cls,
        stats: SharingStats,
        language: str,
        min_frequency: float = 0.5,
        threshold: float | None = None,
    ) -> NeuronSet:
        """Neurons specific to ``language`` in at least ``min_frequency`` of the items."""
        _check_all_layers(stats)
        return cls(
            stats.specific_mask(language, min_frequency, threshold),
            f"specific-{language}>={min_frequency:g}",
        )

    @classmethod
    def from_categories(cls, cats: Categories, category: str, item: int = 0) -> NeuronSet:
        """The neurons of one item in ``category`` (dynamic sets)."""
        codes = cats.codes if cats.codes.ndim == 2 else cats.codes[item]
        return cls(codes == int(parse_category(category)), parse_category(category).label)

    @classmethod
    def top_k(
        cls, scores: Float[Tensor, "layer d_mlp"], k: int | float, name: str = "top-k"
    ) -> NeuronSet:
        """The top-K neurons per layer by attribution score."""
        return cls(topk_mask(scores, k), name)

    # -- algebra and views ---------------------------------------------------------------
    def __and__(self, other: NeuronSet) -> NeuronSet:
        self._same_shape(other)
        return NeuronSet(self.mask & other.mask, f"({self.name} & {other.name})")

    def __or__(self, other: NeuronSet) -> NeuronSet:
        self._same_shape(other)
        return NeuronSet(self.mask | other.mask, f"({self.name} | {other.name})")

    def __sub__(self, other: NeuronSet) -> NeuronSet:
        self._same_shape(other)
        return NeuronSet(self.mask & ~other.mask, f"({self.name} - {other.name})")

    def __invert__(self) -> NeuronSet:
        return NeuronSet(~self.mask, f"~{self.name}")

    def __len__(self) -> int:
        return int(self.mask.sum())

    def _same_shape(self, other: NeuronSet) -> None:
        if self.mask.shape != other.mask.shape:
            raise MultiNeuronError(
                f"neuron sets of different shapes {tuple(self.mask.shape)} and "
                f"{tuple(other.mask.shape)}"
            )

    @property
    def n_layers(self) -> int:
        return self.mask.shape[0]

    @property
    def d_mlp(self) -> int:
        return self.mask.shape[1]

    def per_layer_sizes(self) -> list[int]:
        return self.mask.sum(-1).tolist()

    def indices(self) -> dict[int, list[int]]:
        return {
            x: self.mask[x].nonzero().flatten().tolist()
            for x in range(self.n_layers)
            if self.mask[x].any()
        }

    def random_like(self, seed: int, exclude: NeuronSet | None = None) -> NeuronSet:
        """Random neurons with exactly the same per-layer sizes (optionally avoiding
        ``exclude``)."""
        if exclude is not None:
            self._same_shape(exclude)
        ex = exclude.mask if exclude is not None else torch.zeros_like(self.mask)
        return NeuronSet(sample_like(self.mask, seed, ex), f"random-like({self.name}, seed={seed})")

    def check_model(self, model: Any) -> None:
        n, d = model.cfg.n_layers, model.cfg.d_mlp
        if (self.n_layers, self.d_mlp) != (n, d):
            raise MultiNeuronError(
                f"neuron set {self.name!r} is for {self.n_layers} layers x {self.d_mlp} "
                f"neurons; the model has {n} x {d}"
            )

    def require_nonempty(self) -> None:
        if len(self) == 0:
            raise MultiNeuronError(
                f"neuron set {self.name!r} is empty; an intervention on it would do nothing"
            )

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "neurons": {str(k): v for k, v in self.indices().items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> NeuronSet:
        try:
            return cls.from_indices(
                {int(k): v for k, v in d["neurons"].items()},
                int(d["n_layers"]),
                int(d["d_mlp"]),
                d.get("name", ""),
            )
        except KeyError as e:
            raise MultiNeuronError(f"neuron set file lacks the field {e}") from e

    def save(self, path: str | Path) -> None:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(self.to_dict())))

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        p = Path(path)
        if not p.is_file():
            raise MultiNeuronError(f"neuron set file {str(p)!r} does not exist")
        return cls.from_dict(json.loads(p.read_text()))
