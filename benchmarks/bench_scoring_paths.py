"""Experiment engine speed on the embedded Gemma 3 270M: ratios measured in one run.

Rows: the 48 evaluated items of a built-in task x its languages (``--task``, default facts).
Condition: deactivate the static all-shared set (calibrated on the first 64 items).

(a) generation-based scoring (TL KV-cached greedy generation, 8 new tokens) vs one-pass
    scoring of the same rows and condition, scope last: speed-up (target >= 5x), agreement;
(b) what each trick buys: full passes per condition / prompt prefix cached once / prefix cached
    and 8 conditions sharing padded batches (cost per condition);
(c) one condition vs an ``analyze`` pass over the same rows: scope last (target <= 0.3x) and
    scope all (target <= 1.5x);
(d) scope all with and without the BOS position, target vs a random control (accuracy).

    python benchmarks/bench_scoring_paths.py [--task facts] [--skip-generation]
"""

from __future__ import annotations

import argparse
import time

import torch

import tl_multineuron as tlm
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.experiments.conditions import Condition, prepare_sets
from tl_multineuron.experiments.evaluation import generate_greedy
from tl_multineuron.experiments.interventions import Intervention
from tl_multineuron.experiments.scoring import answer_rows, score_answers, scoring_path


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="facts")
    ap.add_argument("--skip-generation", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = tlm.load_model("gemma-3-270m")
    print(versions_line(), flush=True)
    print(f"scoring path: {scoring_path(model)}", flush=True)
    ds = tlm.load_task(args.task)
    ev, cal = ds.slice(len(ds) - 48), ds.slice(0, 64)
    sets = prepare_sets(model, ev, cal)
    cond = Condition("all-shared", "zero")
    masks = sets.masks(cond).reshape(-1, model.cfg.n_layers, model.cfg.d_mlp)
    pairs = [(it, x) for it in ev.items for x in ev.languages]
    prompts = [it.prompts[x] for it, x in pairs]
    rows = answer_rows(model, prompts, [it.answers[x] for it, x in pairs])
    R = len(rows)
    n_pos = sum(len(a) for a in rows.answers)

    def edit(block):
        return Intervention(masks[torch.as_tensor(list(block))].contiguous(), "zero")

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; task {args.task}: "
        f"{R} rows, {n_pos} answer tokens, mean prompt "
        f"{sum(len(p) for p in rows.prompts) / R:.1f} tokens"
    )
    _, t_an = timed(lambda: tlm.analyze(model, ev, tlm.AnalysisConfig(batch_size=8)))
    (one,), t_one = timed(lambda: score_answers(model, rows, [edit], cache="prefix"))
    (base,) = score_answers(model, rows, [None])
    print(f"analyze pass over the rows: {t_an:.1f}s")
    if not args.skip_generation:

        def hooks(s, e):
            return Intervention(masks[s:e].contiguous(), "zero").fwd_hooks(model)

        gens, t_gen = timed(lambda: generate_greedy(model, prompts, 8, 16, hooks_for_batch=hooks))
        starts = [list(g[: len(a)]) == list(a) for g, a in zip(gens, rows.answers, strict=True)]
        agree = sum(
            int(s == bool(m)) for s, m in zip(starts, one.greedy_match.tolist(), strict=True)
        )
        print(
            f"(a) generation-based scoring {t_gen:.1f}s vs one-pass {t_one:.1f}s: "
            f"{t_gen / t_one:.2f}x faster (target >= 5x); greedy_match agrees on {agree}/{R}"
        )
    _, t_full = timed(lambda: score_answers(model, rows, [edit], cache="none"))
    eight = [edit] * 8
    _, t_seq = timed(lambda: score_answers(model, rows, eight, cache="prefix", max_rows=32))
    _, t_shared = timed(lambda: score_answers(model, rows, eight, cache="prefix", max_rows=256))
    print(
        f"(b) one condition, full passes {t_full:.1f}s; prefix cached {t_one:.1f}s "
        f"({t_full / t_one:.2f}x); 8 conditions: one per pass {t_seq / 8:.2f}s each, "
        f"sharing batches {t_shared / 8:.2f}s each ({t_seq / t_shared:.2f}x)"
    )
    rnd = sets.masks(Condition("random", "zero", seed=0)).reshape(masks.shape)

    def rand_edit(block):
        return Intervention(rnd[torch.as_tensor(list(block))].contiguous(), "zero")

    res_all, t_all = timed(lambda: score_answers(model, rows, [edit, rand_edit], scope="all"))
    t_all /= 2
    res_bos = score_answers(model, rows, [edit, rand_edit], scope="all", include_bos=True)
    per_last = t_shared / 8
    print(
        f"(c) per condition vs the analyze pass: scope last {per_last:.2f}s = "
        f"{per_last / t_an:.2f}x (target <= 0.3x); scope all {t_all:.1f}s = "
        f"{t_all / t_an:.2f}x (target <= 1.5x)"
    )
    acc = [f"{100 * float(r.greedy_match.float().mean()):.1f}%" for r in (*res_all, *res_bos)]
    print(
        f"(d) scope all, deactivate static all-shared / random seed 0: accuracy {acc[0]} / "
        f"{acc[1]} without the BOS position, {acc[2]} / {acc[3]} with it (no edit: "
        f"{100 * float(base.greedy_match.float().mean()):.1f}%)"
    )
    print(
        f"    unembedding floor: {n_pos} answer positions x 2 x d_model x vocab = "
        f"{n_pos * 2 * model.cfg.d_model * model.cfg.d_vocab / 1e12:.2f} TFLOP per condition"
    )


if __name__ == "__main__":
    main()
