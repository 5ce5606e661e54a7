"""A self-contained HTML report of whatever a results directory holds.

Figures are embedded as PNG data, circuitsvis views with the locally bundled JavaScript: the
file makes no external request. Missing, partial or old-format results are named in the report,
and the rest is rendered. ``plots`` (matplotlib, about a second to import) is imported where a
figure is drawn, so the CLI starts fast; it is not part of any import cycle.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..attribution.stats import AttributionStats
from ..errors import MultiNeuronError
from ..files import atomic_write
from ..runs.directories import check_consistent
from ..runs.grid import headline
from ..sharing.statistics import SharingStats
from ..sharing.views import load_views, render_views
from .reading import load_result, run_info
from .specificity_section import specificity_section

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.note{background:#fff7e0;border-left:4px solid #f0b400;padding:.5em 1em;margin:1em 0}
.missing{background:#f4f4f4;border-left:4px solid #999;padding:.5em 1em;margin:1em 0}
img{max-width:100%}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;
padding:2px 6px;text-align:right}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:12px}
figure.cv{margin:1em 0}figcaption{font-weight:600}"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


class _Report:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.problems: list[str] = []

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def p(self, text: str, cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")

    def missing(self, text: str) -> None:
        self.problems.append(text)
        self.parts.append(f'<div class="missing">{html.escape(text)}</div>')

    def partial(self, done: int, run: dict | None) -> None:
        """A note when a run's results cover fewer items than its dataset."""
        total = (run or {}).get("n_items")
        if total and done < total:
            self.parts.append(
                f'<div class="note">Partial results: {done} of {total} items '
                "(resume with --resume).</div>"
            )

    def figure(self, make: Callable[[], Any], what: str) -> None:
        try:
            self.parts.append(_png(make()))
        except (MultiNeuronError, KeyError, ValueError) as e:
            self.missing(f"{what}: could not be drawn ({e})")

    def table(self, df: pd.DataFrame) -> None:
        self.parts.append(df.to_html(index=False, float_format=lambda v: f"{v:.2f}", border=0))

    def folded(self, summary: str, df: pd.DataFrame) -> None:
        """A long table behind a click (``<details>``)."""
        body = df.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary>{body}</details>")


def _sharing(rep: _Report, d: Path) -> SharingStats | None:
    from . import plots, sharing_sections

    rep.h2("Neuron sharing across languages")
    f = d / "stats.pt"
    if not f.exists():
        rep.missing("No sharing analysis (stats.pt): run `tl-multineuron analyze --out DIR`.")
        return None
    st = load_result(f, SharingStats.load, "sharing statistics", rep)
    if st is None:
        return None
    rep.partial(st.n_items, run_info(d, "run.json"))
    rep.p(
        f"{st.n_items} items x {len(st.languages)} languages {list(st.languages)}; site "
        f"{st.meta.get('site')}; active when {'a > t' if st.criterion == 'gt' else '|a| > t'}"
        f"; thresholds {list(st.thresholds)}; model {st.meta.get('model')}; dataset "
        f"{st.meta.get('dataset')}."
    )
    rep.figure(lambda: plots.plot_layer_fractions(st), "layer fractions")
    if len(st.thresholds) > 1:
        rep.figure(lambda: plots.plot_threshold_sweep(st), "threshold sweep")
    rep.figure(lambda: plots.plot_stability(st), "stability")
    rep.figure(lambda: plots.plot_specific_per_language(st), "specific per language")
    rep.table(st.summary().round(2).reset_index())
    sharing_sections.items_section(rep, st, d)
    return st


def _tasks(rep: _Report, d: Path, own: SharingStats | None) -> None:
    from . import plots, sharing_sections

    subs = {}
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and (p / "stats.pt").exists()):
        st = load_result(sub / "stats.pt", SharingStats.load, f"statistics of {sub.name}", rep)
        if st is not None:
            subs[sub.name] = st
    if own is not None and own.meta.get("dataset"):
        subs.setdefault(str(own.meta["dataset"]), own)
    if len(subs) > 1:
        rep.h2("Comparison across tasks")
        sharing_sections.tasks_section(rep, subs)
        rep.figure(lambda: plots.plot_task_comparison(subs), "task comparison")


def _views(rep: _Report, d: Path) -> None:

    rep.h2("Token-level activations (circuitsvis)")
    f = d / "views.json"
    if not f.exists():
        rep.missing("No views (views.json): `tl-multineuron analyze` writes them.")
        return
    views = load_result(f, load_views, "views", rep)
    if views:
        rep.parts.append(render_views(views))


def _attribution(rep: _Report, d: Path) -> None:
    from . import plots

    rep.h2("Attribution: which categories the important neurons belong to")
    f = d / "attribution.pt"
    if not f.exists():
        rep.missing(
            "No attribution results (attribution.pt): run `tl-multineuron attribute --out DIR`."
        )
        return
    at = load_result(f, AttributionStats.load, "attribution statistics", rep)
    if at is None:
        return
    rep.partial(at.n_items, run_info(d, "run-attribute.json"))
    rep.p(f"{at.n_items} items; answer token: {at.meta.get('answer_token')}.")
    rep.p(_scores_note(at.meta))
    for m, s in at.methods.items():
        rep.figure(lambda m=m: plots.plot_enrichment(at, m), f"enrichment ({m})")
        rep.figure(lambda m=m: plots.plot_attribution_mass(at, m), f"mass ({m})")
        if m in ("effective", "ig"):
            rep.figure(lambda m=m: plots.plot_score_by_category(at, m), f"score ({m})")
        if m == "ig":
            rep.p(
                f"IG completeness: mean |gap| {s.gap_abs_sum / max(1, s.n_gaps):.4g}, max "
                f"relative gap {s.rel_gap_max:.3g} over {s.n_gaps} runs."
            )
    _rules(rep, at)
    _knowledge(rep, at)


def _scores_note(meta: dict) -> str:
    """Which score formula made the attribution (norm-aware from score version 2)."""
    norms = meta.get("norms")
    if meta.get("score_version", 1) < 2 or norms is None:
        return (
            "Scores made before norm-aware scoring (score version 1: |a| ||W_out|| and "
            "a W_out . W_U, no norm in the path): re-run `attribute` for direct effects."
        )
    proc = norms.get("weight_processing") or []
    return (
        f"Scores are direct effects through the norms in the path (post-MLP norm: "
        f"{norms.get('post_mlp_norm') or 'none'}, final norm: {norms.get('final_norm')}; each "
        "norm's scale from the clean run, held fixed)"
        + (f"; weight processing found on the model: {'; '.join(proc)}" if proc else "")
        + f". Categories from {meta.get('site')}."
    )


def _rules(rep: _Report, at: AttributionStats) -> None:
    """Categories under each activity rule side by side, and the share of top contributors
    each calls non-activated."""
    if not at.rules:
        return
    rep.h2("Activity rules side by side")
    rules = at.rules_frame()
    rules["all-shared enrichment [95% CI]"] = [
        f"{e:.2f} [{lo:.2f}, {hi:.2f}]"
        for e, lo, hi in zip(rules["all-shared enrichment"], rules.low, rules.high, strict=True)
    ]
    rules = rules.drop(columns=["all-shared enrichment", "low", "high"]).round(2)
    t = at.meta.get("config", {}).get("threshold", 0)
    rep.p(
        f"Category fractions of all (item, layer) neurons under post a>{t}, post |a|>{t} and "
        f"act(gate)>{t}, with the share of the top-{next(iter(at.rules.values())).k} "
        "contributors (contribution score) that each rule calls non-activated."
    )
    rep.table(rules)


def _knowledge(rep: _Report, at: AttributionStats) -> None:
    kn = at.knowledge
    if kn is None:
        return
    rep.h2("Knowledge neurons (Dai et al.)")
    pooled = kn.to_frame(pooled=True).drop(columns="layer").round(3)
    rep.p(
        f"IG of the answer probability (20-step left Riemann sum, zero baseline) on layers "
        f"{list(kn.layers)}; coarse: > {kn.fraction} x the prompt's maximum; refined: coarse "
        f"in more than {kn.share:.0%} of an item's languages; {kn.n_items} items."
    )
    rep.table(pooled)


def _interventions(rep: _Report, d: Path) -> None:
    from . import plots

    rep.h2("Interventions: paired effects on the gold answer")
    f = d / "comparisons.csv"
    if not f.exists():
        rep.missing(
            "No intervention results (comparisons.csv): run `tl-multineuron intervene --out DIR`"
            " or `tl-multineuron grid`."
        )
        return
    comp = load_result(f, pd.read_csv, "intervention comparisons", rep)
    if comp is None or comp.empty:
        return
    run = run_info(d, "run-grid.json") or run_info(d, "run-intervene.json") or {}
    ev = run.get("eval_items")
    rep.p(
        f"Scored by one forward pass per row (greedy match of the whole gold answer, gold "
        f"log-probability); {int(comp.n_rows.max())} rows = (item, language) pairs"
        + (f" of items {ev[0]}..{ev[1]}" if ev else "")
        + ". Scope 'last' edits the last prompt token and every answer position; 'all' every "
        "real position, BOS included only where marked '+bos'. Deltas are paired by item and "
        "language with 95% bootstrap intervals (items resampled with their languages, seeds "
        "resampled); p: exact McNemar (accuracy), Wilcoxon signed-rank on item means "
        "(log-prob)."
    )
    _boundary(rep, d)
    for metric in ("accuracy", "logprob"):
        rep.figure(
            lambda metric=metric: plots.plot_intervention_effects(comp, metric),
            f"intervention effects ({metric})",
        )
    for metric in ("accuracy", "logprob"):
        rep.p(f"{metric}: each condition vs none, and each all-shared target vs its controls")
        rep.table(headline(comp, metric))
    summ = (
        load_result(d / "summary.csv", pd.read_csv, "summary", rep)
        if (d / "summary.csv").exists()
        else None
    )
    if summ is not None and "accuracy" in summ.columns:
        wide = summ.pivot_table(
            index="group", columns="language", values="accuracy", sort=False
        ).reset_index()
        rep.p("Greedy-match accuracy (%) per language (controls: mean over seeds)")
        rep.table(wide)


def _boundary(rep: _Report, d: Path) -> None:
    """The answer-boundary check of the unedited condition, where it found something."""
    f = d / "answer_boundary.json"
    if not f.exists():
        return
    found = load_result(f, lambda p: json.loads(p.read_text()), "answer-boundary check", rep)
    for x in (found or {}).get("findings", []):
        rep.parts.append(
            f'<div class="note">Answer boundary: {html.escape(str(x.get("message", x)))}</div>'
        )


def _enrichment(rep: _Report, d: Path) -> None:

    f = d / "attribution.pt"
    if not f.exists():
        return
    at = load_result(f, AttributionStats.load, "attribution statistics", rep)
    if at is None:
        return
    rows = []
    for m, s in at.methods.items():
        f = s.enrichment_frame(over=(0, 1))
        for _, r in f.iterrows():
            rows.append(
                {
                    "method": m,
                    "category": r.category,
                    "top-K share %": round(100 * r.topk_share, 2),
                    "base rate %": round(100 * r.base_rate, 2),
                    "enrichment": round(r.enrichment, 3),
                    "95% CI": f"[{r.low:.2f}, {r.high:.2f}]",
                }
            )
    rep.p(
        f"Enrichment: each category's share of the top-{at.methods[next(iter(at.methods))].k} "
        "neurons per (item, language, layer) divided by its share of all neurons (pooled over "
        f"layers and languages; {at.n_items} items; 95% bootstrap interval over items). > 1: "
        "over-represented among the top. " + _scores_note(at.meta)
    )
    rep.table(pd.DataFrame(rows))


def _grid(rep: _Report, d: Path, tasks: list[str]) -> None:
    from . import plots, sharing_sections

    for t in tasks:
        sub = d / t
        rep.h2(f"Task: {t}")
        if not sub.is_dir():
            rep.missing(f"task {t}: no results directory {sub.name}/")
            continue
        f = sub / "stats.pt"
        if f.exists():
            st = load_result(f, SharingStats.load, f"statistics of {t}", rep)
            if st is not None:
                rep.p(
                    f"{st.n_items} items x {len(st.languages)} languages; site "
                    f"{st.meta.get('site')}; threshold {st.thresholds[0]}."
                )
                rep.figure(lambda st=st: plots.plot_layer_fractions(st), f"fractions of {t}")
                rep.table(st.summary().round(2).reset_index())
                sharing_sections.items_section(rep, st, sub)
        _enrichment(rep, sub)
        _interventions(rep, sub)


def _steering(rep: _Report, d: Path) -> None:
    from . import plots

    acc, lang = d / "accuracy", d / "language"
    rep.h2("Accuracy steering: band search on calibration items, one held-out evaluation")
    if (acc / "search.csv").exists():
        run = run_info(acc, "run-steer-accuracy.json") or {}
        surface = load_result(acc / "search.csv", pd.read_csv, "steering search", rep)
        if surface is not None:
            rep.p(
                f"Search on {run.get('search_items', '?')} calibration items (every language): "
                "mean change vs no steering of the gold log-probability (nats) and greedy-match "
                "accuracy (points), non-English rows and English rows apart. 'alpha' scales the "
                "all-shared neurons of the band, 'beta' the neurons specific to the row's "
                "language, 'mu' shifts both toward the cross-language mean activation."
            )
            for metric in ("d_logprob_non_en", "d_accuracy_non_en", "d_accuracy_en"):
                rep.figure(
                    lambda m=metric: plots.plot_steering_surface(surface, m), f"search {metric}"
                )
            rep.table(surface.round(3))
        chosen = run_info(acc, "verdict.json")
        if chosen:
            rep.p(
                f"Chosen on calibration items: {chosen.get('chosen')}. Held-out target (non-"
                "English accuracy gain with a paired 95% interval above 0, English loss at most "
                f"the allowance): {'met' if chosen.get('met') else 'NOT met'}."
            )
        if (acc / "heldout.csv").exists():
            comp = load_result(acc / "heldout.csv", pd.read_csv, "held-out comparisons", rep)
            if comp is not None:
                ev = run.get("eval_items")
                rep.p(
                    "Held-out items"
                    + (f" {ev[0]}..{ev[1]} ({ev[2]})" if ev else "")
                    + ": the chosen configuration vs no steering and vs equal-size random "
                    "neurons in the same layers (seeds pooled); paired by item and language, "
                    "95% bootstrap intervals; p: exact McNemar (max over seeds) / Wilcoxon."
                )
                show = comp.assign(
                    **{
                        "delta [95% CI]": [
                            f"{a:+.2f} [{b:+.2f}, {c:+.2f}]"
                            for a, b, c in zip(comp.delta, comp.ci_low, comp.ci_high, strict=True)
                        ]
                    }
                )[["metric", "reference", "language", "value", "reference_value",
                   "delta [95% CI]", "p_value", "n_rows"]]  # fmt: skip
                rep.table(show.round(3))
    else:
        rep.missing("No accuracy-steering results: run `tl-multineuron steer --study accuracy`.")
    rep.h2("Output-language control")
    f = lang / "language_control.csv"
    if not f.exists():
        rep.missing("No output-language results: run `tl-multineuron steer --study language`.")
        return
    table = load_result(f, pd.read_csv, "language control", rep)
    ident = (
        load_result(lang / "identifier.csv", pd.read_csv, "identifier accuracy", rep)
        if (lang / "identifier.csv").exists()
        else None
    )
    if table is None:
        return
    rep.p(
        "Prompts in the source language, generation steered toward each target. Language "
        "control: share of outputs identified as the target (lingua, restricted to the data's "
        "languages); relevance: share starting with the target language's gold answer; "
        "harmonic mean of both, 95% bootstrap intervals over items, and its paired change vs "
        "no steering."
    )
    rep.figure(lambda: plots.plot_language_control(table), "language control")
    if ident is not None:
        rep.p("Identifier accuracy (%) on the dataset's gold answers (targets below 90% flagged)")
        rep.table(ident.round(1))
    rep.table(table.round(1))


def shown_dir(d: Path) -> str:
    """A results directory as a report names it: as given when relative, else by its name (a
    committed report names no path of the machine that made it)."""
    return str(d) if not d.is_absolute() else d.name


def build_report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) summarising ``results_dir``; returns its path."""
    d = Path(results_dir)
    if not d.is_dir():
        raise MultiNeuronError(f"results directory {str(d)!r} does not exist")

    identity = check_consistent(d)  # runs of another model or dataset are never mixed
    rep = _Report()
    if identity:
        rep.p(
            "Built from: "
            + "; ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in identity.items())
        )
    runs = {
        n: run_info(d, n)
        for n in ("run.json", "run-attribute.json", "run-intervene.json", "grid.json")
    }
    grid = runs["grid.json"]
    spec = d / "specificity" / "run-specificity.json"
    if spec.exists():
        runs["specificity/run-specificity.json"] = run_info(spec.parent, spec.name)
    steer = [
        d / sub / f"run-steer-{sub}.json"
        for sub in ("accuracy", "language")
        if (d / sub / f"run-steer-{sub}.json").exists()
    ]
    if steer:  # tl-multineuron steer: accuracy/ and language/
        for f in steer:
            runs[f"{f.parent.name}/{f.name}"] = run_info(f.parent, f.name)
        _steering(rep, d)
    elif grid is not None:  # tl-multineuron grid: one sub-directory per task
        from .paper_sections import paper_sections

        rep.p(f"Grid command: {grid.get('command', '?')}")
        paper_sections(rep, d)  # the claims first, where `paper` wrote them
        _tasks(rep, d, None)
        _grid(rep, d, list(grid.get("tasks", [])))
    elif not spec.exists() or any(
        runs[n] for n in ("run.json", "run-attribute.json", "run-intervene.json")
    ):  # a specificity run alone has none of these sections
        own = _sharing(rep, d)
        _tasks(rep, d, own)
        _views(rep, d)
        _attribution(rep, d)
        _enrichment(rep, d)
        _interventions(rep, d)
    if spec.exists():
        specificity_section(rep, spec.parent)
    rep.h2("Configuration")
    found = {k: v for k, v in runs.items() if v is not None}
    if found:
        rep.parts.append(
            f"<pre>{html.escape(json.dumps(found, indent=2, ensure_ascii=False))}</pre>"
        )
    else:
        rep.missing("No run configuration files (run*.json) found.")
    head = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>tl_multineuron report: "
        f"{html.escape(d.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>tl_multineuron report</h1><p>{html.escape(shown_dir(d))} &middot; "
        f"{time.strftime('%Y-%m-%d %H:%M')} &middot; tl_multineuron {__version__}</p>"
    )
    if rep.problems:
        head += (
            '<div class="note"><b>Missing or unreadable:</b><ul>'
            + "".join(f"<li>{html.escape(x)}</li>" for x in rep.problems)
            + "</ul></div>"
        )
    page = head + "\n".join(rep.parts) + "</body></html>"
    path = Path(out) if out else d / "report.html"
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path
