"""Scaling out, timed in one run on this machine: data-parallel ranks, merge cost, and the
bookkeeping a torchrun job adds.

    .venv/bin/python benchmarks/bench_scale.py [--items 320]

Model: a random GPT-2-shaped HF checkpoint (6 layers x 1,536 neurons, d_model 384) with the
byte tokenizer, 8 languages, batch 8. Every run is a real CLI process:
* ``plain``: ``python -m tl_multineuron analyze`` (one process, 1 thread);
* ``torchrun x1``: the same under ``torchrun --nproc-per-node 1`` (rank directory, all-reduce,
  rank 0's write): the distributed bookkeeping's overhead is its wall time over ``plain``'s;
* ``torchrun x2``: 2 gloo ranks, 1 thread each, on this machine's cores; throughput ratio vs x1.
``plain`` and ``torchrun x1`` run ``--reps`` times, interleaved; the minimum of each is used.
Then ``merge`` of N shard directories of this run's statistics for N = 2 ... 64 (load, check,
sum, write). The statistics of all three runs are checked equal. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import _save_tiny, fake_shards, toy_dataset  # noqa: E402

from tl_multineuron.backends.versions import versions_line
from tl_multineuron.runs.merge import merge_shards  # noqa: E402
from tl_multineuron.sharing.statistics import SharingStats  # noqa: E402

LANGS = ("en", "de", "fr", "ru", "ja", "es", "it", "nl")


def model_dir(path: Path) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=259, n_positions=128, n_embd=384, n_layer=6, n_head=6,
                     n_inner=1536, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    return _save_tiny(GPT2LMHeadModel(cfg), path)


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=320)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    print(versions_line(), flush=True)
    root = Path(tempfile.mkdtemp(prefix="tlmn-bench-scale-"))
    model = model_dir(root / "model")
    data = root / "d.jsonl"
    toy_dataset(a.items, LANGS).to_jsonl(data)
    args = ["analyze", "--model", model, "--data", str(data), "--batch-size", "8",
            "--no-views", "--no-progress"]  # fmt: skip
    py = [sys.executable, "-m"]
    run = [*py, "torch.distributed.run", "--standalone"]
    out = {"items": a.items, "languages": len(LANGS), "cores": os.cpu_count()}
    timed([*py, "tl_multineuron", *args, "--limit", "16", "--out", str(root / "warm")])
    plain, dist1 = [], []
    for r in range(a.reps):  # interleaved; the minimum of each (this machine is noisy)
        plain.append(timed([*py, "tl_multineuron", *args, "--out", str(root / f"plain{r}")]))
        dist1.append(
            timed(
                [
                    *run,
                    "--nproc-per-node=1",
                    "-m",
                    "tl_multineuron",
                    *args,
                    "--out",
                    str(root / f"t1-{r}"),
                ]
            )  # fmt: skip
        )
    out["plain_s"], out["torchrun1_s"] = min(plain), min(dist1)
    out["plain_all_s"], out["torchrun1_all_s"] = plain, dist1
    out["torchrun2_s"] = timed(
        [*run, "--nproc-per-node=2", "-m", "tl_multineuron", *args, "--out", str(root / "t2")]
    )
    out["bookkeeping_overhead_pct"] = round(100 * (out["torchrun1_s"] / out["plain_s"] - 1), 2)
    out["two_ranks_speedup"] = round(out["torchrun1_s"] / out["torchrun2_s"], 3)
    stats = [SharingStats.load(root / d / "stats.pt") for d in ("plain0", "t1-0", "t2")]
    out["counts_equal"] = all(
        torch.equal(stats[0].category_counts, s.category_counts) for s in stats[1:]
    )
    ident = {"model": "bench", "dtype": "float32", "dataset": "toy", "languages": list(LANGS)}
    merges = {}
    for n in (2, 4, 8, 16, 32, 64):
        dirs = fake_shards(stats[0], n, a.items * 64, root / f"shards{n}", ident)
        t0 = time.perf_counter()
        merge_shards(dirs, root / f"merged{n}")
        merges[n] = round(time.perf_counter() - t0, 3)
    out["merge_s"] = merges
    out["stats_mib"] = round((root / "plain0" / "stats.pt").stat().st_size / 2**20, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
