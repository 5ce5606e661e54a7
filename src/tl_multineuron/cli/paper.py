"""``tl-multineuron paper``: the whole of *Sharing Matters* on one model -- the grid (recording
pass, attribution, every category deactivated against equal-size and activity-matched controls,
amplification) on each task, then every claim with its statistic (``OUT/paper/``) and one report
with a section per claim. The main job (``scripts/main.sh``) runs it on the embedded model."""

from __future__ import annotations

import argparse
import sys
import time

HELP = "every analysis of the paper, each claim with its statistic, one report (main job)"
#: the paper run's sizes where the flags leave them open: amplify x2 (x1.5 is in grid --full),
#: 4 draws of each all-shared control and one per new category (grid: 5 and 5; the main job
#: within 15 minutes, see docs/paper.md)
DEFAULTS = {"alphas": "2", "other_seeds": "0", "seeds": "0,1,2,3"}


def register(p: argparse.ArgumentParser) -> None:
    from . import grid

    grid.register(p)
    p.set_defaults(seeds=DEFAULTS["seeds"])


def run(args: argparse.Namespace) -> int:
    from ..report.page import build_report
    from ..runs.directories import source_commit
    from ..runs.paper import write_paper
    from .grid import run_grid

    args.alphas = args.alphas or DEFAULTS["alphas"]
    args.other_seeds = args.other_seeds or DEFAULTS["other_seeds"]
    args.all_categories = True
    out, names, t0 = run_grid(args)
    heads = write_paper(out, names, {"command": " ".join(sys.argv), **source_commit()})
    for claim, lines in heads.items():
        for line in lines:
            print(f"claim {claim}: {line}")
    path = build_report(out)
    print(
        f"\npaper done in {time.perf_counter() - t0:.0f}s; tables in {out}/paper/; report: {path}"
    )
    return 0
