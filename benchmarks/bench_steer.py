"""Cost of the default accuracy-steering search on the embedded Gemma 3 270M, per task.

The default search of ``tl-multineuron steer``: 6 layer bands x (2 alphas x 2 betas + 1 Int-mu
strength) = 30 configurations plus no steering, on 24 calibration items x the task's languages.
Printed per task: the calibration statistics (64 items), the search, and its cost per
configuration (target: the search under 5 minutes per task).

Then, on the first task, what batching buys, measured in this run on the first 4 configurations
(+ none): configurations sharing padded batches with the prompt prefix cached once, vs one
configuration per pass without the cache.

    python benchmarks/bench_steer.py [--tasks facts,qa,...]
"""

from __future__ import annotations

import argparse
import time

import torch

import tl_multineuron as tlm
from tl_multineuron.scoring import answer_rows, score_answers
from tl_multineuron.steer_runs import AccuracySteerConfig
from tl_multineuron.steering import SteerConfig, SteeringSets
from tl_multineuron.steering_study import score_steering, split_for_steering


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="facts,nli,qa,translate_en_xx,translate_xx_en")
    args = ap.parse_args()
    model = tlm.load_model("gemma-3-270m")
    cfg = AccuracySteerConfig()
    configs = [SteerConfig()] + cfg.configs(model.cfg.n_layers)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; default search: "
        f"{len(configs) - 1} configurations + none on {cfg.search_items} calibration items"
    )
    first = None
    for task in args.tasks.split(","):
        ds = tlm.load_task(task)
        cal, _ = split_for_steering(ds, cfg.eval_items, cfg.calibration)
        stats, t_cal = timed(lambda cal=cal: tlm.analyze(model, cal, tlm.AnalysisConfig()).stats)
        sets = SteeringSets.from_stats(stats, cfg.min_frequency, cfg.specific_frequency)
        search = cal.head(cfg.search_items)
        todo = [(c, None) for c in configs]
        _, t = timed(lambda search=search, sets=sets, todo=todo: score_steering(
            model, search, sets, todo, per_pass=cfg.per_pass))  # fmt: skip
        rows = len(search) * search.n_languages
        print(
            f"{task:16s} calibration stats ({len(cal)} items) {t_cal:5.1f}s; search "
            f"{len(configs)} x {rows} rows {t:6.1f}s = {t / 60:.2f} min "
            f"({t / len(configs):.2f}s per configuration) target < 5 min: "
            f"{'met' if t < 300 else 'NOT met'}"
        )
        if first is None:
            first = (search, sets)
    search, sets = first
    few = [(c, None) for c in configs[:5]]
    _, t_batched = timed(lambda: score_steering(model, search, sets, few, per_pass=16))
    items = [(it, x) for it in search.items for x in search.languages]
    rows = answer_rows(
        model, [it.prompts[x] for it, x in items], [it.answers[x] for it, x in items]
    )
    langs = torch.tensor([sets.lang_index(x) for _, x in items])

    def one(cfg: SteerConfig):
        edit = (
            None
            if cfg.kind == "none"
            else (lambda idx, cfg=cfg: sets.intervention(cfg, langs[torch.as_tensor(list(idx))]))
        )
        return score_answers(model, rows, [edit], cache="none")  # fmt: skip

    _, t_single = timed(lambda: [one(c) for c, _ in few])
    print(
        f"batching ({len(few)} configurations, {len(rows)} rows): shared batches + cached "
        f"prefix {t_batched:.1f}s vs one per pass without cache {t_single:.1f}s: "
        f"{t_single / t_batched:.2f}x"
    )


if __name__ == "__main__":
    main()
