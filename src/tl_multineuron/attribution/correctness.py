"""The paper's claim (ii): "all-shared neurons play a key role in generating *correct*
responses". Attribution per row (:class:`~tl_multineuron.attribution.rows.RowAttribution`) is
split by whether the unedited model answered the row correctly (greedy match of the whole gold
answer): per language and pooled, each category's share among the top-K contributors (mean over
rows, layers pooled) and its share of the attribution magnitude (pooled over rows and layers),
correct vs incorrect, with the difference's 95% item-bootstrap interval (Poisson weights per
item id; the rows of an item move together)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import MultiNeuronError
from ..sharing.accumulator import weights_with_estimate
from ..sharing.classification import CATEGORY_NAMES
from .rows import RowAttribution

OUTCOME_COLUMNS = ("item_id", "language", "greedy_match")


def outcome_matrix(rows: RowAttribution, outcome: pd.DataFrame, column: str = "greedy_match"):
    """``(values [item, lang], known [item, lang])``: ``outcome[column]`` of each attributed row
    (joined on item id and language); rows without an outcome are unknown."""
    missing = [c for c in (*OUTCOME_COLUMNS[:2], column) if c not in outcome.columns]
    if missing:
        raise MultiNeuronError(f"outcome table has no column(s) {missing}")
    pos_i = {x: i for i, x in enumerate(rows.item_ids)}
    pos_l = {x: j for j, x in enumerate(rows.languages)}
    o = outcome[outcome.item_id.astype(str).isin(pos_i) & outcome.language.isin(pos_l)]
    if o.duplicated(["item_id", "language"]).any():
        raise MultiNeuronError("outcome table has several rows for one (item, language)")
    vals = torch.full((rows.n_items, len(rows.languages)), float("nan"), dtype=torch.float64)
    ii = torch.tensor([pos_i[str(x)] for x in o.item_id], dtype=torch.long)
    jj = torch.tensor([pos_l[x] for x in o.language], dtype=torch.long)
    vals[ii, jj] = torch.tensor(o[column].astype(float).to_numpy(), dtype=torch.float64)
    return vals, ~torch.isnan(vals)


def correctness_split(
    rows: RowAttribution,
    outcome: pd.DataFrame,
    method: str = "",
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per language (and ``"all"``), category and measure (``topk_share``, ``mass_share``):
    the value on correct and on incorrect rows, their difference and its interval."""
    correct, known = outcome_matrix(rows, outcome)
    if not known.any():
        raise MultiNeuronError("no attributed row has an outcome (greedy match) to split by")
    L, K = len(rows.layers), rows.k
    top = rows.topk.double().sum(2) / (L * K)  # [item, lang, 4]: share of the top-K
    mass = rows.mass.sum(2)  # [item, lang, 4]
    groups = {"correct": known & (correct > 0.5), "incorrect": known & (correct < 0.5)}
    w = weights_with_estimate(rows.item_ids, n_boot)  # [item, 1 + boot]
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    langs = [*rows.languages, "all"]
    values = {}
    for g, sel in groups.items():
        s = sel.double()  # [item, lang]
        # per language and pooled ("all"), for the estimate (column 0) and each replicate
        n = torch.einsum("ib,ij->bj", w, s)
        n = torch.cat([n, n.sum(1, keepdim=True)], 1)  # [boot, lang+1]
        t = torch.einsum("ib,ij,ijc->bjc", w, s, top)
        t = torch.cat([t, t.sum(1, keepdim=True)], 1) / n.unsqueeze(-1)
        m = torch.einsum("ib,ij,ijc->bjc", w, s, mass)
        m = torch.cat([m, m.sum(1, keepdim=True)], 1)
        m = m / m.sum(-1, keepdim=True)
        values[g] = {"topk_share": t, "mass_share": m, "n": n[0]}
    out = []
    for measure in ("topk_share", "mass_share"):
        a, b = values["correct"][measure], values["incorrect"][measure]
        diff = a - b  # [boot, lang+1, 4]; NaN where a group is empty
        q = torch.nanquantile(diff[1:], torch.tensor([lo_q, hi_q], dtype=diff.dtype), dim=0)
        out.append(
            pd.DataFrame(
                {
                    "method": method,
                    "language": np.repeat(langs, 4),
                    "category": list(CATEGORY_NAMES) * len(langs),
                    "measure": measure,
                    "correct": a[0].reshape(-1).numpy(),
                    "incorrect": b[0].reshape(-1).numpy(),
                    "diff": diff[0].reshape(-1).numpy(),
                    "ci_low": q[0].reshape(-1).numpy(),
                    "ci_high": q[1].reshape(-1).numpy(),
                    "n_correct": np.repeat(values["correct"]["n"].numpy(), 4).astype(int),
                    "n_incorrect": np.repeat(values["incorrect"]["n"].numpy(), 4).astype(int),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def peak_table(rows: RowAttribution, method: str = "effective") -> pd.DataFrame:
    """The paper's effective-score statistic per language, layer and category (and layers
    pooled: their mean): per item the category's largest score, averaged over items."""
    pm = rows.peak_means()  # [lang, layer, 4]
    pm = torch.cat([pm, pm.mean(1, keepdim=True)], 1)
    layers = [*rows.layers, "all"]
    n_l = len(layers)
    return pd.DataFrame(
        {
            "method": method,
            "language": np.repeat(rows.languages, n_l * 4),
            "layer": np.tile(np.repeat(np.array(layers, dtype=object), 4), len(rows.languages)),
            "category": list(CATEGORY_NAMES) * (len(rows.languages) * n_l),
            "mean_of_item_max": pm.reshape(-1).numpy(),
            "n_items": rows.n_items,
        }
    )
