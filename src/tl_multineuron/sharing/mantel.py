"""The Mantel test: is one distance matrix between n objects related to another?

The statistic is the correlation (Spearman by default, Pearson optionally) between the two
matrices' entries above the diagonal; its null distribution comes from relabelling the objects
of one matrix (permuting its rows and columns together), which keeps each matrix's own
structure, unlike a test that treats the n(n-1)/2 pairs as independent. Every permutation is
enumerated where n! is at most ``n_perm`` (an exact p-value); otherwise ``n_perm`` random ones
(seeded) and the usual ``(hits + 1) / (n_perm + 1)``. Two-sided: ``|r_perm| >= |r|``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from ..errors import MultiNeuronError


@dataclass(frozen=True)
class MantelResult:
    statistic: float
    p_value: float
    n_permutations: int
    exact: bool
    n: int


def _check(m: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(m, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise MultiNeuronError(f"{name}: expected a square matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise MultiNeuronError(f"{name}: has non-finite entries")
    return m


def mantel(
    a: np.ndarray,
    b: np.ndarray,
    *,
    method: str = "spearman",
    n_perm: int = 9999,
    seed: int = 0,
) -> MantelResult:
    """Mantel test of ``a`` against ``b`` (square, same size, symmetric; only the entries above
    the diagonal are used); see the module docstring."""
    return mantel_many([a], b, method=method, n_perm=n_perm, seed=seed)[0]


def mantel_many(
    mats: Sequence[np.ndarray],
    b: np.ndarray,
    *,
    method: str = "spearman",
    n_perm: int = 9999,
    seed: int = 0,
) -> list[MantelResult]:
    """:func:`mantel` of each of ``mats`` against one ``b``: ``b``'s permutations (the same
    ones, same seed) are drawn and ranked once for all of them."""
    b = _check(b, "second matrix")
    n = b.shape[0]
    if method not in ("spearman", "pearson"):
        raise MultiNeuronError(f"method {method!r}: expected 'spearman' or 'pearson'")
    if n < 3:
        raise MultiNeuronError(f"a Mantel test needs at least 3 objects, got {n}")
    mats = [_check(a, "first matrix") for a in mats]
    for a in mats:
        if a.shape != b.shape:
            raise MultiNeuronError(f"matrices of shapes {a.shape} and {b.shape}; expected the same")
    iu, ju = np.triu_indices(n, 1)
    if method == "spearman":  # ranking commutes with relabelling: rank once, permute the ranks
        ranked = np.zeros_like(b)
        ranked[iu, ju] = rankdata(b[iu, ju])
        b = ranked + ranked.T
    exact = math.factorial(n) <= n_perm
    if exact:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_perm, n)), axis=1)
    yp = b[perms[:, iu], perms[:, ju]]  # [perm, pairs]
    yp = yp - yp.mean(1, keepdims=True)
    norms = np.linalg.norm(yp, axis=1)
    yo = b[iu, ju] - b[iu, ju].mean()
    no = np.linalg.norm(yo)
    out = []
    for a in mats:  # a loop over matrices (layers), each a matrix-vector product
        x = a[iu, ju]
        if method == "spearman":
            x = rankdata(x)
        x = (x - x.mean()) / (np.linalg.norm(x - x.mean()) or 1.0)
        r_perm = np.divide(yp @ x, norms, out=np.zeros(len(perms)), where=norms > 0)
        r = float(yo @ x / no) if no > 0 else 0.0
        hits = int((np.abs(r_perm) >= abs(r) - 1e-12).sum())
        p = hits / len(perms) if exact else (hits + 1) / (len(perms) + 1)
        out.append(MantelResult(r, float(p), len(perms), exact, n))
    return out
