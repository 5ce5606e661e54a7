"""A whole specificity run against its floor, in one run: the command a new user tries first.

Runs ``tl-multineuron specificity --task facts --limit 24 --eval-items 12 --calibration 12``
(8 languages, every default; the options after ``--`` replace these) into a temporary
directory and prints its ``cost.csv``: per phase (recording pass, token statistics, each
matrix part, generation) the seconds taken, the tokens through the decoder and the positions
unembedded, their GFLOP, and the floor -- those FLOPs at the GEMM rate the run measured at its
start (an unembedding-shaped GEMM on the same device and dtype) -- with the ratio. The floor
leaves out attention's score products, norms and activations: a lower bound.

Target (issue "LAPE on running text", part 7): the run under 10 min on the 2-core CPU, at
<= 1.3x its floor. Run with nothing else on the machine.

    python benchmarks/bench_specificity_run.py [--model gemma-3-270m] [-- OPTIONS...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from tl_multineuron.backends.versions import versions_line
from tl_multineuron.cli import main as cli

DEFAULT = ["--task", "facts", "--limit", "24", "--eval-items", "12", "--calibration", "12"]


def run() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("options", nargs="*", help="specificity options (default: the issue's run)")
    args = ap.parse_args()
    print(versions_line(), flush=True)
    print(f"model {args.model}; torch threads {torch.get_num_threads()}")
    options = args.options or DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "spec"
        cmd = ["specificity", "--model", args.model, *options, "--out", str(out), "--no-progress"]
        print("tl-multineuron " + " ".join(cmd[:-3] + ["--out", "OUT", "--no-progress"]))
        t0 = time.perf_counter()
        rc = cli(cmd)
        wall = time.perf_counter() - t0
        if rc:
            raise SystemExit(f"specificity exited with {rc}")
        cost = pd.read_csv(out / "specificity" / "cost.csv")
    pd.set_option("display.width", 140)
    print()
    print(cost.round({"seconds": 1, "gflop": 0, "floor_s": 1, "ratio": 2}).to_string(index=False))
    total = cost.iloc[-1]
    print(
        f"\nwall {wall:.0f} s (model load, tables and report writing included); phases "
        f"{total.seconds:.0f} s = {total.ratio:.2f}x their floor of {total.floor_s:.0f} s at "
        f"{total.gemm_gflops:.0f} GFLOP/s (target: under 600 s, <= 1.3x)"
    )


if __name__ == "__main__":
    run()
