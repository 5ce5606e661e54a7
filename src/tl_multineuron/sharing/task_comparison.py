"""The paper's claim (i): "sharing patterns are strongly affected by the type of task, but neuron
behaviour changes across different inputs even for the same task".

* Tasks differ: for every pair of tasks, per layer and pooled over layers, the difference of each
  category's mean per-item fraction, with a 95% item-bootstrap interval (the two tasks' items
  resampled independently, Poisson weights per item id). Tasks hold different items, so the
  comparison is unpaired.
* Inputs vary within a task: per category, the share of neurons in that category on *every* item
  against the share on an average item (the paper's "fewer than 10% of the non-activated neurons
  stay non-activated"): ``always / mean``. This is a count over the items analysed, not an
  estimate: it can only fall as items are added.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from ..errors import MultiNeuronError
from .accumulator import poisson_weights
from .classification import CATEGORY_NAMES
from .item_summaries import ItemSummaries
from .statistics import SharingStats


def _with_pooled(frac: torch.Tensor) -> torch.Tensor:
    """``[item, layer, 4]`` -> ``[item, layer + 1, 4]``: the last layer row pooled."""
    return torch.cat([frac, frac.mean(1, keepdim=True)], 1)


def task_differences(
    tasks: Mapping[str, ItemSummaries],
    threshold: float | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per pair of tasks (``task_a`` before ``task_b`` in the mapping's order), layer (``"all"``
    pooled) and category: ``mean_a``, ``mean_b``, ``diff`` (a - b, fraction of the layer's
    neurons per item) and its bootstrap interval ``ci_low``/``ci_high``."""
    if len(tasks) < 2:
        raise MultiNeuronError(f"comparing tasks needs at least 2, got {list(tasks)}")
    widths = {name: (s.n_layers, s.d_mlp) for name, s in tasks.items()}
    if len(set(widths.values())) > 1:
        raise MultiNeuronError(f"tasks recorded on different layers or widths: {widths}")
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    means, boots = {}, {}
    for name, s in tasks.items():
        f = _with_pooled(s.fractions(threshold))  # [item, layer+1, 4]
        w = poisson_weights(s.item_ids, n_boot)  # [item, boot]
        means[name] = f.mean(0)
        total = w.sum(0).view(-1, 1, 1)  # a replicate that draws no item of a task: NaN
        boots[name] = torch.einsum("ib,ilc->blc", w, f) / torch.where(total > 0, total, torch.nan)
    n_layers = next(iter(tasks.values())).n_layers
    layer = np.array([*range(n_layers), "all"], dtype=object)
    parts = []
    for a, b in itertools.combinations(tasks, 2):
        diff = means[a] - means[b]
        levels = torch.tensor([lo_q, hi_q], dtype=diff.dtype)
        q = torch.nanquantile(boots[a] - boots[b], levels, 0)
        parts.append(
            pd.DataFrame(
                {
                    "task_a": a,
                    "task_b": b,
                    "layer": np.repeat(layer, 4),
                    "category": list(CATEGORY_NAMES) * len(layer),
                    "mean_a": means[a].reshape(-1).numpy(),
                    "mean_b": means[b].reshape(-1).numpy(),
                    "diff": diff.reshape(-1).numpy(),
                    "ci_low": q[0].reshape(-1).numpy(),
                    "ci_high": q[1].reshape(-1).numpy(),
                    "n_a": tasks[a].n_items,
                    "n_b": tasks[b].n_items,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def differences_sentence(table: pd.DataFrame) -> str:
    """Claim (i), tasks differ, in one sentence: how many pooled differences (task pairs x
    categories) exclude 0, and the largest with its interval (from :func:`task_differences`)."""
    pooled = table[table.layer.astype(str) == "all"]
    excl = pooled[(pooled.ci_low > 0) | (pooled.ci_high < 0)]
    top = pooled.loc[pooled["diff"].abs().idxmax()]
    return (
        f"Tasks differ: {len(excl)} of {len(pooled)} differences of a category's mean "
        f"fraction between two tasks (layers pooled) exclude 0 (95% item bootstrap); the "
        f"largest, {top.category} {top.task_a} - {top.task_b}: {100 * top['diff']:+.1f} "
        f"points [{100 * top.ci_low:+.1f}, {100 * top.ci_high:+.1f}]."
    )


def input_variation(stats: SharingStats, threshold: float | None = None) -> pd.DataFrame:
    """Per category, pooled over layers: ``mean`` (share of neurons in the category on an
    average item), ``always`` (share in it on every item), ``ever`` (on at least one) and
    ``always_over_mean``, over ``n_items`` items."""
    freq = stats.category_frequency(threshold)  # [4, layer, neuron]
    mean = freq.mean((1, 2))
    always = (freq >= 1.0 - 1e-12).double().mean((1, 2))
    ever = (freq > 0).double().mean((1, 2))
    ratio = torch.where(mean > 0, always / mean.clamp_min(1e-30), torch.zeros_like(mean))
    return pd.DataFrame(
        {
            "threshold": stats.thresholds[0] if threshold is None else threshold,
            "category": list(CATEGORY_NAMES),
            "mean": mean.numpy(),
            "always": always.numpy(),
            "ever": ever.numpy(),
            "always_over_mean": ratio.numpy(),
            "n_items": stats.n_items,
        }
    )
