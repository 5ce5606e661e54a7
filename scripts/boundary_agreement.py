"""Do one-pass scoring and generation agree, with and without leading spaces on the answers?

For each built-in task (the last N items, every language), once as built in and once with
every answer's leading whitespace stripped (the answer delimiter ``auto`` restores it):
one-pass ``greedy_match`` vs generation's prefix match (tokens) and its text match, first-token
match vs both, and the answer-boundary warnings. Writes a markdown table.

    python scripts/boundary_agreement.py [--items 48] [--out docs/accuracy/boundary_agreement.md]
"""

from __future__ import annotations

import argparse
import subprocess
import warnings
from pathlib import Path

import pandas as pd

import tl_multineuron as tlm
from tl_multineuron.experiments.scoring import answer_rows, score_answers


def stripped(ds: tlm.ParallelDataset) -> tlm.ParallelDataset:
    items = tuple(
        tlm.ParallelItem(it.item_id, it.prompts, {x: a.lstrip() for x, a in it.answers.items()})
        for it in ds.items
    )
    return tlm.ParallelDataset(items, ds.languages, ds.name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--out", default="docs/accuracy/boundary_agreement.md")
    args = ap.parse_args()
    model = tlm.load_model()
    print(tlm.versions_line(), f"| scoring path: {tlm.scoring_path(model)}", flush=True)
    out, differ = [], []
    for task in tlm.list_tasks():
        full = tlm.load_task(task)
        base = full.slice(len(full) - args.items)
        for fmt, ds in (("as built in", base), ("leading spaces stripped", stripped(base))):
            pairs = [(it, x) for it in ds.items for x in ds.languages]
            rows = answer_rows(
                model, [it.prompts[x] for it, x in pairs], [ds.target(it, x) for it, x in pairs]
            )
            (sc,) = score_answers(model, rows)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", tlm.AnswerBoundaryWarning)
                ev = tlm.evaluate(model, ds)
            g = sc.greedy_match.numpy()
            for i in (g != ev.text_match.to_numpy()).nonzero()[0]:
                r = ev.iloc[i]
                differ.append(
                    {
                        "task": task,
                        "answers": fmt,
                        "item": r.item_id,
                        "language": r.language,
                        "gold": repr(r.answer),
                        "generated": repr(r.generated),
                        "greedy_match": bool(g[i]),
                        "prefix_match": bool(r.prefix_match),
                        "text_match": bool(r.text_match),
                    }
                )
            out.append(
                {
                    "task": task,
                    "answers": fmt,
                    "rows": len(pairs),
                    "greedy_match %": round(100 * g.mean(), 1),
                    "prefix_match %": round(100 * ev.prefix_match.mean(), 1),
                    "text_match %": round(100 * ev.text_match.mean(), 1),
                    "first_token_match %": round(100 * ev.first_token_match.mean(), 1),
                    "greedy != prefix": int((g != ev.prefix_match.to_numpy()).sum()),
                    "greedy != text": int((g != ev.text_match.to_numpy()).sum()),
                    "greedy but not first token": int((g & ~ev.first_token_match.to_numpy()).sum()),
                    "boundary warnings": sum(
                        issubclass(w.category, tlm.AnswerBoundaryWarning) for w in caught
                    ),
                }
            )
            print(out[-1], flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    table = pd.DataFrame(out).to_markdown(index=False)
    Path(args.out).write_text(
        f"# One-pass scoring vs generation, both answer formats\n\n"
        f"`python scripts/boundary_agreement.py --items {args.items}` at commit {commit}; "
        f"{tlm.versions_line()}; embedded Gemma 3 270M, the last {args.items} items of each "
        f"task, every language.\n\n{table}\n\n"
        f"## Rows where greedy_match and the text match differ\n\n"
        f"{pd.DataFrame(differ).to_markdown(index=False) if differ else 'none'}\n",
        encoding="utf-8",
    )
    print(table)


if __name__ == "__main__":
    main()
