"""Shared prompt prefixes computed once, per built-in task, against whole prompts, in one run.

For every built-in task (the first ``--items`` items x its languages), three passes are timed
with the shared prefix (``sharing.prompt_prefix``: each language's few-shot demonstrations run
once) and without it:

* recording: :func:`tl_multineuron.iter_dataset` (the pass behind ``analyze``, the grid's and
  attribution's recording), ``share_prefixes=True`` vs ``False``, batch 8 items;
* generation: ``generate_greedy`` (8 new tokens, batches of 16 rows), prefixes once
  (``experiments.shared_generation``) vs whole prompts;
* scorer prompt pass: the scorer's scope-``last`` prefix-cache pass over the task's rows
  (prompts minus their last token; ``answer_blocks.block_pass`` over its blocks of 64 rows):
  the same blocks, with every prefix group's prefix run once and the rows' remainders continuing
  it (``shared_blocks``, the cache compacted to the plain layout) vs whole prompts.

Tokens computed are real tokens (pads not counted): whole prompts, or each prompt's remainder
plus each shared prefix once. A zero-shot case follows: the same items with only each prompt's
last block (after its last blank line, or last line), where nothing long is shared; its target
is no slowdown (<= 1.03x). Targets (issue "shared prompt prefixes"): recording >= 4x faster on
nli and qa. Run with nothing else on the machine.

    python benchmarks/bench_prefix_sharing.py [--model gemma-3-270m] [--items 24]
        [--tasks nli,qa,...] [--repeat 2] [--passes "recording,recording zero-shot"]
"""

from __future__ import annotations

import argparse

import torch
from bench_specificity import timed  # the best of a few runs, as every bench here

import tl_multineuron as tlm
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.data.datasets import ParallelDataset, ParallelItem
from tl_multineuron.experiments.answer_blocks import block_pass, plan_blocks, shared_blocks
from tl_multineuron.experiments.scoring import answer_rows
from tl_multineuron.sharing.recording import encode


def zero_shot(ds: ParallelDataset) -> ParallelDataset:
    """Each prompt's last block: no demonstrations."""

    def last(text: str) -> str:
        return text.rsplit("\n\n", 1)[-1] if "\n\n" in text else text.rsplit("\n", 1)[-1]

    items = tuple(
        ParallelItem(it.item_id, {x: last(p) for x, p in it.prompts.items()}, it.answers, it.task)
        for it in ds.items
    )
    return ParallelDataset(items, ds.languages, ds.name + "-zero-shot", ds.answer_delimiter)


def recording(model, ds: ParallelDataset, repeat: int) -> tuple[float, float, int, int]:
    """Seconds shared, seconds whole, tokens shared, tokens whole."""
    whole = sum(len(encode(model, it.prompts[x])) for it in ds.items for x in ds.languages)
    shared = tlm.language_prefixes(model, ds)
    saved = sum(n * (len(ds) - 1) for n in shared.values())

    def run(share: bool) -> None:
        for _ in tlm.iter_dataset(model, ds, batch_size=8, share_prefixes=share):
            pass

    return timed(lambda: run(True), repeat), timed(lambda: run(False), repeat), whole - saved, whole


def prompt_pass(model, ds: ParallelDataset, repeat: int) -> tuple[float, float, int, int]:
    """The scorer's prefix-cache prompt pass, shared-prefix blocks vs plain blocks."""
    items = [(it, x) for it in ds.items for x in ds.languages]
    rows = answer_rows(
        model, [it.prompts[x] for it, x in items], [ds.target(it, x) for it, x in items]
    )
    plain = plan_blocks(rows, 64)
    whole = sum(len(p) - 1 for p in rows.prompts)
    computed, seen = 0, set()
    for block, prefix in shared_blocks(model, rows, 64, True, lambda n, w: True):
        shared = prefix()  # (prefixes, index) where a block's rows continue prefixes, else None
        cuts = [0] * len(block)
        if shared is not None:
            lengths, index = shared[0].lengths, shared[1]
            cuts = torch.where(index >= 0, lengths[index.clamp_min(0)], 0).tolist()
            if id(shared[0]) not in seen:
                seen.add(id(shared[0]))
                computed += int(lengths.sum())  # every prefix itself, once
        computed += sum(len(rows.prompts[r]) - 1 - c for r, c in zip(block, cuts, strict=True))

    def run(blocks) -> None:  # under the scorer's attention (SDPA where the model allows it)
        with tlm.efficient_attention(model):
            for block, prefix in blocks:
                block_pass(model, rows, block, "last", False, True, prefix())

    def fresh():  # new prefixes each run: their own pass is part of the cost
        return shared_blocks(model, rows, 64, True, lambda n, w: True)

    t_shared = timed(lambda: run(fresh()), repeat)
    t_plain = timed(lambda: run([(b, lambda: None) for b in plain]), repeat)
    return t_shared, t_plain, computed, whole


def generation(model, ds: ParallelDataset, repeat: int) -> tuple[float, float, int, int]:
    """Greedy generation (``generate_greedy``, 8 new tokens, batches of 16 rows) over the
    task's prompts, the prefixes run once vs whole prompts; tokens are the prompts' (the
    generated steps are the same on both sides)."""
    from tl_multineuron.experiments.shared_generation import batch_prefixes

    prompts = [it.prompts[x] for it in ds.items for x in ds.languages]
    ids = [encode(model, p) for p in prompts]
    whole = sum(len(p) for p in ids)
    computed, seen = whole, set()
    at = batch_prefixes(model, ids)
    for s in range(0, len(ids), 16):
        got = at(s, min(s + 16, len(ids)))
        if got is None:
            continue
        lengths, index = got[0].lengths, got[1]
        computed -= int(torch.where(index >= 0, lengths[index.clamp_min(0)], 0).sum())
        if id(got[0]) not in seen:
            seen.add(id(got[0]))
            computed += int(lengths.sum())

    def run(share: bool) -> None:
        tlm.generate_greedy(model, prompts, 8, batch_size=16, share_prefixes=share)

    return timed(lambda: run(True), repeat), timed(lambda: run(False), repeat), computed, whole


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--tasks", default=",".join(tlm.list_tasks()))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument(
        "--passes",
        default="recording,scorer prompt pass,generation,recording zero-shot",
        help="which rows, comma-separated (default: all four)",
    )
    args = ap.parse_args()
    passes = {x.strip() for x in args.passes.split(",")}
    model = tlm.load_model(args.model)
    print(versions_line(), flush=True)
    print(f"model {args.model}; torch threads {torch.get_num_threads()}; first {args.items} items")
    head = "| task | pass | tokens whole | tokens shared | whole (s) | shared (s) | speed-up |"
    print(head)
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for task in args.tasks.split(","):
        ds = tlm.load_task(task).head(args.items)
        cases = [
            ("recording", ds, recording),
            ("scorer prompt pass", ds, prompt_pass),
            ("generation", ds, generation),
            ("recording, zero-shot", zero_shot(ds), recording),
        ]
        for name, d, fn in cases:
            if name.replace(",", "") not in passes:
                continue
            t_s, t_w, n_s, n_w = fn(model, d, args.repeat)
            print(
                f"| {task} | {name} | {n_w:,} | {n_s:,} | {t_w:.2f} | {t_s:.2f} | "
                f"{t_w / t_s:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
