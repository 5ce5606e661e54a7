"""Where one ``score_answers`` call spends its time: a cProfile of the scorer under edits.

The task's last ``--items`` items x languages, ``--edits`` edits (none, then deactivations of
random 10% neuron sets), scope ``last``, under ``--attention``; prints the call's wall time and
the profile's entries by cumulative time (the unembedding is ``output_logits``, the suffix
forward the model's ``forward``, the prompt pass ``block_pass``). Run with nothing else on the
machine.

    python benchmarks/profile_scorer.py [--task qa] [--items 24] [--edits 8]
        [--attention auto|eager|sdpa] [--top 45]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from bench_scorer_conditions import rows_and_edits  # the same rows and edits

import tl_multineuron as tlm
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.experiments.scoring import score_answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--task", default="qa")
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--edits", type=int, default=8)
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--top", type=int, default=45)
    args = ap.parse_args()
    model = tlm.load_model(args.model)
    rows, edits = rows_and_edits(model, args.task, args.items, args.edits)
    print(versions_line())
    print(
        f"{args.task}: {len(rows)} rows, {sum(len(a) for a in rows.answers)} answer tokens, "
        f"{len(edits)} edits, attention {args.attention}"
    )
    score_answers(model, rows, [None], attention=args.attention)  # warm-up
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    score_answers(model, rows, edits, attention=args.attention)
    prof.disable()
    print(f"score_answers: {time.perf_counter() - t:.2f} s")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
