"""Benchmarks for the core sharing analysis; prints ratios measured in one run.

    python benchmarks/bench_core.py [--quick]

(a) categorization at the paper's scale vs the notebook algorithm and vs bare `acts > t`;
(b) full analysis vs bare forward passes over the same batches (embedded Gemma);
(c) batched vs one-prompt-at-a-time throughput;
(d) peak memory of the statistics for 100 vs 1000 items (flat);
(e) embedded model: first load (GGUF conversion) vs cached load.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tl_multineuron as tlm  # noqa: E402
from tl_multineuron.backends.versions import versions_line  # noqa: E402
from tl_multineuron.sharing.recording import StopForward  # noqa: E402


def best_of(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_categorization() -> None:
    from naive_reference import naive_categories

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(10, 30, 16384, generator=g)  # lang x layer x neuron (paper scale)
    ours = best_of(lambda: tlm.categorize_acts(acts, 0.0))
    bare = best_of(lambda: acts > 0.0)
    t = time.perf_counter()
    ref = naive_categories(acts.numpy(), 0.0)
    naive = time.perf_counter() - t
    cats = tlm.categorize_acts(acts, 0.0)
    assert {tuple(x) for x in cats.mask("all-shared").nonzero().tolist()} == ref["all-shared"]
    print(
        f"(a) categorization 10 lang x 30 layers x 16384 neurons: ours {ours * 1e3:.1f} ms, "
        f"notebook sets {naive:.2f} s, bare `acts > t` {bare * 1e3:.1f} ms"
    )
    print(
        f"    speed-up vs notebook: {naive / ours:.0f}x (target >= 100x); "
        f"cost vs bare comparison: {ours / bare:.2f}x (target <= 3x)"
    )


def bench_analysis(model, n_items: int) -> None:
    ds = tlm.load_task("facts").head(n_items)
    cfg = tlm.AnalysisConfig(thresholds=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), batch_size=4)
    batches = []
    for s in range(0, len(ds), cfg.batch_size):
        items = ds.items[s : s + cfg.batch_size]
        batches.append(tlm.tokenize(model, [it.prompts[x] for it in items for x in ds.languages]))
    last = f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"

    def stop(act, hook):
        raise StopForward

    def bare_full():
        with torch.inference_mode():
            for b in batches:
                model(b.tokens)

    def bare_truncated():  # the same forward as the analysis, stopped at the last MLP
        with torch.inference_mode():
            for b in batches:
                try:
                    with model.hooks(fwd_hooks=[(last, stop)]):
                        model(b.tokens)
                except StopForward:
                    pass

    def analysis():
        tlm.analyze(model, ds, cfg)

    analysis()  # warm-up
    t_an, t_tr, t_full = (best_of(f, 3) for f in (analysis, bare_truncated, bare_full))
    print(
        f"(b) {n_items} items x {ds.n_languages} languages, 6-threshold sweep: analysis "
        f"{t_an:.2f} s, bare forward to the last MLP {t_tr:.2f} s, bare full forward "
        f"{t_full:.2f} s"
    )
    print(
        f"    overhead vs bare truncated forward: {100 * (t_an / t_tr - 1):+.1f}% ; vs bare "
        f"full forward: {100 * (t_an / t_full - 1):+.1f}% (target <= +10%)"
    )
    one = tlm.AnalysisConfig(batch_size=1)
    eight = tlm.AnalysisConfig(batch_size=8)
    small = ds.head(min(8, n_items))
    t1 = best_of(lambda: tlm.analyze(model, small, one), 2)
    t8 = best_of(lambda: tlm.analyze(model, small, eight), 2)
    per = small.n_languages * len(small)

    def single():
        with torch.inference_mode():
            for it in small:
                for x in small.languages:
                    tlm.record(model, tlm.tokenize(model, [it.prompts[x]]))

    ts = best_of(single, 2)
    print(
        f"(c) throughput: one prompt at a time {per / ts:.1f} prompts/s, one item "
        f"({small.n_languages} prompts) per pass {per / t1:.1f}, 8 items per pass "
        f"{per / t8:.1f}: batched speed-up {ts / t8:.2f}x"
    )


_MEM_CHILD = """
import resource, sys, torch, tl_multineuron as tlm
n = int(sys.argv[1])
s = tlm.SharingStats(tuple('abcdefgh'), (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), 'gt', 18, 2048)
g = torch.Generator().manual_seed(0)
acts = torch.randn(8, 8, 18, 2048, generator=g)
s.update(acts)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for i in range(n // 8):
    s.update(acts + i * 1e-3)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, s.n_items)
"""


def bench_memory() -> None:
    out = {}
    for n in (100, 1000):
        r = subprocess.run(
            [sys.executable, "-c", _MEM_CHILD, str(n)], capture_output=True, text=True, check=True
        )
        grow, items = r.stdout.split()
        out[n] = (int(grow) / 1024, int(items))
    print(
        f"(d) statistics (8 languages x 18 layers x 2048 neurons, 6 thresholds): peak RSS "
        f"growth after the first batch {out[100][0]:.1f} MiB for {out[100][1]} items vs "
        f"{out[1000][0]:.1f} MiB for {out[1000][1]} items "
        f"(ratio {max(out[1000][0], 0.1) / max(out[100][0], 0.1):.2f}; flat = ~1)"
    )


_LOAD_CHILD = """
import time, tl_multineuron as tlm
t = time.perf_counter(); m, info = tlm.load_model('gemma-3-270m', return_info=True)
print(time.perf_counter() - t, info.cache_hit)
"""


def bench_load() -> None:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "TL_MULTINEURON_CACHE": d}
        res = []
        for _ in range(2):
            r = subprocess.run(
                [sys.executable, "-c", _LOAD_CHILD],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            secs, hit = r.stdout.split()[-2:]
            res.append((float(secs), hit))
    print(
        f"(e) embedded model load: first (convert GGUF, cache_hit={res[0][1]}) "
        f"{res[0][0]:.1f} s, second (cache_hit={res[1][1]}) {res[1][0]:.1f} s: "
        f"{res[0][0] / res[1][0]:.1f}x faster (target >= 4x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer items in (b)")
    args = ap.parse_args()
    print(versions_line(), flush=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"maxrss now {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    bench_categorization()
    model = tlm.load_model("gemma-3-270m")
    bench_analysis(model, 8 if args.quick else 24)
    bench_memory()
    bench_load()


if __name__ == "__main__":
    main()
