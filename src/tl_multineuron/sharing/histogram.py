"""Per-neuron activation histograms: streaming, mergeable, for quantile-based neuron statistics.

:class:`ActivationHistogram` counts, per language, layer and neuron, how many recorded
activations fell into each of a fixed set of bins. The bin edges are fixed before any data is
seen (``asinh``-spaced, so they resolve small activations finely and still span ``+-edge_max``),
which is what makes two histograms over disjoint shards merge into exactly the histogram of the
union: counts are integers and every shard uses the same edges.

What it is for: a per-neuron quantile of the pooled activations (e.g. the 90th percentile of a
neuron over every language) and, per language, how often the neuron exceeds it
(:meth:`ActivationHistogram.exceed_probability`) -- the relevance Act-Prob-90p ranks by. Counts
in the bins above the quantile's bin are exact; inside that one bin the activations are taken
as spread evenly, so a language's share of the boundary bin counts in proportion (a cluster of
one language's activations narrower than a bin still splits at the quantile, as an exact
quantile would split it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from ..files import atomic_write
from .accumulator import check_same_origin

FORMAT_VERSION = 1


def default_edges(n_bins: int = 64, edge_max: float = 64.0) -> Float[Tensor, " edge"]:
    """``n_bins - 1`` edges, symmetric around 0 and evenly spaced in ``asinh``: bin 0 is
    ``(-inf, e_0)``, bin j ``[e_{j-1}, e_j)``, the last ``[e_last, inf)``."""
    if n_bins < 4 or edge_max <= 0:
        raise MultiNeuronError(f"histogram: n_bins {n_bins} (>= 4) / edge_max {edge_max} (> 0)")
    a = math.asinh(edge_max)
    return torch.sinh(torch.linspace(-a, a, n_bins - 1, dtype=torch.float64)).float()


@dataclass
class ActivationHistogram:
    """counts: ``[lang, layer, neuron, bin]`` recorded activations per bin (see module)."""

    languages: tuple[str, ...]
    n_layers: int
    d_mlp: int
    edges: Float[Tensor, " edge"] = field(default_factory=default_edges)
    n_items: int = 0
    meta: dict = field(default_factory=dict)
    counts: Int[Tensor, "lang layer neuron bin"] | None = None

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        self.edges = self.edges.float().cpu()
        if self.edges.ndim != 1 or len(self.edges) < 3 or not (self.edges.diff() > 0).all():
            raise MultiNeuronError("histogram edges must be a strictly increasing 1-D tensor")
        shape = (len(self.languages), self.n_layers, self.d_mlp, len(self.edges) + 1)
        if self.counts is None:
            self.counts = torch.zeros(shape, dtype=torch.int32)
        elif tuple(self.counts.shape) != shape:
            raise MultiNeuronError(f"histogram counts {tuple(self.counts.shape)}; expected {shape}")

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def update(self, acts: Float[Tensor, "item lang layer neuron"]) -> None:
        """Add a batch of items' activations (the same layout as ``SharingStats.update``)."""
        N, L, D = len(self.languages), self.n_layers, self.d_mlp
        if acts.ndim != 4 or tuple(acts.shape[1:]) != (N, L, D):
            raise MultiNeuronError(
                f"activations of shape {tuple(acts.shape)}; expected [item, lang={N}, "
                f"layer={L}, neuron={D}]"
            )
        self._add(acts, torch.arange(N * L * D).view(1, N, L, D))
        self.n_items += acts.shape[0]

    def add_language(self, lang: int, acts: Float[Tensor, "token layer neuron"]) -> None:
        """Add one language's activations (any number of tokens) without counting items: the
        token-level statistics (:mod:`tl_multineuron.sharing.token_stats`) keep their own
        token counts per language."""
        L, D = self.n_layers, self.d_mlp
        if acts.ndim != 3 or tuple(acts.shape[1:]) != (L, D):
            raise MultiNeuronError(
                f"activations of shape {tuple(acts.shape)}; expected [token, layer={L}, neuron={D}]"
            )
        self._add(acts, (lang * L * D + torch.arange(L * D)).view(1, L, D))

    def _add(self, a: Tensor, cells: Tensor) -> None:
        """Count ``a`` into the bins of ``cells`` (the flat [lang, layer, neuron] cell of every
        value, broadcast); non-finite activations are an error."""
        a = a.detach().float().cpu()
        if not torch.isfinite(a).all():
            raise MultiNeuronError("histogram: non-finite activations")
        b = torch.bucketize(a, self.edges, right=True)  # bin per activation
        flat = (cells * self.n_bins + b).flatten()
        self.counts.view(-1).index_put_(
            (flat,), torch.ones_like(flat, dtype=torch.int32), accumulate=True
        )

    def _boundary(self, q: float) -> tuple[Tensor, Tensor]:
        """Per neuron: the bin ``k`` holding the pooled ``q``-quantile (the bins above it hold
        at most ``1 - q`` of the activations, from bin ``k`` up more) and the share ``frac``
        of bin ``k`` that completes the top ``1 - q``."""
        if not 0 < q < 1:
            raise MultiNeuronError(f"histogram quantile {q}; expected a number in (0, 1)")
        if int(self.counts.sum()) < 1:
            raise MultiNeuronError("histogram: no items recorded (no activation counted)")
        pooled = self.counts.sum(0).double()  # [L, D, B]
        tail = (1 - q) * pooled.sum(-1)  # [L, D]: how many activations the top 1 - q holds
        above = pooled.flip(-1).cumsum(-1).flip(-1) - pooled  # [L, D, B]: in bins > k
        k = (above <= tail.unsqueeze(-1) + 1e-9).int().argmax(-1)  # the lowest such bin
        in_k = pooled.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        got = above.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        frac = ((tail - got) / in_k.clamp_min(1)).clamp(0, 1)
        return k, frac

    def threshold(self, q: float) -> Float[Tensor, "layer neuron"]:
        """The pooled ``q``-quantile per neuron, interpolated linearly inside its bin (the
        bin's finite edge where the bin is open-ended)."""
        k, frac = self._boundary(q)
        lo = torch.cat([self.edges[:1], self.edges]).double()[k]
        hi = torch.cat([self.edges, self.edges[-1:]]).double()[k]
        return (hi - frac * (hi - lo)).float()

    def exceed_probability(self, q: float) -> Float[Tensor, "lang layer neuron"]:
        """Per language: the share of its items above the neuron's pooled ``q``-quantile --
        its activations in the bins above the quantile's bin, plus its share of that bin's
        top (the bin's activations taken as spread evenly: each language contributes its
        count there times the share of the bin that completes the top ``1 - q``). Summed
        over the languages it is exactly ``1 - q`` of the pooled activations."""
        return self.exceed_counts(q) / self.n_items

    def exceed_counts(self, q: float) -> Float[Tensor, "lang layer neuron"]:
        """Per language, how many recorded activations lie above the neuron's pooled
        ``q``-quantile (fractional inside the quantile's bin, see
        :meth:`exceed_probability`)."""
        k, frac = self._boundary(q)  # [L, D]
        bins = torch.arange(self.n_bins).view(1, 1, -1)
        weight = (bins > k.unsqueeze(-1)).double() + (bins == k.unsqueeze(-1)) * frac.unsqueeze(-1)
        return (self.counts.double() * weight.unsqueeze(0)).sum(-1)

    # -- the accumulator protocol ---------------------------------------------------------------
    def check_compatible(self, other: ActivationHistogram, verb: str = "merge") -> None:
        for attr in ("languages", "n_layers", "d_mlp"):
            if getattr(self, attr) != getattr(other, attr):
                raise MultiNeuronError(
                    f"cannot {verb} histograms with different {attr}: "
                    f"{getattr(self, attr)!r} vs {getattr(other, attr)!r}"
                )
        if not torch.equal(self.edges, other.edges):
            raise MultiNeuronError(f"cannot {verb} histograms with different bin edges")
        check_same_origin(self.meta, other.meta, "histograms", verb)

    def merge(self, other: ActivationHistogram) -> ActivationHistogram:
        self.check_compatible(other)
        return ActivationHistogram(
            self.languages, self.n_layers, self.d_mlp, self.edges.clone(),
            self.n_items + other.n_items, dict(self.meta), self.counts + other.counts,
        )  # fmt: skip

    def save(self, path: str | Path) -> None:
        """Write losslessly (atomic)."""
        state = {
            "format_version": FORMAT_VERSION, "languages": list(self.languages),
            "n_layers": self.n_layers, "d_mlp": self.d_mlp, "edges": self.edges,
            "n_items": self.n_items, "meta_json": json.dumps(self.meta), "counts": self.counts,
        }  # fmt: skip
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path) -> ActivationHistogram:
        p = Path(path)
        if not p.is_file():
            raise MultiNeuronError(f"histogram file {str(p)!r} does not exist")
        s = torch.load(p, weights_only=True)
        if s.get("format_version") != FORMAT_VERSION:
            raise MultiNeuronError(
                f"histogram file format version {s.get('format_version')!r}; this library "
                f"reads {FORMAT_VERSION}"
            )
        return cls(
            tuple(s["languages"]), int(s["n_layers"]), int(s["d_mlp"]), s["edges"],
            int(s["n_items"]), json.loads(s["meta_json"]), s["counts"],
        )  # fmt: skip

    def equals(self, other: ActivationHistogram) -> bool:
        try:
            self.check_compatible(other, verb="compare")
        except MultiNeuronError:
            return False
        return self.n_items == other.n_items and torch.equal(self.counts, other.counts)
