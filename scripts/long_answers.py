"""Rows of the accuracy table (docs/accuracy.md) whose gold answer is longer than the 8 tokens that
``evaluate`` generated before it learned to generate at least the gold's length: re-evaluated
now and compared with the stored rows (``docs/accuracy/generations.csv``). No flip means the
table stands as it is; a flip is printed with its task, item and language.

    python scripts/long_answers.py [docs/accuracy/generations.csv]
"""

from __future__ import annotations

import sys

import pandas as pd

import tl_multineuron as tlm
from tl_multineuron.sharing.recording import answer_ids

OLD_MAX_NEW = 8


def main(path: str) -> None:
    stored = pd.read_csv(path)
    model = tlm.load_model()
    print(tlm.versions_line())
    flips, n = [], 0
    for task in tlm.list_tasks():
        ds = tlm.load_task(task)
        long = [
            (it, x)
            for it in ds.items
            for x in ds.languages
            if len(answer_ids(model, it.prompts[x], ds.target(it, x))) > OLD_MAX_NEW
        ]
        if not long:
            continue
        ids = {it.item_id for it, _ in long}
        sub = tlm.ParallelDataset(
            tuple(it for it in ds.items if it.item_id in ids), ds.languages, ds.name
        )
        now = tlm.evaluate(model, sub)
        keys = {(it.item_id, x) for it, x in long}
        now = now[[(i, x) in keys for i, x in zip(now.item_id, now.language, strict=True)]]
        j = now.merge(stored, on=["task", "item_id", "language"], suffixes=("", "_stored"))
        n += len(j)
        flips += [r for r in j.itertuples() if r.prefix_match != r.prefix_match_stored]
        print(
            f"{task}: {len(j)} rows with gold > {OLD_MAX_NEW} tokens, "
            f"{sum(r.task == task for r in flips)} flipped"
        )
    print(f"{n} rows re-evaluated, {len(flips)} prefix_match flips")
    for r in flips:
        print(
            f"  {r.task} {r.item_id} {r.language}: {r.prefix_match_stored} -> {r.prefix_match}"
            f" ({r.generated!r} vs {r.answer!r})"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/accuracy/generations.csv")
