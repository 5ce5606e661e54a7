"""One protocol for everything that streams over a dataset and merges: sharing statistics,
attribution statistics and experiment scores.

An accumulator has ``n_items``, ``update(...)`` (add a batch), ``merge(other)`` (a new value
equal to one run over both), ``save(path)`` / ``load(path)`` (lossless, atomic),
``equals(other)`` and ``check_compatible(other)`` (an error naming the field that differs).
The helpers below are what they share: which results may be merged (:func:`check_same_origin`)
and float sums that merge exactly in any order (:func:`on_grid`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import MultiNeuronError


@runtime_checkable
class Accumulator(Protocol):
    """The streaming-result protocol (see module docstring)."""

    @property
    def n_items(self) -> int: ...

    def update(self, *args: Any, **kwargs: Any) -> Any: ...

    def merge(self, other: Any) -> Any: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Any: ...

    def equals(self, other: Any) -> bool: ...

    def check_compatible(self, other: Any, verb: str = "merge") -> None: ...


# Activation sums are rounded, per batch, to multiples of these powers of two: float64 sums of
# such values are exact (no rounding, so any order of batches and merges gives the same bits)
# while |sum| < 2**53 * grid: 8.6e9 for sums, 1.4e11 for sums of squares.
SUM_GRID = 2.0**-20
SQ_SUM_GRID = 2.0**-16


def on_grid(x: Tensor, grid: float) -> Tensor:
    return torch.round(x / grid) * grid


# what two results must share to be merged or compared, and how the mismatch is named
ORIGIN_FIELDS = (
    ("model", "model"),
    ("weights_fingerprint", "model weights"),
    ("site", "activation site"),
    ("token", "token mode"),
    ("dataset", "dataset"),
)


def _token_mode(meta: dict) -> object:
    rec = (meta.get("config") or {}).get("recording") or {}
    return (rec.get("token"), rec.get("aggregate")) if rec else None


def check_same_origin(a: dict, b: dict, what: str, verb: str = "merge") -> None:
    """Results of one model (and weights), site, token mode and dataset, over disjoint items:
    otherwise an error naming the field. Fields a result does not carry are not compared."""
    for key, name in ORIGIN_FIELDS:
        va, vb = (_token_mode(a), _token_mode(b)) if key == "token" else (a.get(key), b.get(key))
        if va is not None and vb is not None and va != vb:
            raise MultiNeuronError(f"cannot {verb} {what} of different {name}: {va!r} vs {vb!r}")
    if verb != "merge":
        return
    fa, fb = _fingerprints(a), _fingerprints(b)
    if fa & fb:
        raise MultiNeuronError(
            f"cannot merge {what}: both hold the items of dataset fingerprint(s) {sorted(fa & fb)}"
            " (the same shard twice)"
        )


def _fingerprints(meta: dict) -> set[str]:
    fps = meta.get("dataset_fingerprints") or (
        [meta["dataset_fingerprint"]] if meta.get("dataset_fingerprint") else []
    )
    return set(fps)


def merged_fingerprints(a: dict, b: dict) -> list[str]:
    return sorted(_fingerprints(a) | _fingerprints(b))


def poisson_weights(item_ids: Sequence[str], n_boot: int) -> Tensor:
    """Poisson(1) bootstrap weights ``[item, n_boot]``, a pure function of each item's id:
    a streaming bootstrap over items whose replicates do not depend on batch sizes, resumes,
    shards or the order items arrive in (merged accumulators add their weighted sums)."""
    out = torch.empty(len(item_ids), n_boot, dtype=torch.float64)
    ones = torch.ones(n_boot, dtype=torch.float64)
    for i, item in enumerate(item_ids):
        seed = int.from_bytes(hashlib.sha256(str(item).encode()).digest()[:8], "little") >> 1
        out[i] = torch.poisson(ones, generator=torch.Generator().manual_seed(seed))
    return out


def weights_with_estimate(item_ids: Sequence[str], n_boot: int) -> Tensor:
    """``[item, 1 + n_boot]``: ones (the estimate itself) beside :func:`poisson_weights`, so one
    weighted reduction gives the estimate (column 0) and every replicate."""
    ones = torch.ones(len(item_ids), 1, dtype=torch.float64)
    return torch.cat([ones, poisson_weights(item_ids, n_boot)], 1)
