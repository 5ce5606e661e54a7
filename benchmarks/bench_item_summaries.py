"""What the per-item summaries (category counts, language-pair co-activation, partial-shared
subsets per item) add to a recording pass; prints ratios measured in one run.

    python benchmarks/bench_item_summaries.py [--task nli] [--repeat 3] [--thresholds 0,...]

At the main job's sweep of 6 thresholds by default.
(a) the update alone: SharingStats.update on the same recorded batches with and without the
    per-item summaries, beside the floor the pass cannot avoid (the forward passes);
(b) end to end: the whole analyze pass with and without them (best of --repeat each, alternated);
(c) the per-row attribution summaries: the contribution scores' ScoreStats.update on the same
    batches with and without them.
Target (issue 44): the new statistics add <= 10% to a recording pass (nli, 8 languages).
Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tl_multineuron as tlm  # noqa: E402
from tl_multineuron.attribution.rows import RowAttribution  # noqa: E402
from tl_multineuron.attribution.scores import contribution_scores  # noqa: E402
from tl_multineuron.attribution.stats import ScoreStats  # noqa: E402
from tl_multineuron.backends.versions import versions_line  # noqa: E402
from tl_multineuron.backends.weights import model_weights  # noqa: E402
from tl_multineuron.sharing.analysis import new_stats  # noqa: E402
from tl_multineuron.sharing.classification import active_mask, categorize  # noqa: E402
from tl_multineuron.sharing.masks import resolve_k  # noqa: E402
from tl_multineuron.sharing.recording import iter_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="nli")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--thresholds", default="0,0.1,0.2,0.3,0.4,0.5")
    args = ap.parse_args()
    print(versions_line())
    model = tlm.load_model("gemma-3-270m")
    ds = tlm.load_task(args.task)
    thresholds = tuple(float(x) for x in args.thresholds.split(","))
    cfg = tlm.AnalysisConfig(batch_size=args.batch_size, thresholds=thresholds)
    print(
        f"{args.task}: {len(ds)} items x {ds.n_languages} languages, batch {args.batch_size}, "
        f"thresholds {list(thresholds)}"
    )

    t = time.perf_counter()
    batches = [(s, a.clone()) for s, a in iter_dataset(model, ds, batch_size=args.batch_size)]
    forward = time.perf_counter() - t

    def updates(with_items: bool, batches: list) -> float:
        stats = new_stats(model, ds, cfg)
        if not with_items:
            stats.items = None
        t = time.perf_counter()
        for s, acts in batches:
            stats.update(acts, [it.item_id for it in ds.items[s : s + acts.shape[0]]])
        return time.perf_counter() - t

    plain = min(updates(False, batches) for _ in range(args.repeat))
    items = min(updates(True, batches) for _ in range(args.repeat))
    print(
        f"(a) forward passes (the floor) {forward:.1f} s; statistics update {plain:.2f} s without, "
        f"{items:.2f} s with per-item summaries: +{items - plain:.2f} s = "
        f"{100 * (items - plain) / (forward + plain):.1f}% of the recording pass"
    )

    weights = model_weights(model)
    layers = list(range(model.cfg.n_layers))
    scored = [
        (
            contribution_scores(acts, weights, layers),
            categorize(active_mask(acts, 0.0)[0]).codes,
            [it.item_id for it in ds.items[s : s + acts.shape[0]]],
        )
        for s, acts in batches
    ]
    del batches

    def attribution(with_rows: bool, scored: list) -> float:
        k = resolve_k(50, model.cfg.d_mlp)
        rows = RowAttribution(ds.languages, tuple(layers), k) if with_rows else None
        st = ScoreStats("contribution", ds.languages, tuple(layers), k, rows=rows)
        t = time.perf_counter()
        for scores, codes, ids in scored:
            st.update(scores, codes, ids)
        return time.perf_counter() - t

    no_rows = min(attribution(False, scored) for _ in range(args.repeat))
    rows = min(attribution(True, scored) for _ in range(args.repeat))
    del scored

    def analyze(with_items: bool) -> float:
        stats = new_stats(model, ds, cfg)
        if not with_items:
            stats.items = None
        t = time.perf_counter()
        tlm.analyze(model, ds, cfg, stats=stats, start=0)
        return time.perf_counter() - t

    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):
        for flag in (False, True):
            runs[flag].append(analyze(flag))
    a, b = min(runs[False]), min(runs[True])
    print(
        f"(b) analyze pass, best of {args.repeat}: {a:.1f} s without, {b:.1f} s with per-item "
        f"summaries: {b / a:.3f}x (target <= 1.10x)"
    )
    print(
        f"(c) attribution statistics update (contribution) {no_rows:.2f} s without, {rows:.2f} s "
        f"with per-row summaries: +{rows - no_rows:.2f} s = "
        f"{100 * (rows - no_rows) / (forward + plain):.1f}% of the recording pass"
    )


if __name__ == "__main__":
    main()
