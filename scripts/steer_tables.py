"""Markdown tables of ``tl-multineuron steer`` results for README / docs.

    python scripts/steer_tables.py docs/steer results/steer results/steer_bench

For each task directory under the results directories (``TASK/accuracy``,
``TASK/language``): copies the result files to OUT/TASK/ and writes OUT/steering.md with
the search (best configurations), the held-out comparison and the language-control table, each
under the command and commit that made it (read from the run files).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tl_multineuron.steering.study import verdict as steering_verdict


def _ci(d: float, lo: float, hi: float, fmt: str = "+.2f") -> str:
    return f"{d:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _commit(run: dict) -> str:
    c = run.get("commit", "?")
    dirty = " with uncommitted changes" if run.get("dirty") else ""
    return f"tl_multineuron at commit {c}{dirty}"


def _run(d: Path, name: str) -> dict:
    f = d / name
    return json.loads(f.read_text()) if f.exists() else {}


def accuracy_section(task: str, d: Path) -> list[str]:
    run = _run(d, "run-steer-accuracy.json")
    surface = pd.read_csv(d / "search.csv")
    comp = pd.read_csv(d / "heldout.csv")
    languages = set(comp["language"])
    verdict = {
        "chosen": comp["condition"].iloc[0],
        **steering_verdict(comp, "en" if "en" in languages else "__none__"),
    }
    out = [
        f"### {task}: accuracy steering",
        "",
        f"Made by `{run.get('command', '?')}` ({_commit(run)}).",
        "",
        "Search on the calibration items (mean change vs no steering; the 5 configurations with "
        "the largest non-English log-prob gain; all of them in `search.csv`):",
        "",
    ]
    top = surface.sort_values("d_logprob_non_en", ascending=False).head(5)
    out.append(
        top[["config", "d_logprob_non_en", "d_accuracy_non_en", "d_logprob_en", "d_accuracy_en"]]
        .round(3)
        .to_markdown(index=False)
    )
    out += [
        "",
        f"Chosen: **{verdict.get('chosen')}**. Held-out items (paired by item and language, 95% "
        "bootstrap intervals; vs random: equal-size random neurons in the same layers, seeds "
        "pooled):",
        "",
    ]
    rows = []
    for lang, g in comp.groupby("language", sort=False):
        r = {"language": lang}
        for ref in ("none", "random"):
            for metric in ("accuracy", "logprob"):
                c = g[(g.reference == ref) & (g.metric == metric)]
                if len(c):
                    c = c.iloc[0]
                    if ref == "none" and metric == "accuracy":
                        r["accuracy % (steered vs none)"] = (
                            f"{c['value']:.1f} vs {c['reference_value']:.1f}"
                        )
                    unit = "Δ acc" if metric == "accuracy" else "Δ log-prob"
                    r[f"{unit} vs {ref}"] = _ci(c["delta"], c["ci_low"], c["ci_high"])
        rows.append(r)
    out.append(pd.DataFrame(rows).to_markdown(index=False))
    met = verdict.get("met")
    out += [
        "",
        f"Target (non-English accuracy gain with a paired interval above 0, English loss at "
        f"most 1 point): **{'met' if met else 'not met'}** (non-English "
        f"{verdict.get('non_english_delta', float('nan')):+.2f} points "
        f"[{verdict.get('non_english_ci', [float('nan')] * 2)[0]:+.2f}, "
        f"{verdict.get('non_english_ci', [float('nan')] * 2)[1]:+.2f}])."
        + ("" if "en" in languages else " No English rows: the English condition does not apply."),
        "",
    ]
    return out


def language_section(task: str, d: Path) -> list[str]:
    run = _run(d, "run-steer-language.json")
    table = pd.read_csv(d / "language_control.csv")
    ident = pd.read_csv(d / "identifier.csv")
    out = [
        f"### {task}: output-language control",
        "",
        f"Made by `{run.get('command', '?')}` ({_commit(run)}).",
        "",
        "Identifier (lingua, restricted to the task's languages) accuracy on the task's gold "
        "answers (%):",
        "",
        ident.set_index("language")[["accuracy"]].round(1).T.to_markdown(index=False),
        "",
        "Per target: language control (LC), relevance (Rel), harmonic mean (HM), % with 95% "
        "bootstrap intervals over items; ΔHM vs no steering (paired). For each method its "
        "strength with the largest HM is shown (chosen on these items: optimistic); the full "
        "sweep is in `language_control.csv`.",
        "",
    ]
    rows = []
    for (t, m), g in table.groupby(["target", "method"], sort=False):
        r = g.sort_values("harmonic_mean", ascending=False).iloc[0]
        rows.append(
            {
                "target": t,
                "method": m if m in ("none", "deactivate") else f"{m} x{r['strength']:g}",
                "LC": _ci(r["language_control"], r["language_control_low"],
                          r["language_control_high"], ".0f"),
                "Rel": _ci(r["relevance"], r["relevance_low"], r["relevance_high"], ".0f"),
                "HM": _ci(r["harmonic_mean"], r["harmonic_mean_low"], r["harmonic_mean_high"],
                          ".0f"),
                "ΔHM vs none": _ci(r["d_hm_vs_none"], r["d_hm_vs_none_low"],
                                   r["d_hm_vs_none_high"], "+.0f"),
                "identifier reliable": bool(r["identifier_reliable"]),
            }
        )  # fmt: skip
    out += [pd.DataFrame(rows).to_markdown(index=False), ""]
    return out


def main(out: Path, roots: list[Path]) -> None:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    lines = [
        "# Steering on the embedded Gemma 3 270M",
        "",
        f"Tables written by `python scripts/steer_tables.py {out} "
        f"{' '.join(map(str, roots))}` at commit {head.stdout.strip()} from the run files named "
        "under each table (a later results directory wins where two hold the same study).",
        "",
    ]
    found: dict[tuple[str, str], Path] = {}
    for root in roots:
        for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for kind, marker in (("accuracy", "heldout.csv"), ("language", "language_control.csv")):
                if (task_dir / kind / marker).exists():
                    found[(task_dir.name, kind)] = task_dir / kind
    files = {
        "accuracy": ("search.csv", "heldout.csv", "chosen.json", "run-steer-accuracy.json"),
        "language": ("language_control.csv", "identifier.csv", "generations.csv",
                     "run-steer-language.json"),
    }  # fmt: skip
    for (task, kind), d in sorted(found.items()):
        dest = out / task
        dest.mkdir(parents=True, exist_ok=True)
        for f in files[kind]:
            if (d / f).exists():
                shutil.copy(d / f, dest / f)
        lines += (accuracy_section if kind == "accuracy" else language_section)(task, d)
    (out / "steering.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(x) for x in sys.argv[2:]])
