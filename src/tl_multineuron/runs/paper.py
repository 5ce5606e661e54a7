"""The paper's analyses over a grid's results directory (``tl-multineuron paper``): every claim
of *Sharing Matters* stated with its statistic, from what the per-task runs stored.

Reads, per task directory: ``stats.pt`` (with per-item summaries), ``attribution.pt`` (with
per-row summaries), ``scores.csv`` (the unedited rows: greedy match and gold log-prob) and
``language_similarity.csv``. Writes ``OUT/paper/``:

* ``claim_i_tasks.csv`` -- tasks differ (every pair of tasks, per layer and pooled);
* ``claim_i_inputs.csv`` -- inputs vary within a task (always vs average item, per category);
* ``claim_ii.csv`` -- attribution on correct vs incorrect rows (contribution and effective);
* ``effective_peaks.csv`` -- the paper's effective-score statistic;
* ``claim_iii.csv`` -- the all-shared measures against correctness and log-prob;
* ``language_similarity.csv`` -- every task's Mantel tests (co-activation vs typology);
* ``paper.json`` -- the headline sentence of each claim and where it came from.

Each file is written atomically; a missing input is an error naming it (nothing half-written).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..attribution.correctness import correctness_split, peak_table
from ..attribution.stats import AttributionStats
from ..errors import MultiNeuronError
from ..files import atomic_write
from ..sharing.association import association
from ..sharing.statistics import SharingStats
from ..sharing.task_comparison import differences_sentence, input_variation, task_differences

PAPER_DIR = "paper"
TABLES = (
    "claim_i_tasks.csv",
    "claim_i_inputs.csv",
    "claim_ii.csv",
    "effective_peaks.csv",
    "claim_iii.csv",
    "language_similarity.csv",
)
#: the attribution methods split by correctness
METHODS = ("contribution", "effective")


def outcomes(scores: pd.DataFrame) -> pd.DataFrame:
    """The unedited rows of an experiment's scores: ``item_id, language, greedy_match,
    logprob``."""
    base = scores[scores["target"] == "none"]
    if base.empty:
        raise MultiNeuronError("the scores have no unedited ('none') rows to take outcomes from")
    return base[["item_id", "language", "greedy_match", "logprob"]].reset_index(drop=True)


def _need(path: Path) -> Path:
    if not path.exists():
        raise MultiNeuronError(f"{path.parent.name}/{path.name} is missing: run the grid first")
    return path


def paper_tables(out: str | Path, tasks: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The tables of ``OUT/paper/`` (module docstring) from the task directories."""
    out = Path(out)
    stats, parts = {}, {name: [] for name in TABLES if name != "claim_i_tasks.csv"}
    for t in tasks:
        d = out / t
        st = SharingStats.load(_need(d / "stats.pt"))
        if st.items is None or st.items.n_items == 0:
            raise MultiNeuronError(f"{t}/stats.pt has no per-item summaries (written before them)")
        stats[t] = st
        attr = AttributionStats.load(_need(d / "attribution.pt"))
        outcome = outcomes(pd.read_csv(_need(d / "scores.csv")))
        parts["claim_i_inputs.csv"].append(input_variation(st).assign(task=t))
        for m in METHODS:
            rows = attr[m].rows
            if rows is None:
                raise MultiNeuronError(f"{t}/attribution.pt has no per-row summaries ({m})")
            parts["claim_ii.csv"].append(correctness_split(rows, outcome, m).assign(task=t))
        parts["effective_peaks.csv"].append(peak_table(attr["effective"].rows).assign(task=t))
        parts["claim_iii.csv"].append(association(st.items, outcome).assign(task=t))
        sim = d / "language_similarity.csv"
        if sim.exists():
            parts["language_similarity.csv"].append(pd.read_csv(sim).assign(task=t))
    tables = {k: pd.concat(v, ignore_index=True) for k, v in parts.items() if v}
    if len(stats) >= 2:
        tables["claim_i_tasks.csv"] = task_differences({t: s.items for t, s in stats.items()})
    return tables


def headlines(tables: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """One sentence per claim (and task), each with its statistic and interval."""
    out: dict[str, list[str]] = {"i": [], "ii": [], "iii": [], "similarity": []}
    t = tables.get("claim_i_tasks.csv")
    if t is not None:
        out["i"].append(differences_sentence(t))
    for r in tables["claim_i_inputs.csv"].query("category == 'non-activated'").itertuples():
        out["i"].append(
            f"{r.task}: {100 * r.always_over_mean:.1f}% of the neurons non-activated on an average "
            f"item ({100 * r.mean:.1f}% of all) stay non-activated on all {r.n_items} items."
        )
    c = tables["claim_ii.csv"]
    sel = c[
        (c.method == "contribution")
        & (c.language == "all")
        & (c.category == "all-shared")
        & (c.measure == "topk_share")
    ]
    for r in sel.itertuples():
        out["ii"].append(
            f"{r.task}: all-shared share of the top-K contributors on correct vs incorrect rows "
            f"{100 * r.correct:.1f}% vs {100 * r.incorrect:.1f}%, difference "
            f"{100 * r.diff:+.1f} points [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}] "
            f"({r.n_correct} vs {r.n_incorrect} rows)."
        )
    a = tables["claim_iii.csv"]
    sel = a[(a.language == "all") & (a.measure == "shared_share") & (a.outcome == "greedy_match")]
    for r in sel.itertuples():
        out["iii"].append(
            f"{r.task}: correlation of a row's shared share (all-shared / active in its language) "
            f"with answering correctly r = {r.r:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] "
            f"({r.n_rows} rows, {r.n_items} items)."
        )
    s = tables.get("language_similarity.csv")
    if s is not None and not s.empty:
        first = s[s.threshold == s.threshold.min()]
        pooled = first[first.layer.astype(str) == "all"]
        for task, g in pooled.groupby("task", sort=False):
            parts = [
                f"{r.distance} r = {r.statistic:+.2f} (p = {r.p_value:.3g})" for r in g.itertuples()
            ]
            out["similarity"].append(
                f"{task}: co-activation distance vs typological distance (Mantel, "
                f"{int(g.n_languages.max())} languages, layers pooled): " + "; ".join(parts) + "."
            )
    return out


def write_paper(out: str | Path, tasks: Sequence[str], provenance: dict) -> dict[str, list[str]]:
    """Compute and write ``OUT/paper/`` (atomically, file by file); returns the headlines."""
    tables = paper_tables(out, tasks)
    d = Path(out) / PAPER_DIR
    d.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        atomic_write(d / name, lambda t, f=frame: f.to_csv(t, index=False))
    heads = headlines(tables)
    body = {"tasks": list(tasks), "headlines": heads, **provenance}
    atomic_write(d / "paper.json", lambda t: Path(t).write_text(json.dumps(body, indent=2)))
    return heads
