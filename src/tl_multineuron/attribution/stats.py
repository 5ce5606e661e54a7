"""Attribution joined with sharing categories, accumulated over a dataset (streaming).

For every method (``contribution``, ``effective``, ``ig``), :class:`ScoreStats` keeps per
(language, layer, category): how many of the top-K neurons fall in the category, the
attribution mass (sum of scores and of their magnitudes), the number of neurons and the
min / max score. All sizes are independent of the number of items.

Enrichment (a category's top-K share divided by its base rate in the same (language, layer)
cell) comes with a bootstrap interval over items: ``n_boot`` Poisson(1) replicates whose weights
are a pure function of each item's id (:func:`~tl_multineuron.sharing.accumulator.poisson_weights`),
accumulated as weighted top-K and category counts, so the interval streams and merges.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from ..files import atomic_write
from ..sharing.accumulator import (
    SUM_GRID,
    check_same_origin,
    merged_fingerprints,
    on_grid,
    poisson_weights,
)
from ..sharing.classification import CATEGORY_NAMES
from ..sharing.masks import topk_mask
from .knowledge import KnowledgeStats
from .rows import RowAttribution

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no bootstrap replicates (intervals are NaN)
_T = ("topk_counts", "mass", "abs_mass", "count", "min", "max")
_B = ("boot_topk", "boot_count")
N_BOOT = 200


def _shares(top: Tensor, cnt: Tensor, over: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Top-K share and base rate of each category (last axis), after summing ``over``."""
    if over:
        top, cnt = top.sum(over), cnt.sum(over)
    return (
        top / top.sum(-1, keepdim=True).clamp_min(1e-30),
        cnt / cnt.sum(-1, keepdim=True).clamp_min(1e-30),
    )


def _ratio(share: Tensor, base: Tensor) -> Tensor:
    """Share / base rate; NaN where the category never occurs."""
    return torch.where(base > 0, share / base.clamp_min(1e-30), float("nan"))


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
    n_boot: int = 0
    boot_topk: Float[Tensor, "boot lang layer 4"] | None = None
    boot_count: Float[Tensor, "boot lang layer 4"] | None = None
    #: per-row summaries (split by correctness, the paper's effective statistic); optional
    rows: RowAttribution | None = None

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
        for name in _B:
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros((self.n_boot, *shape), dtype=torch.float64))
            elif tuple(getattr(self, name).shape) != (self.n_boot, *shape):
                raise MultiNeuronError(
                    f"{name} has shape {tuple(getattr(self, name).shape)}; expected "
                    f"{(self.n_boot, *shape)}"
                )

    def update(
        self,
        scores: Float[Tensor, "item lang layer d_mlp"],
        codes: Int[Tensor, "item layer d_mlp"],
        item_ids: Sequence[str] | None = None,
    ) -> None:
        """Add a batch: scores per (item, language) and the items' category codes;
        ``item_ids`` (needed when ``n_boot > 0``) seed the bootstrap weights."""
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
        if self.n_boot and (item_ids is None or len(item_ids) != n_it):
            raise MultiNeuronError(
                f"update needs the {n_it} items' ids for the bootstrap ({self.n_boot} replicates)"
            )
        w = poisson_weights(item_ids, self.n_boot) if self.n_boot else None
        s = scores.detach().double().cpu()
        c = codes.cpu().long()
        idx = c.unsqueeze(1).expand_as(s)  # each score's category, one pass per statistic
        cells = (n_it, N, L, 4)
        per_top = torch.zeros(cells, dtype=torch.int64).scatter_add_(
            -1, idx, topk_mask(s, self.k).long()
        )
        per_count = torch.zeros((n_it, L, 4), dtype=torch.int64).scatter_add_(
            -1, c, torch.ones_like(c)
        )
        per_count = per_count.unsqueeze(1).expand(cells)
        mass = torch.zeros(cells, dtype=s.dtype).scatter_add_(-1, idx, s)
        abs_mass = torch.zeros(cells, dtype=s.dtype).scatter_add_(-1, idx, s.abs())
        peak = torch.full(cells, float("-inf"), dtype=s.dtype).scatter_reduce_(-1, idx, s, "amax")
        low = torch.full(cells, float("inf"), dtype=s.dtype).scatter_reduce_(-1, idx, s, "amin")
        self.topk_counts += per_top.sum(0)
        self.count += per_count.sum(0)
        if w is not None:
            self.boot_topk += torch.einsum("ib,ijlc->bjlc", w, per_top.double())
            self.boot_count += torch.einsum("ib,ijlc->bjlc", w, per_count.double())
        self.mass += on_grid(mass.sum(0), SUM_GRID)
        self.abs_mass += on_grid(abs_mass.sum(0), SUM_GRID)
        self.min = torch.minimum(self.min, low.amin(0))
        self.max = torch.maximum(self.max, peak.amax(0))
        if self.rows is not None:
            ids = list(item_ids) if item_ids is not None else None
            ids = ids or [str(self.n_items + i) for i in range(n_it)]
            self.rows.update(ids, per_top, abs_mass, peak)
        self.n_items += n_it

    def add_gaps(self, gaps: list[float], rel: list[float]) -> None:
        self.gap_abs_sum += float(sum(abs(g) for g in gaps))
        self.rel_gap_max = max([self.rel_gap_max, *rel])
        self.n_gaps += len(gaps)

    def check_compatible(self, other: ScoreStats, verb: str = "merge") -> None:
        """An error naming the first field that differs (method, languages, layers, K)."""
        for attr in ("method", "languages", "layers", "k", "n_boot"):
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
            n_boot=self.n_boot,
        )
        for n in ("topk_counts", "mass", "abs_mass", "count", *_B):
            setattr(out, n, getattr(self, n) + getattr(other, n))
        out.min = torch.minimum(self.min, other.min)
        out.max = torch.maximum(self.max, other.max)
        if (self.rows is None) != (other.rows is None):
            raise MultiNeuronError("cannot merge attribution with and without per-row summaries")
        if self.rows is not None and other.rows is not None:
            out.rows = self.rows.merge(other.rows)
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
        return self.enrichment_interval((0, 1) if pooled else (), with_interval=False)[0]

    def enrichment_interval(
        self, over: tuple[int, ...] = (), level: float = 0.95, with_interval: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Enrichment with a percentile bootstrap interval over items: ``(estimate, low,
        high)``. ``over``: axes pooled before the ratio (0 = languages, 1 = layers), e.g.
        ``(0,)`` gives ``[layer, 4]``, ``(0, 1)`` gives ``[4]``. The interval is NaN without
        replicates (files of format 1), where a category never occurs, or when not asked
        for."""
        top, cnt = self.topk_counts.double(), self.count.double()
        est = _ratio(*_shares(top, cnt, over))
        if not (self.n_boot and with_interval):
            nan = torch.full_like(est, float("nan"))
            return est, nan, nan.clone()
        shift = tuple(a + 1 for a in over)  # replicates come first
        reps = _ratio(*_shares(self.boot_topk, self.boot_count, shift))
        a = (1 - level) / 2
        lo = torch.nanquantile(reps, a, dim=0)
        hi = torch.nanquantile(reps, 1 - a, dim=0)
        return est, lo, hi

    def enrichment_frame(self, over: tuple[int, ...] = (0,), level: float = 0.95) -> pd.DataFrame:
        """Top-K share, base rate and their ratio with its bootstrap interval, as rows."""
        est, lo, hi = self.enrichment_interval(over, level)
        share, base = _shares(self.topk_counts.double(), self.count.double(), over)
        idx = {(): ("language", "layer"), (0,): ("layer",), (1,): ("language",)}.get(over, ())
        labels = {"language": self.languages, "layer": self.layers}
        rows = []
        for key in itertools.product(*[range(n) for n in est.shape[:-1]]):
            for c, name in enumerate(CATEGORY_NAMES):
                row = {"method": self.method}
                row.update({k: labels[k][i] for k, i in zip(idx, key, strict=True)})
                row.update(
                    {
                        "category": name,
                        "topk_share": float(share[key][c]),
                        "base_rate": float(base[key][c]),
                        "enrichment": float(est[key][c]),
                        "low": float(lo[key][c]),
                        "high": float(hi[key][c]),
                    }
                )
                rows.append(row)
        return pd.DataFrame(rows)

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
            "n_boot": self.n_boot,
            **{n: getattr(self, n) for n in _B},
            **({"rows": self.rows.state()} if self.rows is not None else {}),
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
            n_boot=int(s.get("n_boot", 0)),
            **{n: s.get(n) for n in _B},
            rows=RowAttribution.from_state(s["rows"]) if "rows" in s else None,
        )

    def save(self, path: str | Path) -> None:
        atomic_write(path, lambda tmp: torch.save(self.state(), tmp))

    @classmethod
    def load(cls, path: str | Path) -> ScoreStats:
        return cls.from_state(torch.load(Path(path), weights_only=True))

    def equals(self, other: ScoreStats) -> bool:
        same_rows = (self.rows is None and other.rows is None) or (
            self.rows is not None and other.rows is not None and self.rows.equals(other.rows)
        )
        return (
            same_rows
            and self.state()["gaps"] == other.state()["gaps"]
            and all(torch.equal(getattr(self, n), getattr(other, n)) for n in _T + _B)
            and (self.method, self.languages, self.layers, self.k, self.n_items, self.n_boot)
            == (other.method, other.languages, other.layers, other.k, other.n_items, other.n_boot)
        )


@dataclass
class AttributionStats:
    """Per-method :class:`ScoreStats` of one run, with its metadata.

    rules: contribution scores joined with the categories under other activity rules
        (``post>t``, ``|post|>t``, ``gate>t``), when the run compared them.
    knowledge: Dai et al.'s knowledge neurons per category, when IG ran with that preset.
    """

    methods: dict[str, ScoreStats]
    meta: dict = field(default_factory=dict)
    rules: dict[str, ScoreStats] = field(default_factory=dict)
    knowledge: KnowledgeStats | None = None

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
        item_ids: Sequence[str] | None = None,
    ) -> None:
        """Add a batch: each method's scores and the items' category codes (at that method's
        layers)."""
        missing = sorted(set(self.methods) - set(scores))
        if missing:
            raise MultiNeuronError(f"update: no scores for method(s) {missing}")
        for m, s in self.methods.items():
            s.update(scores[m], codes, item_ids)

    def rules_frame(self, level: float = 0.95) -> pd.DataFrame:
        """The activity rules side by side (pooled over languages and layers): each
        category's % of all neurons, the % of the top-K contributors the rule calls
        non-activated, and the all-shared enrichment with its bootstrap interval."""
        rows = []
        for r, s in self.rules.items():
            top, base = _shares(s.topk_counts.double(), s.count.double(), (0, 1))
            est, lo, hi = s.enrichment_interval((0, 1), level)
            row = {"rule": r}
            row.update({f"{c} %": float(100 * base[i]) for i, c in enumerate(CATEGORY_NAMES)})
            row["top contributors non-activated %"] = float(100 * top[0])
            row.update(
                {"all-shared enrichment": float(est[3]), "low": float(lo[3]), "high": float(hi[3])}
            )
            rows.append(row)
        return pd.DataFrame(rows)

    def check_compatible(self, other: AttributionStats, verb: str = "merge") -> None:
        """An error naming what differs: methods, their configuration, or the origin (model,
        weights, dataset; :func:`~tl_multineuron.sharing.accumulator.check_same_origin`)."""
        if set(self.methods) != set(other.methods):
            raise MultiNeuronError(
                f"cannot {verb} attribution statistics of different methods: "
                f"{sorted(self.methods)} vs {sorted(other.methods)}"
            )
        for m, s in self.methods.items():
            s.check_compatible(other.methods[m], verb)
        if set(self.rules) != set(other.rules) or (self.knowledge is None) != (
            other.knowledge is None
        ):
            raise MultiNeuronError(
                f"cannot {verb} attribution statistics with different extras: rules "
                f"{sorted(self.rules)} vs {sorted(other.rules)}, knowledge neurons "
                f"{self.knowledge is not None} vs {other.knowledge is not None}"
            )
        for r, s in self.rules.items():
            s.check_compatible(other.rules[r], verb)
        if self.knowledge is not None:
            self.knowledge.check_compatible(other.knowledge, verb)
        check_same_origin(self.meta, other.meta, "attribution statistics", verb)

    def equals(self, other: AttributionStats) -> bool:
        """Exact equality of configuration and every accumulated value."""
        try:
            self.check_compatible(other, verb="compare")
        except MultiNeuronError:
            return False
        return (
            all(s.equals(other.methods[m]) for m, s in self.methods.items())
            and all(s.equals(other.rules[r]) for r, s in self.rules.items())
            and (self.knowledge is None or self.knowledge.equals(other.knowledge))
        )

    def merge(self, other: AttributionStats) -> AttributionStats:
        self.check_compatible(other)
        meta = {**self.meta, "dataset_fingerprints": merged_fingerprints(self.meta, other.meta)}
        return AttributionStats(
            {m: s.merge(other.methods[m]) for m, s in self.methods.items()},
            meta,
            {r: s.merge(other.rules[r]) for r, s in self.rules.items()},
            None if self.knowledge is None else self.knowledge.merge(other.knowledge),
        )

    def save(self, path: str | Path) -> None:
        state = {
            "format_version": FORMAT_VERSION,
            "meta_json": json.dumps(self.meta),
            "methods": {m: s.state() for m, s in self.methods.items()},
            "rules": {r: s.state() for r, s in self.rules.items()},
            "knowledge": None if self.knowledge is None else self.knowledge.state(),
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path) -> AttributionStats:
        p = Path(path)
        if not p.is_file():
            raise MultiNeuronError(f"attribution file {str(p)!r} does not exist")
        s = torch.load(p, weights_only=True)
        if s.get("format_version") not in READABLE_VERSIONS:
            raise MultiNeuronError(
                f"attribution file format {s.get('format_version')!r}; "
                f"this library reads {list(READABLE_VERSIONS)}"
            )
        kn = s.get("knowledge")
        return cls(
            {m: ScoreStats.from_state(v) for m, v in s["methods"].items()},
            json.loads(s["meta_json"]),
            {r: ScoreStats.from_state(v) for r, v in s.get("rules", {}).items()},
            None if kn is None else KnowledgeStats.from_state(kn),
        )
