"""The report of a ``tl-multineuron paper`` run: one section per claim of *Sharing Matters*, each
opening with its statistic and interval in one sentence per task, then the figures and tables
(from ``OUT/paper/``, :mod:`~tl_multineuron.runs.paper`). ``rep`` is the page being written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.paper import PAPER_DIR

SECTIONS = {
    "i": "Claim (i): sharing depends on the task, and varies across inputs of one task",
    "ii": "Claim (ii): all-shared neurons and correct responses",
    "iii": "Claim (iii): more sharing, more accuracy?",
    "similarity": "Which languages share: neuron sharing and language similarity",
}


def _read(d: Path, name: str) -> pd.DataFrame | None:
    f = d / name
    return pd.read_csv(f) if f.is_file() else None


def paper_sections(rep: Any, out: Path) -> None:
    """The four claim sections, where ``OUT/paper/paper.json`` exists."""
    from . import sharing_plots

    d = out / PAPER_DIR
    info = d / "paper.json"
    if not info.is_file():
        return
    heads = json.loads(info.read_text()).get("headlines", {})
    for key, title in SECTIONS.items():
        rep.h2(title)
        for line in heads.get(key) or ["No statistic (the run lacks what this claim needs)."]:
            rep.p(line)
        if key == "i":
            tasks = _read(d, "claim_i_tasks.csv")
            if tasks is not None:
                rep.figure(lambda t=tasks: sharing_plots.plot_task_differences(t), "tasks differ")
            inputs = _read(d, "claim_i_inputs.csv")
            if inputs is not None:
                rep.table(inputs.round(4))
        elif key == "ii":
            split = _read(d, "claim_ii.csv")
            if split is not None:
                sel = split[(split.language == "all") & (split.measure == "topk_share")]
                rep.table(sel.drop(columns=["language", "measure"]).round(4))
            peaks = _read(d, "effective_peaks.csv")
            if peaks is not None:
                pooled = peaks[peaks.layer.astype(str) == "all"]
                wide = pooled.pivot_table(
                    index=["task", "language"], columns="category", values="mean_of_item_max"
                )
                rep.p(
                    "The paper's effective-score statistic: per item and category the largest "
                    "effective score, averaged over items (layers pooled: their mean)."
                )
                rep.table(wide.round(4).reset_index())
        elif key == "iii":
            assoc = _read(d, "claim_iii.csv")
            if assoc is not None:
                rep.table(assoc[assoc.language == "all"].round(4))
        else:
            sim = _read(d, "language_similarity.csv")
            if sim is not None:
                pooled = sim[
                    (sim.layer.astype(str) == "all") & (sim.threshold == sim.threshold.min())
                ]
                rep.table(
                    pooled[["task", "distance", "statistic", "p_value", "n_languages"]].round(4)
                )
            rep.p("Per-task co-activation heatmaps are in each task's section below.")
