"""Tables of docs/faithful.md (issue 9) from analyze + attribute run directories (one per model).

For each model: category fractions (mean over layers and languages), the enrichment of each
category among the top-K neurons (pooled over layers and languages, 95% bootstrap interval
over items) for the contribution and effective scores, and the activity rules side by side.

Run: python scripts/faithful_tables.py RUN_DIR [RUN_DIR ...] [--out docs/faithful/tables.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tl_multineuron import AttributionStats, SharingStats
from tl_multineuron.sharing.classification import CATEGORY_NAMES

ORDER = list(reversed(CATEGORY_NAMES))


def _cell(est: float, lo: float, hi: float) -> str:
    return f"{est:.2f} [{lo:.2f}, {hi:.2f}]"


def tables(dirs: list[Path]) -> str:
    frac_rows, enr_rows, rule_rows = [], [], []
    for d in dirs:
        st = SharingStats.load(d / "stats.pt")
        at = AttributionStats.load(d / "attribution.pt")
        name = f"{at.meta['model']} ({st.n_layers} x {st.d_mlp})"
        frac = st.summary().mean(0)
        frac_rows.append({"model": name, **{c: round(float(frac[c]), 1) for c in ORDER}})
        for m, s in at.methods.items():
            est, lo, hi = (t.tolist() for t in s.enrichment_interval(over=(0, 1)))
            row = {"model": name, "score": f"{m} (top-{s.k})"}
            row.update({c: _cell(est[i], lo[i], hi[i]) for i, c in enumerate(CATEGORY_NAMES)})
            enr_rows.append({k: row[k] for k in ["model", "score", *ORDER]})
        rules = at.rules_frame()
        for _, r in rules.iterrows():
            row = {"model": name, "rule": r.rule}
            row.update({f"{c} %": round(r[f"{c} %"], 1) for c in CATEGORY_NAMES})
            row["top contributors non-activated %"] = round(
                r["top contributors non-activated %"], 1
            )
            row["all-shared enrichment"] = _cell(r["all-shared enrichment"], r.low, r.high)
            rule_rows.append(row)
        n_items = at.n_items
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    runs = [json.loads((d / "run-attribute.json").read_text()).get("command") for d in dirs]
    out = [
        f"Made by `python scripts/faithful_tables.py {' '.join(map(str, dirs))}` at commit "
        f"{commit}, from runs made by: " + "; ".join(f"`{c}`" for c in runs if c) + f" ({n_items} "
        "items each).\n",
        "Category fractions (% of neurons, mean over layers and languages, `post > 0`):\n",
        pd.DataFrame(frac_rows).to_markdown(index=False),
        "\nEnrichment among the top-K neurons per (item, language, layer): share / base rate, "
        "pooled over layers and languages, 95% bootstrap interval over items (200 Poisson "
        "replicates):\n",
        pd.DataFrame(enr_rows).to_markdown(index=False),
        "\nActivity rules side by side (threshold 0; contribution score):\n",
        pd.DataFrame(rule_rows).to_markdown(index=False),
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--out")
    args = ap.parse_args()
    text = tables(args.dirs)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
