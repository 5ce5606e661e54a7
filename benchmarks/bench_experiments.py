"""The experiment engine against its floor, per built-in task, in one run (embedded Gemma).

Rows: the last ``--items`` items of a task x its languages, scored with scope ``last`` and the
prefix cache, ``--conditions`` copies of one condition sharing every pass (as the grid shares
its conditions). Per task it prints:

* floor: what a condition cannot avoid -- a bare forward of the wrapped HF model over the
  recomputed positions (the last prompt token and the answer tokens) continuing the cached
  prefix, no hooks, plus a bare GEMM of the answer positions against ``W_U``; the prefix
  forward is shared by the conditions and counted once (amortized over them). The suffix
  forward is timed both with the conditions tiled over rows (a prefix-cache copy each) and
  folded into one row's positions (one cache, ``experiments.shared_prefix``); the floor is
  the cheaper, and the line "folding" says what folding bought, floor and scorer;
* per condition through the scorer: no edit, and one condition of each kind (static
  all-shared deactivated, dynamic all-shared deactivated, static all-shared x2, a static
  random control), each as time / floor, and the edit overhead (edited vs no edit);
* the recording pass (``analyze`` over the same rows) vs a bare forward over the prompts.

Targets (issue "experiments at the hardware floor"): <= 1.5x the floor per condition and an
edit overhead <= 1.15x on every task. Run with nothing else on the machine.

    python benchmarks/bench_experiments.py [--tasks facts,nli] [--items 48] [--conditions 8]
        [--calibration 64]
"""

from __future__ import annotations

import argparse
import copy
import time
from unittest import mock

import torch

import tl_multineuron as tlm
from tl_multineuron.backends.tl_compat import hf_model
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.experiments import scoring
from tl_multineuron.experiments.conditions import Condition, condition_edit, prepare_sets
from tl_multineuron.experiments.scoring import (
    answer_rows,
    block_pass,
    plan_blocks,
    score_answers,
    scoring_path,
)
from tl_multineuron.experiments.shared_prefix import fold_mask
from tl_multineuron.sharing.recording import encode as encode_prompt
from tl_multineuron.sharing.recording import pad_ids


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


@torch.inference_mode()
def floor(model, rows, C: int, batch: int, folded: bool) -> tuple[float, float, float]:
    """Seconds per condition: (prefix forward / C, bare suffix forward, bare W_U GEMM). The
    suffix forward runs the C conditions' positions tiled over rows (a cache copy each) or,
    ``folded``, as positions of one row each (one cache; see ``experiments.shared_prefix``);
    the cache copies are made outside the timed region either way."""
    base = hf_model(model).model  # the decoder without its LM head
    W_U = model.W_U.detach()
    dtype = model.cfg.dtype
    t_prefix = t_fwd = t_gemm = 0.0
    for block in plan_blocks(rows, batch):
        bp, t = timed(lambda block=block: block_pass(model, rows, block, "last", False, True))
        t_prefix += t
        n, S = len(block), bp.tokens.shape[1]
        kv = copy.deepcopy(bp.cache)
        am, pos = bp.kwargs["attention_mask"], bp.kwargs["position_ids"]
        if folded:
            mask, pos, toks = fold_mask(am, S, C, dtype), pos.repeat(1, C), bp.tokens.repeat(1, C)
        else:
            kv.reorder_cache(torch.arange(n).repeat(C))
            mask, pos, toks = am.repeat(C, 1), pos.repeat(C, 1), bp.tokens.repeat(C, 1)
        t0 = time.perf_counter()
        h = base(
            input_ids=toks, attention_mask=mask, position_ids=pos, cache=kv, use_cache=True
        ).last_hidden_state
        t = time.perf_counter() - t0
        t_fwd += t
        if folded:
            h = h.view(n, C, S, -1).transpose(0, 1).reshape(C * n, S, -1)
        sel = bp.answer_pos.repeat(C, 1)
        hs = h[sel].contiguous()
        _, t = timed(lambda hs=hs: hs @ W_U)
        t_gemm += t
    return t_prefix / C, t_fwd / C, t_gemm / C


@torch.inference_mode()
def bare_prompt_forward(model, prompts: list[str], batch: int = 8) -> float:
    base = hf_model(model).model
    total = 0.0
    ids = [encode_prompt(model, p) for p in prompts]
    for s in range(0, len(ids), batch):
        toks, mask = pad_ids(model, ids[s : s + batch], "right")
        _, t = timed(lambda toks=toks, mask=mask: base(input_ids=toks, attention_mask=mask))
        total += t
    return total


def task_report(model, task: str, n_items: int, C: int, batch: int, n_cal: int = 64) -> dict:
    ds = tlm.load_task(task)
    ev, cal = ds.slice(len(ds) - n_items), ds.slice(0, min(n_cal, len(ds) - n_items))
    sets = prepare_sets(model, ev, cal)
    pairs = [(it, x) for it in ev.items for x in ev.languages]
    prompts = [it.prompts[x] for it, x in pairs]
    rows = answer_rows(model, prompts, [ev.target(it, x) for it, x in pairs])
    n_ans = sum(len(a) for a in rows.answers)

    def edit_for(cond: Condition):  # the grid's own edit (one mask per layer where static)
        return condition_edit(sets.masks(cond), cond, sets)

    def per_condition(edit) -> float:
        _, t = timed(
            lambda: score_answers(
                model, rows, [edit] * C, cache="prefix", max_rows=C * batch, batch_size=batch
            )
        )
        return t / C

    tiled_floor = sum(floor(model, rows, C, batch, folded=False))
    f_prefix, f_fwd, f_gemm = floor(model, rows, C, batch, folded=True)
    fl = min(f_prefix + f_fwd + f_gemm, tiled_floor)  # the cheaper of the two layouts
    none = per_condition(None)
    with mock.patch.object(scoring, "folds", lambda m: False):
        none_tiled = per_condition(None)
    kinds = {
        "static all-shared off": Condition("all-shared", "zero"),
        "dynamic all-shared off": Condition("all-shared", "zero", mode="dynamic"),
        "static all-shared x2": Condition("all-shared", "scale", 2.0),
        "static random off": Condition("random", "zero", seed=0),
    }
    print(f"{task}: floor {fl:.2f}s, no edit {none:.2f}s per condition", flush=True)
    times = {}
    for k, c in kinds.items():  # each figure as soon as it is measured (a long run)
        times[k] = per_condition(edit_for(c))
        print(f"{task}: {k} {times[k]:.2f}s per condition", flush=True)
    _, t_rec = timed(lambda: tlm.analyze(model, ev, tlm.AnalysisConfig(batch_size=8)))
    t_bare = bare_prompt_forward(model, prompts)
    print(
        f"\n{task}: {len(rows)} rows, {n_ans} answer tokens, mean prompt "
        f"{sum(len(p) for p in rows.prompts) / len(rows):.1f} tokens; {C} conditions per pass"
    )
    print(
        f"  floor per condition {fl:.2f}s = prefix {f_prefix:.2f}s (shared, /{C}) + suffix "
        f"forward {f_fwd:.2f}s + W_U GEMM {f_gemm:.2f}s "
        f"({2 * n_ans * model.cfg.d_model * model.cfg.d_vocab / f_gemm / 1e9:.0f} GFLOP/s)"
    )
    print(
        f"  folding the conditions (one prefix cache): floor {tiled_floor:.2f}s tiled -> "
        f"{f_prefix + f_fwd + f_gemm:.2f}s folded; scorer, no edit {none_tiled:.2f}s tiled -> "
        f"{none:.2f}s folded ({none_tiled / none:.2f}x)"
    )
    print(f"  no edit            {none:6.2f}s  {none / fl:5.2f}x floor")
    for k, t in times.items():
        print(f"  {k:22s} {t:6.2f}s  {t / fl:5.2f}x floor  edit overhead {t / none:4.2f}x")
    print(
        f"  recording pass {t_rec:.1f}s vs bare forward over the prompts {t_bare:.1f}s: "
        f"{t_rec / t_bare:.2f}x"
    )
    return {
        "task": task, "floor": fl, "tiled_floor": tiled_floor, "none": none,
        "none_tiled": none_tiled, **times, "recording": t_rec, "bare": t_bare,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="all")
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--conditions", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64, help="rows per prompt pass (the scorer's)")
    ap.add_argument(
        "--calibration", type=int, default=64, help="items the static sets come from (the grid's)"
    )
    args = ap.parse_args()
    model = tlm.load_model("gemma-3-270m")
    print(versions_line(), flush=True)
    print(f"scoring path: {scoring_path(model)}; torch threads {torch.get_num_threads()}")
    tasks = tlm.list_tasks() if args.tasks == "all" else args.tasks.split(",")
    out = [
        task_report(model, t, args.items, args.conditions, args.batch, args.calibration)
        for t in tasks
    ]
    worst = max(
        max(r[k] for k in r if k.startswith(("static", "dynamic"))) / r["floor"] for r in out
    )
    print(f"\nworst condition / floor over the tasks: {worst:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
