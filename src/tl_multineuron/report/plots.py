"""Matplotlib figures for every kind of result. Each function takes results (never the model)
and returns a ``Figure``; :func:`save_figure` writes PNG or SVG by the file suffix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..attribution.stats import AttributionStats  # noqa: E402
from ..errors import MultiNeuronError  # noqa: E402
from ..files import atomic_write  # noqa: E402
from ..sharing.classification import CATEGORY_NAMES  # noqa: E402
from ..sharing.statistics import SharingStats  # noqa: E402

COLORS = {
    "non-activated": "#c7c7c7",
    "specific": "#ff7f0e",
    "partial-shared": "#1f77b4",
    "all-shared": "#2ca02c",
}


def _fig(w: float | int = 7.0, h: float | int = 3.6) -> tuple[Figure, plt.Axes]:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(w, h), constrained_layout=True)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _stacked(ax: plt.Axes, x: np.ndarray, parts: np.ndarray, labels=CATEGORY_NAMES) -> None:
    bottom = np.zeros(len(x))
    for c, name in enumerate(labels):
        ax.bar(x, parts[:, c], bottom=bottom, color=COLORS[name], label=name, width=0.85)
        bottom += parts[:, c]


def _stacked_percent(layers, parts: np.ndarray, ylabel: str, title: str) -> Figure:
    """A stacked 0-100% bar chart of the four categories per layer."""
    fig, ax = _fig()
    _stacked(ax, np.asarray(layers), parts)
    ax.set(xlabel="layer", ylabel=ylabel, ylim=(0, 100), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    return fig


def _layers(stats) -> list[int]:
    return list(stats.meta.get("layers") or range(stats.n_layers))


def plot_layer_fractions(
    stats: SharingStats, threshold: float | None = None, title: str | None = None
) -> Figure:
    """Stacked per-layer fractions of the four categories (mean over items)."""
    frac = stats.layer_fractions(threshold).numpy() * 100
    t = stats.thresholds[stats._t(threshold)]
    return _stacked_percent(
        _layers(stats),
        frac,
        "% of neurons",
        title or f"Neuron categories per layer ({stats.criterion}, t={t:g}, {stats.n_items} items)",
    )


def plot_task_comparison(
    stats_by_task: Mapping[str, SharingStats], threshold: float | None = None
) -> Figure:
    """Per-layer all-shared and specific fractions for several tasks."""
    if not stats_by_task:
        raise MultiNeuronError("plot_task_comparison needs at least one task")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True, sharex=True)
    for task, st in stats_by_task.items():
        frac = st.layer_fractions(threshold).numpy() * 100
        axes[0].plot(_layers(st), frac[:, 3], marker="o", ms=3, label=task)
        axes[1].plot(_layers(st), frac[:, 1], marker="o", ms=3, label=task)
    axes[0].set(title="all-shared", xlabel="layer", ylabel="% of neurons")
    axes[1].set(title="specific", xlabel="layer")
    axes[1].legend(fontsize=8)
    return fig


def plot_threshold_sweep(stats: SharingStats) -> Figure:
    """Category fractions (mean over layers) against the activity threshold."""
    ts = list(stats.thresholds)
    vals = np.stack([stats.layer_fractions(t).mean(0).numpy() * 100 for t in ts])
    fig, ax = _fig(6, 3.6)
    for c, name in enumerate(CATEGORY_NAMES):
        ax.plot(ts, vals[:, c], marker="o", color=COLORS[name], label=name)
    ax.set(
        xlabel=f"threshold t ({'a > t' if stats.criterion == 'gt' else '|a| > t'})",
        ylabel="% of neurons (mean over layers)",
        title="Threshold sweep",
    )
    ax.legend(fontsize=8)
    return fig


def plot_stability(stats: SharingStats, threshold: float | None = None) -> Figure:
    """Overlap across inputs: neurons always in a category / neurons ever in it."""
    df = stats.stability(threshold)
    fig, ax = _fig()
    for name in CATEGORY_NAMES:
        d = df[df.category == name]
        ax.plot(d.layer, d.overlap * 100, marker="o", ms=3, color=COLORS[name], label=name)
    ax.set(
        xlabel="layer",
        ylabel="always / ever (%)",
        title=f"Stability of categories across {stats.n_items} inputs",
    )
    ax.legend(fontsize=8)
    return fig


def plot_specific_per_language(stats: SharingStats, threshold: float | None = None) -> Figure:
    """Heat map: mean number of language-specific neurons per item, language x layer."""
    spec = stats.specific_per_language(threshold).numpy()
    fig, ax = _fig(8, 0.45 * len(stats.languages) + 1.4)
    im = ax.imshow(spec, aspect="auto", cmap="Oranges")
    ax.set_yticks(range(len(stats.languages)), stats.languages)
    layers = _layers(stats)
    ax.set_xticks(range(len(layers)), layers, fontsize=7)
    ax.set(xlabel="layer", title="Language-specific neurons per item")
    fig.colorbar(im, ax=ax, label="neurons")
    return fig


def plot_topk_share(attr: AttributionStats, method: str = "contribution") -> Figure:
    """Share of each category among the top-K neurons per layer (mean over languages)."""
    s = attr[method]
    share = s.topk_share().mean(0).numpy() * 100
    return _stacked_percent(
        s.layers, share, f"% of top-{s.k}", f"Categories of the top-{s.k} neurons by {method} score"
    )


def _category_bands(ax, s, mid, lo, hi, alpha: float, marker: str | None = None) -> None:
    """Per category present in ``s``: a line ``mid[:, c]`` over layers in a ``lo..hi`` band
    (non-finite bounds left open)."""
    layers = np.array(s.layers)
    for c, name in enumerate(CATEGORY_NAMES):
        if int(s.count[..., c].sum()) == 0:
            continue
        ax.plot(layers, mid[:, c], color=COLORS[name], label=name, marker=marker)
        low = np.where(np.isfinite(lo[:, c]), lo[:, c], np.nan)
        high = np.where(np.isfinite(hi[:, c]), hi[:, c], np.nan)
        ax.fill_between(layers, low, high, color=COLORS[name], alpha=alpha)


def plot_enrichment(attr: AttributionStats, method: str = "contribution") -> Figure:
    """Enrichment (top-K share / base rate) per category and layer, pooled over languages,
    with its 95% bootstrap interval over items; 1 = the category's base rate."""
    s = attr[method]
    est, lo, hi = (t.numpy() for t in s.enrichment_interval(over=(0,)))
    fig, ax = _fig()
    _category_bands(ax, s, est, lo, hi, alpha=0.2, marker=".")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(
        xlabel="layer",
        ylabel="top-K share / base rate",
        title=f"Enrichment among the top-{s.k} neurons by {method} (95% bootstrap interval)",
    )
    ax.legend(fontsize=8)
    return fig


def plot_score_by_category(attr: AttributionStats, method: str = "effective") -> Figure:
    """Min / mean / max score per category and layer (over items and languages)."""
    s = attr[method]
    fig, ax = _fig()
    mean = (s.mass.sum(0) / s.count.sum(0).clamp_min(1)).numpy()
    _category_bands(ax, s, mean, s.min.amin(0).numpy(), s.max.amax(0).numpy(), alpha=0.15)
    ax.set(
        xlabel="layer",
        ylabel=f"{method} score",
        title=f"{method} score by category (line: mean, band: min-max)",
    )
    ax.legend(fontsize=8)
    return fig


def plot_attribution_mass(attr: AttributionStats, method: str = "contribution") -> Figure:
    """Share of attribution magnitude held by each category, per layer."""
    s = attr[method]
    share = s.mass_share().mean(0).numpy() * 100
    return _stacked_percent(
        s.layers, share, "% of |score| mass", f"Attribution mass by category ({method})"
    )


def plot_intervention_effects(
    comparisons: pd.DataFrame, metric: str = "accuracy", reference: str = "none"
) -> Figure:
    """Paired effect of each condition vs ``reference`` (``none``: every condition; a
    control's name pattern such as ``random``: targets vs their controls), with 95%
    bootstrap intervals."""
    need = {"condition", "reference", "metric", "delta", "ci_low", "ci_high", "target"}
    if not need <= set(comparisons.columns):
        raise MultiNeuronError(
            f"comparisons lack columns {sorted(need - set(comparisons.columns))}"
        )
    d = comparisons[comparisons.metric == metric]
    d = d[d.reference == "none"] if reference == "none" else d[d.reference.str.contains(reference)]
    if d.empty:
        raise MultiNeuronError(f"no {metric} comparisons against {reference!r}")
    fig, ax = _fig(8, 0.3 * len(d) + 1.3)
    y = np.arange(len(d))
    colors = {
        "all-shared": "#d62728",
        "specific": "#1f77b4",
        "random": "#bcbd22",
        "matched": "#ff7f0e",
    }
    err = np.vstack([d.delta - d.ci_low, d.ci_high - d.delta])
    ax.barh(y, d.delta, xerr=err, color=[colors.get(t, "#7f7f7f") for t in d.target], capsize=2)
    labels = d.condition if reference == "none" else d.condition + "  vs  " + d.reference
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    unit = "accuracy difference (points)" if metric == "accuracy" else "log-prob difference (nats)"
    ax.set(xlabel=unit, title=f"Paired effects vs {reference} (95% bootstrap intervals)")
    return fig


def plot_steering_surface(surface: pd.DataFrame, metric: str = "d_logprob_non_en") -> Figure:
    """The calibration search as a heatmap: layer band (rows) x strength setting (columns),
    colour = ``metric`` (a column of :func:`~tl_multineuron.steering.study.search_surface`)."""
    need = {"band", "setting", metric}
    if not need <= set(surface.columns):
        raise MultiNeuronError(
            f"search surface lacks columns {sorted(need - set(surface.columns))}"
        )
    grid = surface.pivot_table(index="band", columns="setting", values=metric, sort=False)
    fig, ax = _fig(1.3 * grid.shape[1] + 2.5, 0.45 * grid.shape[0] + 1.6)
    v = np.nanmax(np.abs(grid.to_numpy())) or 1.0
    im = ax.imshow(grid.to_numpy(), cmap="RdBu", vmin=-v, vmax=v, aspect="auto")
    for (i, j), x in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(x):
            ax.text(j, i, f"{x:+.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set(title=f"calibration search: {metric} vs no steering", xlabel="strength", ylabel="band")
    return fig


def plot_language_control(table: pd.DataFrame, value: str = "harmonic_mean") -> Figure:
    """Output-language control: target (rows) x method and strength (columns), colour =
    ``value`` (%) from :func:`~tl_multineuron.steering.language.control_table`."""
    need = {"target", "method", "strength", value}
    if not need <= set(table.columns):
        raise MultiNeuronError(f"control table lacks columns {sorted(need - set(table.columns))}")
    t = table.assign(cond=table["method"] + " x" + table["strength"].map("{:g}".format))
    t.loc[t["method"].isin(["none", "deactivate"]), "cond"] = t["method"]
    grid = t.pivot_table(index="target", columns="cond", values=value, sort=False)
    fig, ax = _fig(0.6 * grid.shape[1] + 2.5, 0.45 * grid.shape[0] + 1.8)
    im = ax.imshow(grid.to_numpy(), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), x in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(x):
            ax.text(j, i, f"{x:.0f}", ha="center", va="center", fontsize=6, color="w")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set(title=f"output-language steering: {value.replace('_', ' ')} (%)", ylabel="target")
    return fig


def plot_specificity_matrix(table: pd.DataFrame, method: str, control: str = "set") -> Figure:
    """The deactivation matrix of one method: set language (rows) x text language (columns),
    colour = change in mean per-token log-likelihood (nats/token) from
    :func:`~tl_multineuron.experiments.specificity.matrix_table`; empty sets marked."""
    t = table[(table["method"] == method) & (table["control"] == control)]
    if t.empty:
        raise MultiNeuronError(f"no matrix rows for method {method!r}, control {control!r}")
    grid = t.pivot_table(
        index="set_language", columns="language", values="delta", sort=False, dropna=False
    )
    langs = list(dict.fromkeys(t["language"]))
    grid = grid.reindex(index=[x for x in langs if x in grid.index], columns=langs)
    vals = grid.to_numpy(dtype=float)
    lim = max(1e-6, float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0)
    fig, ax = _fig(0.55 * grid.shape[1] + 2.5, 0.45 * grid.shape[0] + 1.8)
    im = ax.imshow(vals, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), x in np.ndenumerate(vals):
        ax.text(j, i, "empty" if not np.isfinite(x) else f"{x:+.2f}", ha="center",
                va="center", fontsize=6)  # fmt: skip
    ax.set_xticks(range(grid.shape[1]), grid.columns, fontsize=7)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8, label="nats/token")
    ax.set(title=f"{method}: deactivate L's set ({control})", xlabel="text language",
           ylabel="set language L")  # fmt: skip
    return fig


SELECTIVITY_BARS = ("set", "set - random", "set - matched")


def plot_selectivity(sel: pd.DataFrame) -> Figure:
    """Each method's selectivity over the languages every method covers (rows ``set_language
    == "all"`` of :func:`~tl_multineuron.experiments.specificity.selectivity`): the set, and
    its paired differences from the random and activity-matched controls, with 95% intervals
    (nats/token; below 0 = specific)."""
    t = sel[(sel["set_language"] == "all") & sel["control"].isin(SELECTIVITY_BARS)]
    if t.empty:
        raise MultiNeuronError("no selectivity over all languages to plot")
    methods = list(dict.fromkeys(t["method"]))
    fig, ax = _fig(1.3 * len(methods) + 3, 3.6)
    width = 0.8 / len(SELECTIVITY_BARS)
    for k, control in enumerate(SELECTIVITY_BARS):
        r = t[t["control"] == control].set_index("method").reindex(methods)
        x = np.arange(len(methods)) + (k - 1) * width
        v = r["selectivity"].to_numpy(dtype=float)
        err = np.abs(np.stack([v - r["ci_low"].to_numpy(float), r["ci_high"].to_numpy(float) - v]))
        ax.bar(x, v, width, yerr=err, capsize=2, label=control)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(methods)), methods, fontsize=8)
    over = t["over"].dropna().iloc[0] if "over" in t.columns and t["over"].notna().any() else ""
    ax.set(ylabel="nats/token (95% interval)",
           title="selectivity: own-language change minus the others'"
           + (f" (over {over})" if over else ""))  # fmt: skip
    ax.legend(fontsize=7)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG or SVG (by suffix), atomically."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("png", "svg", "pdf"):
        raise MultiNeuronError(f"figure format {fmt!r}; expected .png, .svg or .pdf")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120))
    return path
