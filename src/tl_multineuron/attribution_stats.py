"""Attribution joined with sharing categories, accumulated over a dataset (streaming).

For every method (``contribution``, ``effective``, ``ig``), :class:`ScoreStats` keeps per
(language, layer, category): how many of the top-K neurons fall in the category, the
attribution mass (sum of scores and of their magnitudes), the number of neurons and the
min / max score. All sizes are independent of the number of items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .accumulator import SUM_GRID, check_same_origin, merged_fingerprints, on_grid
from .classification import CATEGORY_NAMES
from .errors import MultiNeuronError
from .files import atomic_write
from .masks import topk_mask

FORMAT_VERSION = 1
_T = ("topk_counts", "mass", "abs_mass", "count", "min", "max")


@dataclass
class ScoreStats:
    """Streaming per-category summaries of one attribution method's scores."""

    method: str
    languages: tuple[str, ...]
    layers: tuple[int, ...]
    k: int
    n_items: int = 0
    gap_abs_sum: float = 0.0  # IG: sum over prompts and layers of |completeness gap|
    rel_gap_max: float = 0.0
    n_gaps: int = 0
    topk_counts: Int[Tensor, "lang layer 4"] | None = None
    mass: Float[Tensor, "lang layer 4"] | None = None
    abs_mass: Float[Tensor, "lang layer 4"] | None = None
    count: Int[Tensor, "lang layer 4"] | None = None
    min: Float[Tensor, "lang layer 4"] | None = None
    max: Float[Tensor, "lang layer 4"] | None = None

    def __post_init__(self) -> None:
        self.languages, self.layers = tuple(self.languages), tuple(self.layers)
        shape = (len(self.languages), len(self.layers), 4)
        init = {
            "topk_counts": (torch.int64, 0),
            "count": (torch.int64, 0),
            "mass": (torch.float64, 0.0),
            "abs_mass": (torch.float64, 0.0),
            "min": (torch.float64, float("inf")),
            "max": (torch.float64, float("-inf")),
        }
        for name, (dtype, v) in init.items():
            if getattr(self, name) is None:
                setattr(self, name, torch.full(shape, v, dtype=dtype))
            elif tuple(getattr(self, name).shape) != shape:
                raise MultiNeuronError(
                    f"{name} has shape {tuple(getattr(self, name).shape)}; expected {shape}"
                )

    def update(
        self, scores: Float[Tensor, "item lang layer d_mlp"], codes: Int[Tensor, "item layer d_mlp"]
    ) -> None:
        """Add a batch: scores per (item, language) and the items' category codes."""
        n_it, N, L, _ = scores.shape
        if (len(self.languages), len(self.layers)) != (N, L) or codes.shape != (
            n_it,
            L,
            scores.shape[-1],
        ):
            raise MultiNeuronError(
                f"scores {tuple(scores.shape)} / codes {tuple(codes.shape)} do not match "
                f"{len(self.languages)} languages x {len(self.layers)} layers"
            )
        s = scores.detach().double().cpu()
        top = topk_mask(s, self.k)
        c_all = codes.cpu()
        for c in range(4):
            m = (c_all == c).unsqueeze(1).expand_as(s)
            self.topk_counts[..., c] += (top & m).sum((0, -1))
            self.count[..., c] += m.sum((0, -1))
            self.mass[..., c] += on_grid((s * m).sum((0, -1)), SUM_GRID)
            self.abs_mass[..., c] += on_grid((s.abs() * m).sum((0, -1)), SUM_GRID)
            self.min[..., c] = torch.minimum(
                self.min[..., c], s.masked_fill(~m, float("inf")).amin((0, -1))
            )
            self.max[..., c] = torch.maximum(
                self.max[..., c], s.masked_fill(~m, float("-inf")).amax((0, -1))
            )
        self.n_items += n_it

    def add_gaps(self, gaps: list[float], rel: list[float]) -> None:
        self.gap_abs_sum += float(sum(abs(g) for g in gaps))
        self.rel_gap_max = max([self.rel_gap_max, *rel])
        self.n_gaps += len(gaps)

    def check_compatible(self, other: ScoreStats, verb: str = "merge") -> None:
        """An error naming the first field that differs (method, languages, layers, K)."""
        for attr in ("method", "languages", "layers", "k"):
            if getattr(self, attr) != getattr(other, attr):
                raise MultiNeuronError(
                    f"cannot {verb} attribution statistics of different {attr}: "
                    f"{getattr(self, attr)!r} vs {getattr(other, attr)!r}"
                )

    def merge(self, other: ScoreStats) -> ScoreStats:
        self.check_compatible(other)
        out = ScoreStats(
            self.method,
            self.languages,
            self.layers,
            self.k,
            self.n_items + other.n_items,
            self.gap_abs_sum + other.gap_abs_sum,
            max(self.rel_gap_max, other.rel_gap_max),
            self.n_gaps + other.n_gaps,
        )
        for n in ("topk_counts", "mass", "abs_mass", "count"):
            setattr(out, n, getattr(self, n) + getattr(other, n))
        out.min = torch.minimum(self.min, other.min)
        out.max = torch.maximum(self.max, other.max)
        return out

    # -- joined views -------------------------------------------------------------------------
    def topk_share(self) -> Float[Tensor, "lang layer 4"]:
        """Share of each category among the top-K neurons (averaged over items)."""
        return self.topk_counts.double() / max(1, self.n_items * self.k)

    def mass_share(self) -> Float[Tensor, "lang layer 4"]:
        """Share of attribution magnitude held by each category."""
        return self.abs_mass / self.abs_mass.sum(-1, keepdim=True).clamp_min(1e-30)

    def mean(self) -> Float[Tensor, "lang layer 4"]:
        return torch.where(
            self.count > 0,
            self.mass / self.count.clamp_min(1),
            torch.full_like(self.mass, float("nan")),
        )

    def base_rate(self) -> Float[Tensor, "lang layer 4"]:
        """Share of all neurons in each category (the same cells as :meth:`topk_share`)."""
        return self.count.double() / self.count.sum(-1, keepdim=True).clamp_min(1)

    def enrichment(self, pooled: bool = False) -> Float[Tensor, "..."]:
        """Top-K share / base rate per (language, layer, category); ``pooled``: over all
        languages and layers (``[4]``). > 1: the category is over-represented among the
        top-K neurons; NaN where the category never occurs."""
        if pooled:
            top = self.topk_counts.double().sum((0, 1)) / self.topk_counts.sum().clamp_min(1)
            base = self.count.double().sum((0, 1)) / self.count.sum().clamp_min(1)
        else:
            top, base = self.topk_share(), self.base_rate()
        return torch.where(base > 0, top / base.clamp_min(1e-30), float("nan"))

    def all_shared_topk_fraction(self) -> Float[Tensor, "lang layer"]:
        return self.topk_share()[..., 3]

    def to_frame(self) -> pd.DataFrame:
        share, ms, mean = self.topk_share(), self.mass_share(), self.mean()
        rows = []
        for li, lang in enumerate(self.languages):
            for j, layer in enumerate(self.layers):
                for c in range(4):
                    n = int(self.count[li, j, c])
                    rows.append(
                        {
                            "method": self.method,
                            "language": lang,
                            "layer": layer,
                            "category": CATEGORY_NAMES[c],
                            "topk_share": float(share[li, j, c]),
                            "mass": float(self.mass[li, j, c]),
                            "mass_share": float(ms[li, j, c]),
                            "mean": float(mean[li, j, c]),
                            "min": float(self.min[li, j, c]) if n else float("nan"),
                            "max": float(self.max[li, j, c]) if n else float("nan"),
                            "n_neurons": n,
                        }
                    )
        return pd.DataFrame(rows)

    def state(self) -> dict:
        return {
            "method": self.method,
            "languages": list(self.languages),
            "layers": list(self.layers),
            "k": self.k,
            "n_items": self.n_items,
            "gaps": [self.gap_abs_sum, self.rel_gap_max, self.n_gaps],
            **{n: getattr(self, n) for n in _T},
        }

    @classmethod
    def from_state(cls, s: dict) -> ScoreStats:
        g = s["gaps"]
        return cls(
            s["method"],
            tuple(s["languages"]),
            tuple(s["layers"]),
            int(s["k"]),
            int(s["n_items"]),
            float(g[0]),
            float(g[1]),
            int(g[2]),
            *(s[n] for n in _T),
        )

    def save(self, path: str | Path) -> None:
        atomic_write(path, lambda tmp: torch.save(self.state(), tmp))

    @classmethod
    def load(cls, path: str | Path) -> ScoreStats:
        return cls.from_state(torch.load(Path(path), weights_only=True))

    def equals(self, other: ScoreStats) -> bool:
        return (
            self.state()["gaps"] == other.state()["gaps"]
            and all(torch.equal(getattr(self, n), getattr(other, n)) for n in _T)
            and (self.method, self.languages, self.layers, self.k, self.n_items)
            == (other.method, other.languages, other.layers, other.k, other.n_items)
        )


@dataclass
class AttributionStats:
    """Per-method :class:`ScoreStats` of one run, with its metadata."""

    methods: dict[str, ScoreStats]
    meta: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return min(s.n_items for s in self.methods.values()) if self.methods else 0

    def __getitem__(self, method: str) -> ScoreStats:
        if method not in self.methods:
            raise MultiNeuronError(f"no attribution method {method!r}; have {list(self.methods)}")
        return self.methods[method]

    def to_frame(self) -> pd.DataFrame:
        return pd.concat([s.to_frame() for s in self.methods.values()], ignore_index=True)

    def update(
        self,
        scores: dict[str, Float[Tensor, "item lang layer d_mlp"]],
        codes: Int[Tensor, "item layer d_mlp"],
    ) -> None:
        """Add a batch: each method's scores and the items' category codes (at that method's
        layers)."""
        missing = sorted(set(self.methods) - set(scores))
        if missing:
            raise MultiNeuronError(f"update: no scores for method(s) {missing}")
        for m, s in self.methods.items():
            s.update(scores[m], codes)

    def check_compatible(self, other: AttributionStats, verb: str = "merge") -> None:
        """An error naming what differs: methods, their configuration, or the origin (model,
        weights, dataset; :func:`~tl_multineuron.accumulator.check_same_origin`)."""
        if set(self.methods) != set(other.methods):
            raise MultiNeuronError(
                f"cannot {verb} attribution statistics of different methods: "
                f"{sorted(self.methods)} vs {sorted(other.methods)}"
            )
        for m, s in self.methods.items():
            s.check_compatible(other.methods[m], verb)
        check_same_origin(self.meta, other.meta, "attribution statistics", verb)

    def equals(self, other: AttributionStats) -> bool:
        """Exact equality of configuration and every accumulated value."""
        try:
            self.check_compatible(other, verb="compare")
        except MultiNeuronError:
            return False
        return all(s.equals(other.methods[m]) for m, s in self.methods.items())

    def merge(self, other: AttributionStats) -> AttributionStats:
        self.check_compatible(other)
        meta = {**self.meta, "dataset_fingerprints": merged_fingerprints(self.meta, other.meta)}
        return AttributionStats(
            {m: s.merge(other.methods[m]) for m, s in self.methods.items()}, meta
        )

    def save(self, path: str | Path) -> None:
        state = {
            "format_version": FORMAT_VERSION,
            "meta_json": json.dumps(self.meta),
            "methods": {m: s.state() for m, s in self.methods.items()},
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path) -> AttributionStats:
        p = Path(path)
        if not p.is_file():
            raise MultiNeuronError(f"attribution file {str(p)!r} does not exist")
        s = torch.load(p, weights_only=True)
        if s.get("format_version") != FORMAT_VERSION:
            raise MultiNeuronError(
                f"attribution file format {s.get('format_version')!r}; "
                f"this library reads {FORMAT_VERSION}"
            )
        return cls(
            {m: ScoreStats.from_state(v) for m, v in s["methods"].items()},
            json.loads(s["meta_json"]),
        )
