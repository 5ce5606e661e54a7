"""The scorer under edits: rows continuing shared few-shot prefixes vs whole prompts.

``score_answers`` over one task's last ``--items`` items x languages with ``--edits`` edits
(none, then deactivations of random 10% neuron sets), timed end to end (prompt pass and every
edit's answer pass) two ways, interleaved ``--repeat`` times:

* shared: the default path (every prefix group's prefix runs once, the rows of each plain
  block continue it, the cache compacted to the whole-prompt layout);
* whole: the same blocks from whole prompts (``answer_blocks.prefix_groups`` replaced by one
  that finds no group: the path a zero-shot prompt takes).

It answers whether the conditions' passes cost more from a continued, compacted cache; the
log-probs of the two paths are compared too. ``--compare attention`` times the default path
two other ways instead: every pass through SDPA (``attention='sdpa'``, what ``auto`` picks where
the model allows it) vs eager attention (what the scorer ran before), with their log-probs and
greedy matches compared. ``--compare metrics``: the per-position metrics over the vocabulary
made one block of it at a time (``blocked``, the default where the unembedding is linear:
:mod:`tl_multineuron.experiments.answer_metrics`) vs the whole vocabulary at once
(``whole-vocab``, what the scorer did before), with ranks compared too. ``--scope all`` scores
every position of prompt and answer (the specificity matrix's scope). Run with nothing else on
the machine.

    python benchmarks/bench_scorer_conditions.py [--task qa] [--items 8] [--edits 5]
        [--repeat 2] [--model gemma-3-270m] [--compare prefix|attention|metrics]
        [--scope last|all]
"""

from __future__ import annotations

import argparse
import time

import torch

import tl_multineuron as tlm
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.experiments import answer_blocks, answer_metrics
from tl_multineuron.experiments.scoring import AnswerRows, answer_rows, score_answers


def rows_and_edits(model, task: str, items: int, n_edits: int) -> tuple[AnswerRows, list]:
    """The task's last ``items`` items x languages as scorer rows, and ``n_edits`` edits: none,
    then deactivations of random 10% neuron sets (seeds 0, 1, ...)."""
    ds = tlm.load_task(task)
    pairs = [(it, x) for it in ds.items[-items:] for x in ds.languages]
    rows = answer_rows(
        model, [it.prompts[x] for it, x in pairs], [ds.target(it, x) for it, x in pairs]
    )
    cfg = model.cfg

    def random_set(seed: int) -> tlm.NeuronSet:
        g = torch.Generator().manual_seed(seed)
        return tlm.NeuronSet(torch.rand(cfg.n_layers, cfg.d_mlp, generator=g) < 0.1)

    return rows, [None] + [lambda b, s=s: tlm.deactivate(random_set(s)) for s in range(n_edits - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--task", default="qa")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--edits", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--compare", choices=("prefix", "attention", "metrics"), default="prefix")
    ap.add_argument("--scope", choices=("last", "all"), default="last")
    args = ap.parse_args()
    model = tlm.load_model(args.model)
    rows, edits = rows_and_edits(model, args.task, args.items, args.edits)
    groups, linear = answer_blocks.prefix_groups, answer_metrics.linear_unembedding

    def run(way: str) -> tuple[float, list]:
        shared = way != "whole"
        answer_blocks.prefix_groups = groups if shared else (lambda *a, **k: ([], None))
        if way == "whole-vocab":
            answer_metrics.linear_unembedding = lambda m: None
        attention = way if way in ("sdpa", "eager") else "auto"
        try:
            t = time.perf_counter()
            out = score_answers(model, rows, edits, attention=attention, scope=args.scope)
            return time.perf_counter() - t, out
        finally:
            answer_blocks.prefix_groups = groups
            answer_metrics.linear_unembedding = linear

    new, old = {
        "prefix": ("shared", "whole"),
        "attention": ("sdpa", "eager"),
        "metrics": ("blocked", "whole-vocab"),
    }[args.compare]
    if args.compare == "metrics" and linear(model) is None:
        raise SystemExit(f"{args.model}: its unembedding is not linear here; nothing to compare")
    times: dict[str, list[float]] = {new: [], old: []}
    outs = {}
    for _ in range(args.repeat):
        for way in (new, old):
            t, outs[way] = run(way)
            times[way].append(t)
    pairs = list(zip(outs[new], outs[old], strict=True))
    diff = max(float((a.logprob - b.logprob).abs().max()) for a, b in pairs)
    flips = sum(int((a.greedy_match != b.greedy_match).sum()) for a, b in pairs)
    ranks = sum(int((a.first_rank != b.first_rank).sum()) for a, b in pairs)
    firsts = sum(int((a.first_token != b.first_token).sum()) for a, b in pairs)
    print(versions_line())
    print(
        f"{args.task}: {len(rows)} rows x {len(edits)} edits; {new} "
        f"{', '.join(f'{t:.2f} s' for t in times[new])}; {old} "
        f"{', '.join(f'{t:.2f} s' for t in times[old])}; best {old} / best {new} "
        f"{min(times[old]) / min(times[new]):.2f}x; max |logprob difference| {diff:.1e}; "
        f"greedy matches that differ {flips} of {len(rows) * len(edits)}; ranks that differ "
        f"{ranks}, first tokens {firsts}; scope {args.scope}"
    )


if __name__ == "__main__":
    main()
