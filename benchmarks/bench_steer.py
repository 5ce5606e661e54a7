"""Cost of the default accuracy-steering study on the embedded Gemma 3 270M, per task.

For each task, the whole default study of ``tl-multineuron steer --study accuracy`` (same
configuration, written to OUT/TASK/accuracy): calibration statistics (64 items), the search (6
layer bands x (2 alphas x 2 betas + 1 Int-mu strength) = 30 configurations + none, on 24
calibration items x the task's languages; target: under 5 minutes per task) and the held-out
evaluation (none, the chosen configuration, 3 random controls on the last 48 items).

Then, on the first task, what batching buys, measured in this run on 4 configurations + none:
configurations sharing padded batches with the prompt prefix cached once, vs one configuration
per pass without the cache.

    python benchmarks/bench_steer.py [--tasks facts,qa,...] [--out results/steer_bench]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import tl_multineuron as tlm
from tl_multineuron.backends.versions import versions_line
from tl_multineuron.data.splits import calibration_split
from tl_multineuron.experiments.scoring import answer_rows, score_answers, scoring_path
from tl_multineuron.runs.steer import AccuracySteerConfig, run_accuracy_study
from tl_multineuron.steering.sets import SteerConfig, SteeringSets
from tl_multineuron.steering.study import score_steering


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="facts,nli,qa,translate_en_xx,translate_xx_en")
    ap.add_argument("--out", default="results/steer_bench")
    args = ap.parse_args()
    model = tlm.load_model("gemma-3-270m")
    print(versions_line(), flush=True)
    print(f"scoring path: {scoring_path(model)}", flush=True)
    cfg = AccuracySteerConfig()
    n_conf = len(cfg.configs(model.cfg.n_layers))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; default study: "
        f"{n_conf} configurations + none searched on {cfg.search_items} calibration items, "
        f"then {cfg.eval_items} held-out items"
    )
    for task in args.tasks.split(","):
        ds = tlm.load_task(task)
        out = Path(args.out) / task / "accuracy"
        identity = {
            "model": "gemma-3-270m",
            "dtype": "float32",
            "dataset": ds.name,
            "dataset_fingerprint": ds.fingerprint(),
            "languages": list(ds.languages),
        }
        msgs: list[str] = []
        t0 = time.perf_counter()
        run_accuracy_study(model, ds, out, cfg, identity, overwrite=True, log=msgs.append)
        total = time.perf_counter() - t0
        chosen = json.loads((out / "chosen.json").read_text())
        verdict = json.loads((out / "verdict.json").read_text())
        t_search = chosen["search_seconds"]
        print(
            f"{task:16s} study {total:6.1f}s; search {t_search:6.1f}s = {t_search / 60:.2f} min "
            f"({t_search / (n_conf + 1):.2f}s per configuration; target < 5 min: "
            f"{'met' if t_search < 300 else 'NOT met'}); chosen {chosen['name']}; held-out "
            f"non-English accuracy {verdict['non_english_delta']:+.2f} "
            f"[{verdict['non_english_ci'][0]:+.2f}, {verdict['non_english_ci'][1]:+.2f}]"
        )
    ds = tlm.load_task(args.tasks.split(",")[0])
    cal, _ = calibration_split(ds, cfg.eval_items, cfg.calibration)
    stats = tlm.SharingStats.load(Path(args.out) / ds.name / "accuracy" / "calibration.pt")
    sets = SteeringSets.from_stats(stats, cfg.min_frequency, cfg.specific_frequency)
    search = cal.head(cfg.search_items)
    few = [(c, None) for c in [SteerConfig(), *cfg.configs(model.cfg.n_layers)[:4]]]
    t = time.perf_counter()
    score_steering(model, search, sets, few, per_pass=cfg.per_pass)
    t_batched = time.perf_counter() - t
    items = [(it, x) for it in search.items for x in search.languages]
    rows = answer_rows(
        model, [it.prompts[x] for it, x in items], [it.answers[x] for it, x in items]
    )
    langs = torch.tensor([sets.lang_index(x) for _, x in items])
    t = time.perf_counter()
    for c, _ in few:
        edit = (
            None
            if c.kind == "none"
            else (lambda idx, c=c: sets.intervention(c, langs[torch.as_tensor(list(idx))]))
        )
        score_answers(model, rows, [edit], cache="none")  # fmt: skip
    t_single = time.perf_counter() - t
    print(
        f"batching ({len(few)} configurations x {len(rows)} rows of {ds.name}): shared batches "
        f"+ cached prefix {t_batched:.1f}s vs one per pass without cache {t_single:.1f}s: "
        f"{t_single / t_batched:.2f}x"
    )


if __name__ == "__main__":
    main()
