"""Figures of the per-item summaries: category curves with their spread over items (as the paper
draws them), the language x language co-activation heatmaps, and differences between tasks.
Functions take results, never the model, and return a ``Figure``."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..sharing.classification import CATEGORY_NAMES  # noqa: E402
from ..sharing.item_summaries import ItemSummaries  # noqa: E402
from ..sharing.language_pairs import cluster_order, jaccard_matrix  # noqa: E402
from .plots import COLORS  # noqa: E402


def plot_category_bands(
    items: ItemSummaries, layers: Sequence[int] | None = None, threshold: float | None = None
) -> Figure:
    """Per category and layer: the mean fraction of neurons over items (line), the middle half of
    items (dark band) and their full range (light band)."""
    b = items.bands(threshold)
    x = np.asarray(layers if layers is not None else range(items.n_layers))
    fig, ax = plt.subplots(figsize=(7.0, 3.6), constrained_layout=True)
    for cat in CATEGORY_NAMES:
        r = b[b.category == cat]
        c = COLORS[cat]
        ax.fill_between(x, 100 * r["min"], 100 * r["max"], color=c, alpha=0.15, lw=0)
        ax.fill_between(x, 100 * r["q25"], 100 * r["q75"], color=c, alpha=0.35, lw=0)
        ax.plot(x, 100 * r["mean"], color=c, label=cat, marker="o", ms=2.5)
    ax.set(
        xlabel="layer",
        ylabel="% of the layer's neurons",
        title=f"Categories over {items.n_items} items: mean, interquartile and full range",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    return fig


def plot_language_heatmaps(
    items: ItemSummaries,
    typology: np.ndarray | None = None,
    typology_languages: Sequence[str] | None = None,
    typology_name: str = "genetic",
    threshold: float | None = None,
) -> Figure:
    """Jaccard co-activation (layers pooled), languages ordered by clustering it; beside it the
    same matrix in the order of clustering a typological distance (where one is given)."""
    jac = jaccard_matrix(items, threshold).numpy()
    langs = list(items.languages)
    panels = [("co-activation clustering", cluster_order(1 - jac), langs)]
    if typology is not None and typology_languages and len(typology_languages) >= 3:
        idx = [langs.index(x) for x in typology_languages]
        order = [idx[k] for k in cluster_order(typology)]
        panels.append((f"{typology_name} distance clustering", order, langs))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, order, names) in zip(axes[0], panels, strict=True):
        m = jac[np.ix_(order, order)]
        im = ax.imshow(m, cmap="viridis", vmin=np.nanmin(m[~np.eye(len(m), dtype=bool)]), vmax=1)
        ax.set_xticks(range(len(order)), [names[k] for k in order], rotation=90, fontsize=8)
        ax.set_yticks(range(len(order)), [names[k] for k in order], fontsize=8)
        ax.set_title(f"Jaccard, ordered by {title}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return fig


def plot_task_differences(table: pd.DataFrame) -> Figure:
    """Pooled over layers: each pair of tasks' difference of every category's mean fraction
    (points, in percentage points) with its bootstrap interval."""
    t = table[table.layer.astype(str) == "all"]
    pairs = list(dict.fromkeys(zip(t.task_a, t.task_b, strict=True)))
    fig, ax = plt.subplots(figsize=(7.0, 0.35 * len(pairs) * 4 + 1.2), constrained_layout=True)
    y = 0
    ticks, labels = [], []
    for a, b in pairs:
        for cat in CATEGORY_NAMES:
            r = t[(t.task_a == a) & (t.task_b == b) & (t.category == cat)].iloc[0]
            lo, hi = 100 * (r["diff"] - r.ci_low), 100 * (r.ci_high - r["diff"])
            ax.errorbar(100 * r["diff"], y, xerr=[[lo], [hi]], fmt="o", color=COLORS[cat], ms=4)
            ticks.append(y)
            labels.append(f"{a} - {b}: {cat}")
            y += 1
        y += 0.5
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="difference of the mean fraction (points), 95% item-bootstrap interval")
    return fig
