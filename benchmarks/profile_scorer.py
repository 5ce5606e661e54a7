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

import torch

import tl_multineuron as tlm
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.experiments.scoring import answer_rows, score_answers


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
    ds = tlm.load_task(args.task)
    pairs = [(it, x) for it in ds.items[-args.items :] for x in ds.languages]
    rows = answer_rows(
        model, [it.prompts[x] for it, x in pairs], [ds.target(it, x) for it, x in pairs]
    )
    cfg = model.cfg

    def random_set(seed: int) -> tlm.NeuronSet:
        g = torch.Generator().manual_seed(seed)
        return tlm.NeuronSet(torch.rand(cfg.n_layers, cfg.d_mlp, generator=g) < 0.1)

    edits = [None] + [lambda b, s=s: tlm.deactivate(random_set(s)) for s in range(args.edits - 1)]
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
