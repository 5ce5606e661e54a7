"""Where generation's text prefix match and one-pass ``greedy_match`` disagree.

Joins the unedited (``none``) rows of a grid run with a generation run of the same items
(``tl-multineuron evaluate`` or ``scripts/evaluate_builtin.py``: ``generations.csv`` with
``task, item_id, language, generated, prefix_match[, text_match]``) and counts, per task, the
rows where one-pass ``greedy_match`` differs from generation's token prefix match and from its
text match, with examples. ``greedy_match`` and ``prefix_match`` demand the gold answer's own
tokens; the text match accepts any tokenization of the same text (and NFKC / case folding).
A file written before ``text_match`` existed holds the text match under ``prefix_match``.

    python scripts/greedy_vs_prefix.py results/grid docs/accuracy/generations.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main(grid: str, generations: str) -> None:
    gens = pd.read_csv(generations)
    parts = [pd.read_csv(f) for f in sorted(Path(grid).glob("*/scores.csv"))]
    if not parts:
        sys.exit(f"{grid}: no */scores.csv")
    rows = pd.concat(parts)
    rows = rows[rows.target == "none"]
    j = rows.merge(gens, on=["task", "item_id", "language"], how="inner", suffixes=("", "_gen"))
    print(f"{len(j)} rows joined ({len(rows)} unedited grid rows, {len(gens)} generations)")
    if "text_match" not in j:  # an older file: its prefix_match is the text match
        j = j.rename(columns={"prefix_match": "text_match"})
    out = []
    for task, g in j.groupby("task", sort=False):
        row = {"task": task, "rows": len(g)}
        row["greedy_match %"] = round(100 * g.greedy_match.mean(), 1)
        if "prefix_match" in g:
            row["token prefix match %"] = round(100 * g.prefix_match.mean(), 1)
            row["greedy != token prefix"] = int((g.greedy_match != g.prefix_match).sum())
        row["text match %"] = round(100 * g.text_match.mean(), 1)
        row["text only"] = int((~g.greedy_match & g.text_match).sum())
        row["tokens only"] = int((g.greedy_match & ~g.text_match).sum())
        out.append(row)
        for _, r in g[g.greedy_match != g.text_match].head(3).iterrows():
            print(
                f"  {task} {r.item_id} {r.language}: gold {r.answer!r}, generated "
                f"{r.generated!r}, greedy_match={r.greedy_match}, text match={r.text_match}"
            )
    print(pd.DataFrame(out).to_markdown(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
