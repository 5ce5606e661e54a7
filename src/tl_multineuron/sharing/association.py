"""The paper's claim (iii), "boosting multilingual alignment by increasing all-shared neurons can
enhance accuracy", asked as an association: are rows whose prompts share more neurons across
languages answered better?

Per row (item, language), two measures of sharing (layers pooled):

* ``all_shared_fraction``: the item's share of neurons active in every language (one value per
  item, the same for its languages);
* ``shared_share``: of the neurons active for this row's language, the share active in every
  language (how much of the row's own activity is shared).

Each is set against the unedited outcome of the row (``greedy_match``, and the gold
``logprob``): the Pearson correlation over rows (point-biserial for the greedy match) with a 95%
item-bootstrap interval (Poisson weights per item id: an item's rows move together), and the
mean measure on correct vs incorrect rows. An association, not a causal effect: the experiments'
amplification conditions are the causal test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import MultiNeuronError
from .accumulator import weights_with_estimate
from .item_summaries import ItemSummaries

MEASURES = ("all_shared_fraction", "shared_share")


def shared_measures(items: ItemSummaries, threshold: float | None = None) -> torch.Tensor:
    """``[measure, item, lang]``: the two measures of every row (module docstring)."""
    items.need_items()
    t = items.threshold_index(threshold)
    shared = items.counts[:, t, :, 3].double().sum(1)  # [item]
    active = torch.diagonal(items.pairs[:, t], dim1=-2, dim2=-1).double().sum(1)  # [item, lang]
    frac = (shared / (items.n_layers * items.d_mlp)).unsqueeze(1).expand_as(active)
    share = torch.where(active > 0, shared.unsqueeze(1) / active.clamp_min(1), torch.nan)
    return torch.stack([frac, share])


def _weighted_r(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Pearson r of ``x``, ``y`` ``[row]`` under each weight column ``w`` ``[row, boot]``."""
    sw = w.sum(0)
    mx, my = (w * x[:, None]).sum(0) / sw, (w * y[:, None]).sum(0) / sw
    dx, dy = x[:, None] - mx, y[:, None] - my
    cov = (w * dx * dy).sum(0)
    den = ((w * dx * dx).sum(0) * (w * dy * dy).sum(0)).sqrt()
    return torch.where(den > 0, cov / den, torch.nan)


def association(
    items: ItemSummaries,
    outcome: pd.DataFrame,
    threshold: float | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per language (and ``"all"``), measure and outcome (``greedy_match``, ``logprob``):
    ``r`` with ``ci_low``/``ci_high``, the measure's mean on correct and incorrect rows, and the
    rows and items used. ``outcome`` has ``item_id, language, greedy_match, logprob``."""
    need = ["item_id", "language", "greedy_match", "logprob"]
    missing = [c for c in need if c not in outcome.columns]
    if missing:
        raise MultiNeuronError(f"outcome table has no column(s) {missing}")
    pos = {x: i for i, x in enumerate(items.item_ids)}
    o = outcome[outcome.item_id.astype(str).isin(pos) & outcome.language.isin(items.languages)]
    if o.empty:
        raise MultiNeuronError("no row of the outcome table is an item of these summaries")
    ii = torch.tensor([pos[str(x)] for x in o.item_id], dtype=torch.long)
    jj = torch.tensor([items.languages.index(x) for x in o.language], dtype=torch.long)
    meas = shared_measures(items, threshold)[:, ii, jj]  # [measure, row]
    outs = {
        "greedy_match": torch.tensor(o.greedy_match.astype(float).to_numpy()),
        "logprob": torch.tensor(o.logprob.astype(float).to_numpy()),
    }
    w_items = weights_with_estimate(items.item_ids, n_boot)  # [item, 1 + boot]
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    rows = []
    for lang in [*items.languages, "all"]:
        sel = (
            torch.ones(len(o), dtype=torch.bool)
            if lang == "all"
            else torch.tensor((o.language == lang).to_numpy(copy=True))
        )
        w = w_items[ii[sel]]  # [row, 1 + boot]
        for m, name in enumerate(MEASURES):
            x = meas[m, sel]
            ok = ~torch.isnan(x)
            for oname, y in outs.items():
                yy = y[sel]
                r = _weighted_r(x[ok], yy[ok], w[ok])
                q = torch.nanquantile(r[1:], torch.tensor([lo_q, hi_q], dtype=r.dtype))
                gm = outs["greedy_match"][sel][ok] > 0.5
                rows.append(
                    {
                        "language": lang,
                        "measure": name,
                        "outcome": oname,
                        "r": float(r[0]),
                        "ci_low": float(q[0]),
                        "ci_high": float(q[1]),
                        "mean_correct": float(x[ok][gm].mean()) if gm.any() else np.nan,
                        "mean_incorrect": float(x[ok][~gm].mean()) if (~gm).any() else np.nan,
                        "n_rows": int(ok.sum()),
                        "n_items": int(ii[sel][ok].unique().numel()),
                    }
                )
    return pd.DataFrame(rows)
