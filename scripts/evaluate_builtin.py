"""Accuracy of a model on every built-in task and language (docs/accuracy.md).

Run: python scripts/evaluate_builtin.py [--model gemma-3-270m] [--limit N] [--out docs/accuracy]
     [--tasks facts,qa]   # re-make only these tasks' rows; the others are kept from OUT
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from tl_multineuron import accuracy_table, evaluate, list_tasks, load_model, load_task
from tl_multineuron.experiments.evaluation import EvalConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="docs/accuracy")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tasks", help="comma-separated tasks to (re)run; others kept from --out")
    args = ap.parse_args()
    tasks = list(list_tasks()) if not args.tasks else [t.strip() for t in args.tasks.split(",")]
    model = load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    old = out / "generations.csv"
    if args.tasks and old.exists():
        prev = pd.read_csv(old, keep_default_na=False)
        frames.append(prev[~prev["task"].isin(tasks)])
    for task in tasks:
        ds = load_task(task)
        if args.limit:
            ds = ds.head(args.limit)
        t0 = time.perf_counter()
        df = evaluate(model, ds, EvalConfig(max_new_tokens=8, batch_size=args.batch_size))
        print(f"{task}: {len(df)} generations in {time.perf_counter() - t0:.0f}s", flush=True)
        frames.append(df)
        pd.concat(frames).to_csv(out / "generations.csv", index=False)
    order = {t: i for i, t in enumerate(list_tasks())}
    res = pd.concat(frames).sort_values("task", key=lambda s: s.map(order), kind="stable")
    res.to_csv(out / "generations.csv", index=False)
    with open(out / "accuracy.md", "w") as f:
        for metric in ("prefix_match", "text_match", "first_token_match"):
            f.write(
                f"\n{metric} accuracy (%), {args.model}, n items per task: "
                f"{res.groupby('task').item_id.nunique().to_dict()}\n\n"
            )
            f.write(accuracy_table(res, metric).to_markdown() + "\n")
    print((out / "accuracy.md").read_text())


if __name__ == "__main__":
    main()
