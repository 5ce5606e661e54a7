"""Report sections from the per-item summaries: each opens with its statistic in one sentence
(the paper's claim (i) and which languages share), then the figures. ``rep`` is the report
being written (:func:`~tl_multineuron.report.page.build_report`'s page)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import MultiNeuronError
from ..sharing.statistics import SharingStats
from ..sharing.task_comparison import differences_sentence, input_variation, task_differences


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def variation_sentence(stats: SharingStats, name: str = "this task") -> str:
    """Claim (i), inputs vary: the share of neurons in each category on every item against the
    share on an average item."""
    v = input_variation(stats).set_index("category")
    parts = [
        f"{cat} {_pct(v.loc[cat, 'always'])} on every item vs {_pct(v.loc[cat, 'mean'])} on an "
        "average one"
        for cat in ("non-activated", "all-shared")
    ]
    non = v.loc["non-activated"]
    return (
        f"Inputs vary within {name}: of the neurons non-activated on an average item "
        f"({_pct(non['mean'])}), {_pct(non['always_over_mean'])} stay non-activated on every "
        f"one of the {stats.n_items} items ({'; '.join(parts)}; layers pooled, a count over "
        "these items)."
    )


def similarity_sentence(table: pd.DataFrame, threshold: float) -> str | None:
    """Which languages share: the pooled Mantel statistic of every distance."""
    t = table[(table.layer.astype(str) == "all") & (table.threshold == threshold)]
    if t.empty:
        return None
    parts = [
        f"{r.distance} r = {r.statistic:+.2f} (p = {r.p_value:.3g}, {int(r.n_languages)} languages)"
        for r in t.itertuples()
    ]
    return (
        "Language similarity: co-activation distance (1 - Jaccard, layers pooled) against "
        "typological distance, Mantel test (Spearman, two-sided): " + "; ".join(parts) + ". A "
        "positive r means languages further apart share fewer neurons."
    )


def items_section(rep: Any, stats: SharingStats, d: Path) -> None:
    """Bands over items, the within-task variation, the language pairs and their similarity."""
    from . import sharing_plots

    items = stats.items
    if items is None or items.n_items == 0:
        rep.missing("No per-item summaries (statistics written before they existed).")
        return
    rep.p(variation_sentence(stats, f"{stats.meta.get('dataset') or 'this dataset'}"))
    layers = list(stats.meta.get("layers") or range(stats.n_layers))
    rep.figure(lambda: sharing_plots.plot_category_bands(items, layers), "category bands")
    sim = d / "language_similarity.csv"
    if sim.is_file():
        table = pd.read_csv(sim)
        sentence = similarity_sentence(table, stats.thresholds[0])
        if sentence:
            rep.p(sentence)
    if items.N >= 2:
        from ..sharing.typology import distance_matrix

        try:
            mat, kept = distance_matrix("genetic", items.languages)
        except MultiNeuronError as e:  # the heatmap shows co-activation alone, and says why
            rep.p(f"No typological order beside the co-activation heatmap: {e}")
            mat, kept = None, []
        rep.figure(
            lambda: sharing_plots.plot_language_heatmaps(items, mat, kept), "language heatmaps"
        )
    pairs = d / "language_pairs.csv"
    if pairs.is_file():
        p = pd.read_csv(pairs)
        p = p[(p.layer.astype(str) == "all") & (p.threshold == stats.thresholds[0])]
        rep.table(p.sort_values("jaccard", ascending=False).head(8).round(4))


def tasks_section(rep: Any, subs: Mapping[str, SharingStats]) -> pd.DataFrame | None:
    """Claim (i), tasks differ: every pair of tasks, pooled over layers, with intervals."""
    from . import sharing_plots

    with_items = {k: s.items for k, s in subs.items() if s.items is not None and s.items.n_items}
    if len(with_items) < 2:
        return None
    try:
        table = task_differences(with_items)
    except MultiNeuronError as e:  # e.g. tasks recorded on different layers
        rep.p(f"Tasks not compared: {e}")
        return None
    rep.p(differences_sentence(table))
    rep.figure(lambda: sharing_plots.plot_task_differences(table), "task differences")
    return table
