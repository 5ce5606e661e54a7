"""Markdown tables of one main-job run (``tl-multineuron grid``) for README / docs.

    python scripts/grid_tables.py results/main docs/grid > /tmp/tables.md

Reads RUN/grid.json and RUN/TASK/{comparisons,summary}.csv and RUN/TASK/run-grid.json for every
task of the run, copies the per-task result files (comparisons, summary, layer fractions, run
file) to OUT/TASK/ and the report and grid.json to OUT/, and prints one table of the paired
comparisons (accuracy and gold log-prob side by side) under the command and commit that made
it, then one line per task on each of the paper's claims, decided by the 95% interval alone (no
hand-picked wording).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

KEEP = ("comparisons.csv", "summary.csv", "layer_fractions.csv", "run-grid.json")


def _short(condition: str) -> str:
    name = condition.split(" (")[0]
    return name.replace("deactivate", "deact.").replace("amplify", "amp.")


def _ci(r: pd.Series, fmt: str) -> str:
    return f"{r.delta:{fmt}} [{r.ci_low:{fmt}}, {r.ci_high:{fmt}}]"


def comparison_rows(task: str, comp: pd.DataFrame) -> list[dict]:
    rows = []
    for (cond, ref), g in comp.groupby(["condition", "reference"], sort=False):
        acc = g[g.metric == "accuracy"].iloc[0]
        lp = g[g.metric == "logprob"].iloc[0]
        rows.append(
            {
                "task": task,
                "condition": _short(cond),
                "vs": _short(ref),
                "accuracy %": f"{acc.value:.1f} vs {acc.reference_value:.1f}",
                "Δ accuracy [95% CI]": _ci(acc, "+.1f"),
                "p (McNemar)": f"{acc.p_value:.2g}",
                "Δ log-prob [95% CI]": _ci(lp, "+.2f"),
                "p (Wilcoxon)": f"{lp.p_value:.2g}",
                "seeds": f"{int(acc.n_seeds)} vs {int(acc.n_seeds_reference)}",
                "set size": f"{acc.set_size:.0f}" if pd.notna(acc.set_size) else "-",
            }
        )
    return rows


def find_comparison(
    comp: pd.DataFrame, cond: str, ref: str, metric: str = "accuracy"
) -> pd.Series | None:
    m = (
        comp.condition.str.startswith(cond)
        & comp.reference.str.startswith(ref)
        & (comp.metric == metric)
    )
    return comp[m].iloc[0] if m.any() else None


def _sign(r: pd.Series | None) -> str:
    if r is None:
        return "not run"
    if r.ci_high < 0:
        return f"lower than B ({r.delta:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}])"
    if r.ci_low > 0:
        return f"higher than B ({r.delta:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}])"
    return f"no difference shown ({r.delta:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}])"


def claims(task: str, comp: pd.DataFrame) -> list[str]:
    """Accuracy-point verdicts on the paper's claims, each from one paired 95% interval."""
    out = []
    for ref in ("deactivate random", "deactivate matched"):
        out.append(
            f"| {task} | deact. all-shared vs {_short(ref)} | "
            f"{_sign(find_comparison(comp, 'deactivate all-shared', ref))} |"
        )
    spec = find_comparison(comp, "deactivate specific", "none")
    out.append(f"| {task} | deact. specific vs none | {_sign(spec)} |")
    amps = sorted({c for c in comp.condition if c.startswith("amplify") and "all-shared" in c})
    for a in amps:
        alpha = a.split()[1]
        vs_none = _sign(find_comparison(comp, a, "none"))
        out.append(f"| {task} | amp. {alpha} all-shared vs none | {vs_none} |")
        ctrl = find_comparison(comp, a, f"amplify {alpha} random")
        if ctrl is not None:
            out.append(
                f"| {task} | amp. {alpha} all-shared vs amp. {alpha} random | {_sign(ctrl)} |"
            )
    return out


def main(run_dir: str, out_dir: str) -> None:
    run, out = Path(run_dir), Path(out_dir)
    grid = json.loads((run / "grid.json").read_text())
    rows, verdicts, made = [], [], []
    for task in grid["tasks"]:
        d = run / task
        if not (d / "comparisons.csv").exists():
            print(f"<!-- {task}: no comparisons.csv in {d} (not run) -->")
            continue
        comp = pd.read_csv(d / "comparisons.csv")
        rows += comparison_rows(task, comp)
        verdicts += claims(task, comp)
        (out / task).mkdir(parents=True, exist_ok=True)
        for f in KEEP:
            if (d / f).exists():
                shutil.copy2(d / f, out / task / f)
        info = json.loads((d / "run-grid.json").read_text())
        made.append(
            f"{task}: `{info.get('command', '?')}` at commit {info.get('commit', '?')}"
            + (" (uncommitted changes)" if info.get("dirty") else "")
        )
    if (run / "report.html").exists():
        shutil.copy2(run / "report.html", out / "report.html")
    shutil.copy2(run / "grid.json", out / "grid.json")
    print("Made by " + "; ".join(made) + ".\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print("\nThe paper's claims, per task (accuracy points, paired 95% interval):\n")
    print("| task | comparison (A vs B) | accuracy of A, paired difference [95% CI] |")
    print("| --- | --- | --- |")
    print("\n".join(verdicts))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
