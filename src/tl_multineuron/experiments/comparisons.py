"""Paired statistics for experiments: every comparison is paired by (item, language).

For a condition A and a reference B (``none``, or a control's all-shared target), with values
``x[seed, row]`` (greedy match 0/1, or the gold log-probability):

* delta = mean over rows of A's seed-averaged value minus B's;
* a 95% **paired bootstrap** interval: each replicate resamples items (an item's languages
  stay together, and A and B share the draw) and, for conditions with several seeds, resamples
  seeds;
* accuracy: an **exact McNemar** test (scipy's binomial test on the discordant rows); where a
  side has several seeds, the largest p-value over its seeds (conservative);
* log-probability: a **Wilcoxon signed-rank** test on the per-item mean differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import MultiNeuronError
from .conditions import CONTROLS, Condition

METRICS = {"accuracy": "greedy_match", "logprob": "logprob"}


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes ``a`` and ``b``."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise MultiNeuronError(f"McNemar: {a.shape} vs {b.shape} outcomes")
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    if n01 + n10 == 0:
        return 1.0
    return float(sps.binomtest(n01, n01 + n10, 0.5).pvalue)


@dataclass(frozen=True)
class PairedDelta:
    value: float
    reference_value: float
    delta: float
    ci_low: float
    ci_high: float


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    items: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDelta:
    """Delta of means ``a - b`` with a paired bootstrap interval.

    a: ``[seeds_a, rows]``, b: ``[seeds_b, rows]`` (one row per (item, language), the same
    order in both); items: ``[rows]`` the item of each row (the resampling unit).
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1] or a.shape[1] != len(items):
        raise MultiNeuronError(f"paired rows differ: {a.shape} / {b.shape} / {len(items)} items")
    if not 0 < level < 1:
        raise MultiNeuronError(f"level {level}: expected a number in (0, 1)")
    codes, inv = np.unique(np.asarray(items), return_inverse=True)
    n_items = len(codes)
    rows_per = np.bincount(inv, minlength=n_items).astype(float)

    def per_item(x: np.ndarray) -> np.ndarray:  # [seeds, items] sums over an item's rows
        out = np.zeros((x.shape[0], n_items))
        np.add.at(out.T, inv, x.T)
        return out

    sa, sb = per_item(a), per_item(b)
    total = rows_per.sum()
    va, vb = sa.mean(0).sum() / total, sb.mean(0).sum() / total
    rng = np.random.default_rng(seed)
    v = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=n_boot).astype(float)

    def seed_weights(k: int) -> np.ndarray:
        if k == 1:
            return np.ones((n_boot, 1))
        return rng.multinomial(k, np.full(k, 1 / k), size=n_boot) / k

    wa, wb = seed_weights(a.shape[0]), seed_weights(b.shape[0])
    denom = v @ rows_per
    boot = (((wa @ sa) * v).sum(1) - ((wb @ sb) * v).sum(1)) / denom
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return PairedDelta(float(va), float(vb), float(va - vb), float(lo), float(hi))


def aligned_values(
    rows: pd.DataFrame, by: str, group: str, column: str, keys: pd.DataFrame
) -> np.ndarray:
    """``[seeds, rows]``: ``column`` of the rows whose ``by`` is ``group``, one row per seed
    (no seed column or NaN: one), columns aligned to ``keys`` (``item_id``, ``language``): the
    pairing every paired comparison rests on. A missing (item, language) is an error."""
    g = rows[rows[by] == group]
    if "seed" not in g.columns:
        g = g.assign(seed=-1)
    seeds = g["seed"].fillna(-1)
    wide = g.assign(_seed=seeds).pivot_table(
        index=["item_id", "language"], columns="_seed", values=column, aggfunc="first"
    )
    idx = pd.MultiIndex.from_frame(keys)
    missing = idx.difference(wide.index)
    if len(missing):
        item, lang = missing[0]
        raise MultiNeuronError(
            f"{group!r} has no row for item {item!r}, language {lang!r}: cannot pair it"
        )
    m = wide.reindex(idx).to_numpy(dtype=float).T
    if np.isnan(m).any():
        raise MultiNeuronError(f"{group!r}: some seeds lack some rows; cannot pair them")
    return m


def _pairs(rows: pd.DataFrame) -> list[tuple[str, str]]:
    first = rows.drop_duplicates("group").set_index("group")
    out = []
    for g, r in first.iterrows():
        if r["target"] == "none":
            continue
        out.append((g, "none"))
        cond = Condition(
            r["target"],
            r["op"],
            float(r["alpha"]),
            r["mode"],
            r["scope"],
            0 if r["target"] in CONTROLS else None,
            bool(r["include_bos"]),
            r["of"] if isinstance(r.get("of"), str) else "all-shared",
        )
        if cond.reference is not None and cond.reference.group in first.index:
            out.append((cond.reference.group, g))  # the all-shared target vs its control
    return out


def compare(
    a: np.ndarray,
    b: np.ndarray,
    items: np.ndarray,
    metric: str,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """One paired comparison of a condition's ``[seeds, rows]`` values ``a`` with a
    reference's ``b`` (rows aligned, ``items`` the item of each row): means, delta and its
    bootstrap interval (points for ``accuracy``, nats for ``logprob``), and the test's p
    (exact McNemar, the largest over seed pairs; Wilcoxon signed-rank on item means)."""
    d = paired_bootstrap(a, b, items, n_boot, seed, level)
    scale = 100.0 if metric == "accuracy" else 1.0
    if metric == "accuracy":
        p = max(mcnemar_exact(x, y) for x in a for y in b)
        test = "exact McNemar" + (" (max over seeds)" if len(a) * len(b) > 1 else "")
    else:
        diff = pd.Series(a.mean(0) - b.mean(0)).groupby(items).mean().to_numpy()
        p = 1.0 if np.allclose(diff, 0) else float(sps.wilcoxon(diff, zero_method="zsplit").pvalue)
        test = "Wilcoxon signed-rank (item means)"
    return {
        "value": d.value * scale,
        "reference_value": d.reference_value * scale,
        "delta": d.delta * scale,
        "ci_low": d.ci_low * scale,
        "ci_high": d.ci_high * scale,
        "p_value": p,
        "test": test,
    }


def paired_comparisons(
    rows: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Every condition group vs ``none``, and every all-shared target vs each of its controls
    (delta = target - control), for accuracy (points) and mean gold log-probability: one row
    per (comparison, metric). Columns describe the ``condition`` side."""
    if rows.empty:
        raise MultiNeuronError("no scored rows to compare")
    if "none" not in set(rows["group"]):
        raise MultiNeuronError("comparisons need the 'none' condition among the rows")
    out = []
    for task, t_rows in rows.groupby("task", sort=False):
        keys = (
            t_rows[t_rows["group"] == "none"][["item_id", "language"]]
            .drop_duplicates()
            .reset_index(drop=True)
        )
        items = keys["item_id"].to_numpy()
        info = t_rows.drop_duplicates("group").set_index("group")
        for g, ref in _pairs(t_rows):
            for metric, col in METRICS.items():
                a = aligned_values(t_rows, "group", g, col, keys)
                b = aligned_values(t_rows, "group", ref, col, keys)
                r = info.loc[g]
                out.append(
                    {
                        "task": task,
                        "condition": g,
                        "reference": ref,
                        "metric": metric,
                        **compare(a, b, items, metric, n_boot, seed, level),
                        "n_rows": a.shape[1],
                        "n_items": len(np.unique(items)),
                        "n_seeds": a.shape[0],
                        "n_seeds_reference": b.shape[0],
                        "target": r["target"],
                        "op": r["op"],
                        "alpha": r["alpha"],
                        "mode": r["mode"],
                        "scope": r["scope"],
                        "include_bos": bool(r["include_bos"]),
                        "set_size": float(t_rows[t_rows["group"] == g]["set_size"].mean()),
                    }
                )
    return pd.DataFrame(out)
