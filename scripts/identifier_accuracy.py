"""Why lingua, restricted to the task's languages: its accuracy on every built-in gold answer.

    python scripts/identifier_accuracy.py > docs/steer/identifier.md

Per task and language: the share of gold answers identified as their language by
(a) lingua restricted to the task's languages (what ``tl-multineuron steer`` uses) and
(b) lingua over all 75 of its languages (an open set, as a general-purpose identifier works).
"""

from __future__ import annotations

import subprocess

import lingua
import pandas as pd

import tl_multineuron as tlm
from tl_multineuron.steering.identifier import LanguageIdentifier


def main() -> None:
    full = lingua.LanguageDetectorBuilder.from_all_languages().build()
    rows = []
    for task in tlm.TASKS:
        ds = tlm.load_task(task)
        restricted = LanguageIdentifier(ds.languages)
        for x in ds.languages:
            answers = [it.answers[x].strip() for it in ds.items]
            got_r = restricted.detect(answers)
            got_f = full.detect_languages_in_parallel_of(answers)
            ok_f = sum(g is not None and g.iso_code_639_1.name.lower() == x for g in got_f)
            rows.append(
                {
                    "task": task,
                    "language": x,
                    "restricted": 100 * sum(g == x for g in got_r) / len(answers),
                    "all 75": 100 * ok_f / len(answers),
                }
            )
    df = pd.DataFrame(rows)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print("# Language identification of the built-in gold answers\n")
    print(
        f"`python scripts/identifier_accuracy.py` at commit {head.stdout.strip()}, lingua "
        "(lingua-language-detector) restricted to each task's languages vs over all its "
        "languages; % of the task's gold answers (all items) identified as their language.\n"
    )
    for name in ("restricted", "all 75"):
        print(f"## {name}\n")
        print(df.pivot(index="task", columns="language", values=name).round(1).to_markdown())
        print()


if __name__ == "__main__":
    main()
