"""Token-level statistics (LAPE's ``over_zero`` / ``n``, Act-Prob-90p's two passes) against a
bare forward over the same token rows, in one run.

Rows: running text per language, the built-in default of ``tl-multineuron specificity`` (the
first ``--items`` items of a task, prompt + gold answer, one text per row; ``--window``: any
of the run's windows, e.g. ``lape:64``). Printed, in seconds and as ratios:

* floor: a bare forward of the wrapped HF decoder over the same rows (no hooks, no LM head):
  what reading every position's gate activation cannot avoid;
* counts: :func:`tl_multineuron.record_token_stats` (LAPE);
* act-prob: :func:`tl_multineuron.record_act_prob` (Act-Prob-90p: its authors' two passes, a
  quantile per batch then the shares above it), against twice the floor.

Target (issue "LAPE on running text"): the counts at the bare-forward floor (<= 1.3x). Run with
nothing else on the machine.

    python benchmarks/bench_token_stats.py [--model gemma-3-270m] [--task facts] [--items 64]
        [--window N] [--batch 8]
"""

from __future__ import annotations

import argparse

import torch
from bench_specificity import timed  # the best of a few runs, as every bench here

import tl_multineuron as tlm
from tl_multineuron.backends.tl_compat import hf_model
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.sharing.recording import pad_ids
from tl_multineuron.sharing.token_batches import token_rows
from tl_multineuron.sharing.token_stats import token_site


@torch.inference_mode()
def bare_forward(model, rows: list[list[int]], batch: int) -> None:
    """The HF decoder over ``rows`` in batches of ``batch`` (right-padded), nothing else."""
    hf = hf_model(model)
    for s in range(0, len(rows), batch):
        toks, mask = pad_ids(model, rows[s : s + batch], "right")
        hf.model(input_ids=toks, attention_mask=mask)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--task", default="facts")
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--window", default=None)
    ap.add_argument("--batch", type=int, default=8, help="rows per pass (the run's default)")
    args = ap.parse_args()
    model = tlm.load_model(args.model)
    print(versions_line(), flush=True)
    print(f"model {args.model}; torch threads {torch.get_num_threads()}")
    corpus = tlm.corpus_from_dataset(tlm.load_task(args.task).head(args.items))
    rows = [r for x in corpus.languages for r in token_rows(model, corpus, x, args.window)]
    n_tok = sum(len(r) for r in rows)
    kw = dict(window=args.window, batch_size=args.batch)
    t_floor = timed(lambda: bare_forward(model, rows, args.batch))
    t_counts = timed(lambda: tlm.record_token_stats(model, corpus, **kw))
    t_prob = timed(lambda: tlm.record_act_prob(model, corpus, **kw))
    site = token_site(model)
    print(f"{corpus.name}: {len(rows)} rows ({len(corpus.languages)} languages, window "
          f"{args.window}), {n_tok} tokens; site {site}")  # fmt: skip
    for name, t, ratio in [
        ("floor (bare HF decoder forward)", t_floor, ""),
        ("counts (LAPE)", t_counts, f"{t_counts / t_floor:.2f}x floor (target <= 1.3x)"),
        ("act-prob (two passes)", t_prob, f"{t_prob / (2 * t_floor):.2f}x twice the floor"),
    ]:
        print(f"  {name:34s} {t:7.2f} s  {n_tok / t:8.0f} tok/s   {ratio}")


if __name__ == "__main__":
    main()
