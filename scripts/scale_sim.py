"""Paper-scale costs, simulated on this machine with a BLOOM-7b1-shaped native model (30 layers x
16,384 neurons, d_model 64) and 10 languages.

    .venv/bin/python scripts/scale_sim.py --out docs/scale/scale_sim.md

Measures (one run): recording + accumulation seconds per item; the statistics' memory after
1k and 10k items (10k: ten 1k shards merged, the state a 10k run ends with; its size does not
depend on the number of items); checkpoint size and atomic write time; ``merge`` of 8 and 64
shard directories (load, check, sum, write), through the same code as ``tl-multineuron merge``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import byte_tokenizer, fake_shards  # noqa: E402
from transformer_lens.config import TransformerBridgeConfig  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

from tl_multineuron import ParallelDataset, ParallelItem  # noqa: E402
from tl_multineuron.runs.merge import merge_shards  # noqa: E402
from tl_multineuron.sharing.analysis import AnalysisConfig, analyze, new_stats  # noqa: E402
from tl_multineuron.sharing.recording import RecordingConfig, iter_dataset  # noqa: E402

LANGS = ("en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "sw")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dataset(n: int) -> ParallelDataset:
    items = [
        ParallelItem(f"q{i}", {x: f"{x} item {i} asks" for x in LANGS}, {}, "sim") for i in range(n)
    ]
    return ParallelDataset(tuple(items), LANGS, "sim")


def stats_bytes(stats) -> int:
    return sum(t.numel() * t.element_size() for t in stats.state().values() if torch.is_tensor(t))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--forward-items", type=int, default=32)
    ap.add_argument("--thresholds", default="0")
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = TransformerBridgeConfig(
        d_model=64, d_head=16, n_heads=4, n_layers=30, n_ctx=64, d_mlp=16384, d_vocab=259,
        act_fn="gelu",
    )  # fmt: skip
    model = TransformerBridge.boot_native(cfg, tokenizer=byte_tokenizer())
    model.eval()
    thr = tuple(float(x) for x in a.thresholds.split(","))
    acfg = AnalysisConfig(thresholds=thr, batch_size=8)
    lines = []

    # 1. recording + accumulation through the model, per item
    ds = dataset(a.forward_items)
    t0 = time.perf_counter()
    analyze(model, ds, acfg)
    per_item = (time.perf_counter() - t0) / len(ds)
    acts = torch.cat([x for _, x in iter_dataset(model, ds.head(8), RecordingConfig(), 8)])
    t0 = time.perf_counter()
    s = new_stats(model, ds, acfg)
    for _ in range(8):
        s.update(acts)
    update_per_item = (time.perf_counter() - t0) / (8 * len(acts))

    # 2. 1k items streamed (the recorded activations, cycled) and the memory it holds
    base = rss_mb()
    one_k = new_stats(model, dataset(1000), acfg)
    t0 = time.perf_counter()
    for _ in range(1000 // len(acts)):
        one_k.update(acts)
    stream_1k = time.perf_counter() - t0
    rss_1k = rss_mb()
    tmp = Path(tempfile.mkdtemp(prefix="tlmn-scale-"))
    try:
        t0 = time.perf_counter()
        one_k.save(tmp / "stats.pt")
        write_s = time.perf_counter() - t0
        size_mb = (tmp / "stats.pt").stat().st_size / 2**20
        # 10k items: ten 1k shards merged
        ten = one_k
        for k in range(9):
            other = one_k.copy()
            other.meta["dataset_fingerprint"] = f"shard{k}"
            ten = ten.merge(other)
        rss_10k = rss_mb()
        t0 = time.perf_counter()
        ten.save(tmp / "stats10k.pt")
        write10_s = time.perf_counter() - t0
        size10_mb = (tmp / "stats10k.pt").stat().st_size / 2**20
        lines.append(("stats in memory, 1k items", f"{stats_bytes(one_k) / 2**20:.0f} MiB"))
        lines.append(("stats in memory, 10k items", f"{stats_bytes(ten) / 2**20:.0f} MiB"))
        lines.append(
            (
                "process peak RSS before / after 1k / after 10k",
                f"{base:.0f} / {rss_1k:.0f} / {rss_10k:.0f} MiB",
            )
        )  # noqa: E501
        lines.append(("checkpoint size, 1k / 10k items", f"{size_mb:.0f} / {size10_mb:.0f} MiB"))
        lines.append(
            ("checkpoint write (atomic), 1k / 10k items", f"{write_s:.2f} / {write10_s:.2f} s")
        )  # noqa: E501
        lines.append(
            ("recording + accumulation through the model", f"{per_item:.2f} s/item (CPU, 2 cores)")
        )  # noqa: E501
        lines.append(
            (
                "accumulation alone",
                f"{1000 * update_per_item:.1f} ms/item; 1k items streamed in {stream_1k:.1f} s",
            )
        )  # noqa: E501
        # 3. merge of 8 and 64 shard directories of a 10k-item run
        ident = {
            "model": "bloom-sim",
            "dtype": "float32",
            "dataset": "sim",
            "languages": list(LANGS),
        }  # noqa: E501
        for n in (8, 64):
            dirs = fake_shards(one_k, n, 10000, tmp / f"s{n}", ident)
            t0 = time.perf_counter()
            merge_shards(dirs, tmp / f"merged{n}")
            merged_s = time.perf_counter() - t0
            lines.append((f"merge of {n} shards (10k items)", f"{merged_s:.1f} s"))
            shutil.rmtree(tmp / f"s{n}")
            shutil.rmtree(tmp / f"merged{n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    text = (
        "# Paper-scale costs, simulated (BLOOM-7b1 shape: 30 layers x 16,384 neurons, 10 "
        f"languages, thresholds {list(thr)})\n\nMade by `scripts/scale_sim.py` at commit "
        f"{commit} on {os.cpu_count()} CPU cores.\n\n| quantity | measured |\n| --- | --- |\n"
        + "".join(f"| {k} | {v} |\n" for k, v in lines)
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    print(json.dumps(dict(lines)))


if __name__ == "__main__":
    main()
