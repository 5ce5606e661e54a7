"""``tl-multineuron report``: one self-contained HTML file of a results directory."""

from __future__ import annotations

import argparse

HELP = "self-contained HTML report of a results directory"


def register(r: argparse.ArgumentParser) -> None:
    r.add_argument("results", help="results directory")
    r.add_argument("--out", help="output file (default RESULTS/report.html)")


def run(args: argparse.Namespace) -> int:
    from ..report.page import build_report

    path = build_report(args.results, args.out)
    print(f"report written to {path}")
    return 0
