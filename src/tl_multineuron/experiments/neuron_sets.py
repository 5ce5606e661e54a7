"""Neuron sets: a boolean mask ``[layer, d_mlp]`` with set algebra, builders and a file format.

A set also names where its units live: ``site``, the hook an intervention on them edits
(``mlp.hook_post`` for MLP neurons, ``…hook_sae_acts_post`` for SAE features), and ``layers``,
the block of each mask row (``None``: rows are blocks ``0..n_layers-1``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..backends.experts import check_neuron_site
from ..backends.sites import NEURON_EDIT_HOOK, edit_hook, has_layer_subset, site_width
from ..errors import MultiNeuronError
from ..files import atomic_write
from ..sharing.classification import Categories, parse_category
from ..sharing.masks import topk_mask
from ..sharing.statistics import SharingStats


def paired_seeds(seed: int) -> tuple[int, int]:
    """Two draws of one control seed that never coincide with another seed's: ``2 * seed`` and
    ``2 * seed + 1`` (e.g. a random and a matched control, or two sets drawn together)."""
    return 2 * int(seed), 2 * int(seed) + 1


def control_seed(seed: int, control: str, *names: str) -> int:
    """The draw of a random (``control='random'``) or activity-matched (``'matched'``) control
    for ``seed``: ``2 * seed`` / ``2 * seed + 1``, so the two never share a draw. ``names``
    (e.g. the method and the language whose set is matched) give every such set its own,
    independent draw (a stable hash, the same in every process)."""
    if control not in ("random", "matched"):
        raise MultiNeuronError(f"control {control!r}; expected 'random' or 'matched'")
    key = paired_seeds(seed)[control == "matched"]
    if not names:
        return key
    digest = hashlib.sha256("\0".join((str(key), *names)).encode()).digest()
    return int.from_bytes(digest[:7], "little")


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


def activity_strata(calibration: Any, n_bins: int = 20) -> Int[Tensor, "layer d_mlp"]:
    """Strata for activity-matched controls: :func:`magnitude_strata` of every neuron's RMS
    activation over a calibration split's items and languages (a ``SharingStats``), or over a
    corpus's tokens (a ``TokenStats``: its ``rms()``)."""
    if hasattr(calibration, "rms"):
        return magnitude_strata(calibration.rms(), n_bins)
    rms = (calibration.act_sq_sum.mean(0) / max(1, calibration.n_items)).sqrt()
    return magnitude_strata(rms, n_bins)


def sample_like(
    target: Bool[Tensor, "*set layer d_mlp"],
    seed: int,
    exclude: Bool[Tensor, "*set layer d_mlp"] | None = None,
    strata: Int[Tensor, "layer d_mlp"] | None = None,
    skip: int = 0,
    total: int | None = None,
) -> Bool[Tensor, "*set layer d_mlp"]:
    """Random neuron sets with exactly ``target``'s per-layer sizes (for each leading index),
    never in ``exclude`` (default: the target itself).

    With ``strata`` (a bin per neuron, e.g. :func:`magnitude_strata`), each bin of each layer
    gets as many neurons as the target has there (activity matching); where a bin has too
    few candidates, the shortfall is drawn uniformly from the layer's remaining candidates.
    A layer with fewer candidates than the target's size is an error.

    ``skip`` / ``total``: these sets are rows ``skip ..`` of a family of ``total`` sets drawn
    with one seed (a shard of the evaluated items): the draws equal that family's rows.
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
    n_sets = t.shape[0]
    total = skip + n_sets if total is None else total
    if skip < 0 or total < skip + n_sets:
        raise MultiNeuronError(f"sets {skip}..{skip + n_sets} do not lie within {total} sets")
    g = torch.Generator().manual_seed(int(seed))
    _discard(g, skip * L * D)
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
        _discard(g, (total - n_sets) * L * D)  # to row `skip` of the family's second draw
        v = torch.rand(t.shape, generator=g, dtype=torch.float64)
        left = cand & ~chosen
        r2 = torch.where(left, v, -1.0).argsort(-1, descending=True).argsort(-1)
        chosen |= left & (r2 < deficit[..., None])
    return chosen.reshape(*lead, L, D)


def _discard(g: torch.Generator, n: int, chunk: int = 1 << 24) -> None:
    """Advance ``g`` by ``n`` float64 draws (CPU generators draw serially, so the next draw
    continues the same stream)."""
    while n > 0:
        torch.rand(min(n, chunk), generator=g, dtype=torch.float64)
        n -= chunk


def _site_of(stats: SharingStats) -> tuple[str, tuple[int, ...] | None]:
    """The edit hook and row layers of sets built from ``stats``: MLP-site statistics must
    cover all layers; SAE-feature statistics cover the layers that carry an SAE."""
    hook = stats.meta.get("config", {}).get("recording", {}).get("hook", NEURON_EDIT_HOOK)
    layers = stats.meta.get("layers")
    if has_layer_subset(hook):
        return edit_hook(hook), tuple(layers) if layers is not None else None
    n_model = stats.meta.get("n_model_layers", stats.n_layers)
    if layers not in (None, list(range(n_model))):
        raise MultiNeuronError(
            f"neuron sets need statistics recorded over all layers; these cover {layers}"
        )
    return NEURON_EDIT_HOOK, None


@dataclass(frozen=True)
class NeuronSet:
    """A set of units of a model: MLP neurons (``n_layers x d_mlp``) or, at an SAE site, the
    features of the layers in ``layers``."""

    mask: Bool[Tensor, "layer d_mlp"]
    name: str = ""
    site: str = NEURON_EDIT_HOOK
    layers: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool or self.mask.ndim != 2:
            raise MultiNeuronError(
                f"a neuron set is a bool [layer, d_mlp] mask, got {self.mask.dtype} "
                f"{tuple(self.mask.shape)}"
            )
        object.__setattr__(self, "mask", self.mask.detach().cpu())
        if self.layers is not None:
            layers = tuple(int(x) for x in self.layers)
            if len(layers) != self.mask.shape[0] or len(set(layers)) != len(layers):
                raise MultiNeuronError(
                    f"neuron set {self.name!r}: layers {list(layers)} do not name its "
                    f"{self.mask.shape[0]} mask rows (one distinct layer per row)"
                )
            object.__setattr__(self, "layers", layers)

    def _like(self, mask: Tensor, name: str) -> NeuronSet:
        return NeuronSet(mask, name, self.site, self.layers)

    def blocks(self) -> list[int]:
        """The block index of each mask row."""
        return list(self.layers) if self.layers is not None else list(range(self.n_layers))

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
        site, layers = _site_of(stats)
        m = stats.neuron_mask(category, min_frequency, threshold)
        return cls(m, f"{parse_category(category).label}>={min_frequency:g}", site, layers)

    @classmethod
    def specific(
        cls,
        stats: SharingStats,
        language: str,
        min_frequency: float = 0.5,
        threshold: float | None = None,
    ) -> NeuronSet:
        """Neurons specific to ``language`` in at least ``min_frequency`` of the items."""
        site, layers = _site_of(stats)
        return cls(
            stats.specific_mask(language, min_frequency, threshold),
            f"specific-{language}>={min_frequency:g}",
            site,
            layers,
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
        return self._like(self.mask & other.mask, f"({self.name} & {other.name})")

    def __or__(self, other: NeuronSet) -> NeuronSet:
        self._same_shape(other)
        return self._like(self.mask | other.mask, f"({self.name} | {other.name})")

    def __sub__(self, other: NeuronSet) -> NeuronSet:
        self._same_shape(other)
        return self._like(self.mask & ~other.mask, f"({self.name} - {other.name})")

    def __invert__(self) -> NeuronSet:
        return self._like(~self.mask, f"~{self.name}")

    def __len__(self) -> int:
        return int(self.mask.sum())

    def _same_shape(self, other: NeuronSet) -> None:
        if self.mask.shape != other.mask.shape:
            raise MultiNeuronError(
                f"neuron sets of different shapes {tuple(self.mask.shape)} and "
                f"{tuple(other.mask.shape)}"
            )
        if (self.site, self.blocks()) != (other.site, other.blocks()):
            raise MultiNeuronError(
                f"neuron sets at different sites: {self.site!r} layers {self.blocks()} and "
                f"{other.site!r} layers {other.blocks()}"
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
            b: self.mask[r].nonzero().flatten().tolist()
            for r, b in enumerate(self.blocks())
            if self.mask[r].any()
        }

    def random_like(self, seed: int, exclude: NeuronSet | None = None) -> NeuronSet:
        """Random neurons with exactly the same per-layer sizes (optionally avoiding
        ``exclude``)."""
        if exclude is not None:
            self._same_shape(exclude)
        ex = exclude.mask if exclude is not None else torch.zeros_like(self.mask)
        return self._like(
            sample_like(self.mask, seed, ex), f"random-like({self.name}, seed={seed})"
        )

    def check_model(self, model: Any) -> None:
        check_unit_shape(model, self.site, self.layers, tuple(self.mask.shape), self.name)

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
            "site": self.site,
            "layers": list(self.layers) if self.layers is not None else None,
            "neurons": {str(k): v for k, v in self.indices().items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> NeuronSet:
        try:
            layers = d.get("layers")
            rows = {int(k): v for k, v in d["neurons"].items()}
            if layers is not None:  # rows are keyed by block; from_indices wants row numbers
                unknown = sorted(set(rows) - set(layers))
                if unknown:
                    raise MultiNeuronError(
                        f"neuron set {d.get('name', '')!r}: layers {unknown} are not among "
                        f"its layers {layers}"
                    )
                rows = {layers.index(b): v for b, v in rows.items()}
            s = cls.from_indices(rows, int(d["n_layers"]), int(d["d_mlp"]), d.get("name", ""))
        except KeyError as e:
            raise MultiNeuronError(f"neuron set file lacks the field {e}") from e
        return NeuronSet(s.mask, s.name, d.get("site", NEURON_EDIT_HOOK), layers)

    def save(self, path: str | Path) -> None:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(self.to_dict())))

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        p = Path(path)
        if not p.is_file():
            raise MultiNeuronError(f"neuron set file {str(p)!r} does not exist")
        return cls.from_dict(json.loads(p.read_text()))


def static_sets(
    stats: SharingStats, min_frequency: float = 0.9, specific_frequency: float = 0.5
) -> tuple[NeuronSet, Bool[Tensor, "lang layer d_mlp"]]:
    """A calibration split's static sets (one implementation for experiments and steering):
    the neurons all-shared in >= ``min_frequency`` of its items (empty: an error) and, per
    language in ``stats.languages`` order, those specific to it in >= ``specific_frequency``."""
    shared = NeuronSet.from_stats(stats, "all-shared", min_frequency)
    shared.require_nonempty()
    specific = torch.stack(
        [NeuronSet.specific(stats, x, specific_frequency).mask for x in stats.languages]
    )
    return shared, specific


def check_unit_shape(
    model: Any,
    site: str,
    layers: Sequence[int] | None,
    shape: tuple[int, ...],
    name: str = "",
) -> list[int]:
    """Check that masks of ``shape`` (``[..., rows, units]``) fit ``model`` at ``site`` with
    rows on ``layers`` (``None``: every block); the block of each row."""
    n = int(model.cfg.n_layers)
    blocks = list(layers) if layers is not None else list(range(n))
    bad = [b for b in blocks if not 0 <= b < n]
    if bad:
        raise MultiNeuronError(f"neuron set {name!r}: layers {bad} do not exist (model has {n})")
    check_neuron_site(model, site, blocks)
    if shape[-2] != len(blocks):
        raise MultiNeuronError(
            f"neuron set {name!r} is for {shape[-2]} layers x {shape[-1]} neurons; the model has "
            f"{len(blocks)} x {site_width(model, site, blocks)} at {site!r}"
        )
    width = site_width(model, site, blocks)
    if shape[-1] != width:
        raise MultiNeuronError(
            f"neuron set {name!r} is for {shape[-2]} layers x {shape[-1]} neurons; the model has "
            f"{len(blocks)} x {width} at {site!r}"
        )
    return blocks
