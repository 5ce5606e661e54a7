"""README's results table of one `tl-multineuron paper` run, one column per task, every cell from
a file the run wrote (no hand-picked wording), and a copy of the run's result files for docs.

    python scripts/paper_tables.py results/paper docs/paper_run > /tmp/table.md

Rows: the causal comparisons (accuracy points, paired by item and language, 95% bootstrap
interval; bold where it excludes 0), then claim (i) (inputs vary; tasks differ below the table),
claim (ii) (all-shared share of the top-K contributors, correct - incorrect rows, points), claim
(iii) (correlation of a row's shared share with answering correctly) and language similarity
(Mantel r of co-activation distance against each typological distance, its p-value).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
from grid_tables import KEEP, find_comparison

EXTRA = ("language_pairs.csv", "language_similarity.csv", "category_bands.csv")
COMPARISONS = (
    ("deactivate all-shared vs equal-size random", "deactivate all-shared", "deactivate random ("),
    ("deactivate all-shared vs activity-matched random", "deactivate all-shared",
     "deactivate matched ("),
    ("deactivate the row's language's specific neurons vs none", "deactivate specific", "none"),
    ("deactivate partial-shared vs equal-size random", "deactivate partial-shared",
     "deactivate random of partial-shared"),
    ("deactivate partial-shared vs activity-matched random", "deactivate partial-shared",
     "deactivate matched of partial-shared"),
    ("deactivate non-activated vs equal-size random", "deactivate non-activated",
     "deactivate random of non-activated"),
    ("deactivate non-activated vs activity-matched random", "deactivate non-activated",
     "deactivate matched of non-activated"),
    ("amplify all-shared x2 vs none", "amplify x2 all-shared", "none"),
    ("amplify all-shared x2 vs amplify random x2", "amplify x2 all-shared", "amplify x2 random"),
)  # fmt: skip


def _cell(delta: float, lo: float, hi: float, fmt: str = "+.1f") -> str:
    text = f"{delta:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
    return f"**{text}**" if lo > 0 or hi < 0 else text


def main(run_dir: str, out_dir: str) -> None:
    run, out = Path(run_dir), Path(out_dir)
    info = json.loads((run / "paper" / "paper.json").read_text())
    tasks = info["tasks"]
    p = run / "paper"
    inputs = pd.read_csv(p / "claim_i_inputs.csv")
    split = pd.read_csv(p / "claim_ii.csv")
    assoc = pd.read_csv(p / "claim_iii.csv")
    sim = pd.read_csv(p / "language_similarity.csv")
    rows: dict[str, dict[str, str]] = {}
    for task in tasks:
        comp = pd.read_csv(run / task / "comparisons.csv")
        for label, cond, ref in COMPARISONS:
            r = find_comparison(comp, cond, ref)
            rows.setdefault(label, {})[task] = (
                "not run" if r is None else _cell(r.delta, r.ci_low, r.ci_high)
            )
        v = inputs[(inputs.task == task) & (inputs.category == "non-activated")].iloc[0]
        label = "claim (i): non-activated on every item / on an average item"
        rows.setdefault(label, {})[task] = (
            f"{100 * v.always_over_mean:.1f}% ({100 * v.always:.1f}% / {100 * v['mean']:.1f}%)"
        )
        s = split[
            (split.task == task) & (split.method == "contribution") & (split.language == "all")
            & (split.category == "all-shared") & (split.measure == "topk_share")
        ].iloc[0]  # fmt: skip
        rows.setdefault(
            "claim (ii): all-shared share of the top-K contributors, correct - incorrect rows", {}
        )[task] = _cell(100 * s["diff"], 100 * s.ci_low, 100 * s.ci_high)
        a = assoc[
            (assoc.task == task) & (assoc.language == "all") & (assoc.measure == "shared_share")
            & (assoc.outcome == "greedy_match")
        ].iloc[0]  # fmt: skip
        rows.setdefault("claim (iii): r(a row's shared share, answered correctly)", {})[task] = (
            _cell(a.r, a.ci_low, a.ci_high, "+.2f")
        )
        t = sim[(sim.task == task) & (sim.layer.astype(str) == "all")]
        t = t[t.threshold == t.threshold.min()]
        for r in t.itertuples():
            label = f"language similarity: Mantel r (p), co-activation vs {r.distance} distance"
            cell = f"{r.statistic:+.2f} (p = {r.p_value:.3g})"
            rows.setdefault(label, {})[task] = f"**{cell}**" if r.p_value < 0.05 else cell
        (out / task).mkdir(parents=True, exist_ok=True)
        for f in (*KEEP, *EXTRA, "run-grid.json"):
            if (run / task / f).exists():
                shutil.copy2(run / task / f, out / task / f)
    shutil.copytree(p, out / "paper", dirs_exist_ok=True)
    for f in ("report.html", "grid.json"):
        if (run / f).exists():
            shutil.copy2(run / f, out / f)
    print(f"Made by `{info.get('command', '?')}` at commit {info.get('commit', '?')}"
          + (" (uncommitted changes)" if info.get("dirty") else "") + ".\n")  # fmt: skip
    frame = pd.DataFrame.from_dict(rows, orient="index")[tasks].rename_axis("the paper's claim")
    print(frame.reset_index().to_markdown(index=False))
    print()
    for line in info["headlines"].get("i", [])[:1]:
        print(f"* {line}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
