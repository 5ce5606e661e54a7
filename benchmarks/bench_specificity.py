"""The deactivation matrix's cost per (method, language) cell against an analyze pass over the
same rows and against its own floor, in one run.

Rows: the last ``--items`` items of a task x its languages, each the prompt followed by the
gold answer (what the matrix scores). Printed, in seconds and as ratios:

* analyze: the recording pass (``tlm.analyze``) over the same texts (it stops after the last
  MLP: no unembedding);
* floor: what a cell cannot avoid -- a bare forward of the wrapped HF decoder over the same
  tokens (no hooks), then every position's final hidden state against ``W_U`` in chunks and a
  log-softmax (the log-likelihood of every position needs its logits over the whole
  vocabulary);
* cell: one deactivation condition through the one-pass scorer (scope ``all``), timed with
  ``--conditions`` conditions sharing the scorer's passes as the matrix shares them (per cell =
  total / conditions), and alone; with rows that share a few-shot prefix computing it once per
  condition (the default, :mod:`tl_multineuron.experiments.prefix_groups`) and without
  (``cache='none'``), with the positions each computes. The floor above counts every row's
  tokens: the shared path can go below it.

Target (issue "language specificity"): a cell <= 1.5x the analyze pass. Run with nothing else
on the machine.

    python benchmarks/bench_specificity.py [--model gemma-3-270m] [--task facts] [--items 16]
        [--conditions 8]
"""

from __future__ import annotations

import argparse
import time

import torch

import tl_multineuron as tlm
from tl_multineuron.backends.tl_compat import hf_model
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.data.datasets import ParallelDataset, ParallelItem
from tl_multineuron.experiments.prefix_groups import prefix_groups
from tl_multineuron.experiments.scoring import score_answers
from tl_multineuron.experiments.specificity import text_rows
from tl_multineuron.sharing.recording import encode, pad_ids


def timed(fn, repeat: int = 2) -> float:
    """The best of ``repeat`` runs (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def text_dataset(ds: ParallelDataset) -> ParallelDataset:
    """The rows as a dataset whose prompts are prompt + gold answer (what analyze records)."""
    items = tuple(
        ParallelItem(
            it.item_id, {x: it.prompts[x] + ds.target(it, x) for x in ds.languages}, {}, ds.name
        )  # fmt: skip
        for it in ds.items
    )
    return ParallelDataset(items, ds.languages, ds.name)


@torch.inference_mode()
def bare_floor(model, texts: list[str], batch: int, chunk: int = 1024) -> None:
    """The decoder over the rows (no hooks, no LM head), then every real position's final
    hidden state against ``W_U`` in chunks, log-softmax and the next token's entry: the
    unembedding the log-likelihood of every position cannot avoid."""
    hf = hf_model(model)
    W = hf.get_output_embeddings().weight  # [vocab, d_model]
    ids = [encode(model, t) for t in texts]
    for s in range(0, len(ids), batch):
        toks, mask = pad_ids(model, ids[s : s + batch], "right")
        h = hf.model(input_ids=toks, attention_mask=mask).last_hidden_state
        keep = mask[:, 1:].bool()
        hid, nxt = h[:, :-1][keep], toks[:, 1:][keep]
        for c in range(0, len(hid), chunk):
            logits = hid[c : c + chunk] @ W.T
            (logits.gather(-1, nxt[c : c + chunk, None]) - logits.logsumexp(-1, keepdim=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--task", default="facts")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--conditions", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64, help="rows per pass (the matrix's)")
    args = ap.parse_args()
    model = tlm.load_model(args.model)
    print(versions_line(), flush=True)
    print(f"model {args.model}; torch threads {torch.get_num_threads()}")
    ds = tlm.load_task(args.task)
    ev = ds.slice(len(ds) - args.items)
    rows, keys = text_rows(model, ev)
    n_tok = sum(len(p) + len(a) for p, a in zip(rows.prompts, rows.answers, strict=True))
    texts = [it.prompts[x] + ev.target(it, x) for it in ev.items for x in ev.languages]
    tds = text_dataset(ev)
    cfg = tlm.AnalysisConfig(batch_size=max(1, args.batch // len(ev.languages)))
    t_analyze = timed(lambda: tlm.analyze(model, tds, cfg))
    t_floor = timed(lambda: bare_floor(model, texts, args.batch))
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    g = torch.Generator().manual_seed(0)
    masks = [torch.rand(L, D, generator=g) < 0.01 for _ in range(args.conditions)]

    def edit(mask):
        iv = tlm.Intervention(tlm.NeuronSet(mask), "zero", positions="all")
        return lambda block: iv

    def cells(k: int, cache: str = "auto") -> None:
        score_answers(model, rows, [edit(m) for m in masks[:k]], scope="all",
                      batch_size=args.batch, max_rows=512, cache=cache)  # fmt: skip

    groups, alone = prefix_groups(rows)
    n_in = [len(p) + len(a) - 1 for p, a in zip(rows.prompts, rows.answers, strict=True)]
    distinct = sum(g.shared + sum(n_in[r] - g.shared for r in g.rows) for g in groups)
    distinct += sum(n_in[r] for r in alone)

    t_one = timed(lambda: cells(1))
    t_many = timed(lambda: cells(args.conditions), repeat=1) / args.conditions
    t_unshared = timed(lambda: cells(args.conditions, "none"), repeat=1) / args.conditions
    t_none = timed(lambda: score_answers(model, rows, [None], scope="all", batch_size=args.batch,
                                         max_rows=512))  # fmt: skip
    print(f"{args.task}: {len(keys)} rows ({len(ev)} items x {len(ev.languages)} languages), "
          f"{n_tok} tokens; positions per condition: {sum(n_in)} unshared, {distinct} with "
          f"shared prefixes ({len(groups)} groups, {len(alone)} rows alone)")  # fmt: skip
    lines = [
        ("analyze pass (no unembedding)", t_analyze, ""),
        ("floor (bare forward + W_U GEMM)", t_floor, f"{t_floor / t_analyze:.2f}x analyze"),
        ("scorer, no edit", t_none, f"{t_none / t_floor:.2f}x floor"),
        ("cell, alone", t_one, f"{t_one / t_analyze:.2f}x analyze, {t_one / t_floor:.2f}x floor"),
        (
            f"cell, {args.conditions} per pass",
            t_many,
            f"{t_many / t_analyze:.2f}x analyze, {t_many / t_floor:.2f}x floor "
            "(target <= 1.5x analyze)",
        ),
        (
            f"cell, {args.conditions} per pass, unshared",
            t_unshared,
            f"{t_unshared / t_floor:.2f}x floor; shared {t_many / t_unshared:.2f}x of it",
        ),
    ]
    for name, t, ratio in lines:
        print(f"  {name:34s} {t:7.2f} s   {ratio}")


if __name__ == "__main__":
    main()
