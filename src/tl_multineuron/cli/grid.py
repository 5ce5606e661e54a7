"""``tl-multineuron grid``: the main job -- per built-in task one recording pass and the
experiment grid, then one report; sized by ``--quick`` / default / ``--full``
(:data:`tl_multineuron.cli.options.GRID_SIZES`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import MultiNeuronError
from .options import (
    GRID_SIZES,
    add_data_args,
    add_delimiter_arg,
    add_device_args,
    add_grid_args,
    add_run_control,
    dataset,
    delimiter,
    grid_config,
    identity,
    load,
    print_comparisons,
)

HELP = "the paper's grid on built-in tasks + report (main job)"


def register(g: argparse.ArgumentParser) -> None:
    from ..runs.grid import GridConfig
    from .options import config_defaults

    g.add_argument("--tasks", default="all", help="comma-separated built-in tasks, or 'all'")
    add_data_args(g)
    g.add_argument(
        "--languages", help="with --data: comma-separated languages (default: all of the data)"
    )
    g.add_argument("--model", default="gemma-3-270m")
    add_device_args(g)
    g.add_argument(
        "--batch-size",
        type=int,
        default=config_defaults(GridConfig)["batch_size"],
        help="items per recording pass",
    )
    add_delimiter_arg(g)
    g.add_argument("--out", required=True)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument(
        "--quick",
        action="store_true",
        help="a first look: facts, static sets, deactivation + controls, amplify x2",
    )
    g.add_argument(
        "--full",
        action="store_true",
        help="the full grid: static and dynamic sets, amplify x1.1/1.5/2/3 with controls, every "
        "category deactivated (95 conditions per task)",
    )
    add_grid_args(g, sized=True)
    add_run_control(g)
    g.set_defaults(limit=None, task=None)


def size_grid(args: argparse.Namespace) -> None:
    """Fill the grid command's --modes / --alphas from its size (--quick, default, --full);
    flags given explicitly win, except under --quick."""
    if args.quick and args.full:
        raise MultiNeuronError("--quick and --full: choose one grid size")
    if args.quick:  # a first look: one task, static sets, deactivation with every control
        args.tasks, args.modes, args.alphas = "facts", "static", "2"
        args.no_amplify_controls = True
    size = GRID_SIZES["full" if args.full else "main"]
    args.modes = args.modes or size["modes"]
    args.alphas = args.alphas or size["alphas"]
    args.all_categories = args.all_categories or size.get("all_categories", False)


def run(args: argparse.Namespace) -> int:
    from ..report.page import build_report

    out, _, t0 = run_grid(args)
    path = build_report(out)
    print(f"\ngrid done in {time.perf_counter() - t0:.0f}s; report: {path}")
    return 0


def run_grid(args: argparse.Namespace) -> tuple[Path, list[str], float]:
    """Every task's recording pass and conditions, and ``grid.json``: (out, tasks, start)."""
    from ..data.tasks import TASKS, load_task
    from ..runs.grid import run_task, write_index

    size_grid(args)
    if args.data:  # one dataset of the user's, in place of the built-in tasks
        if args.tasks != "all" and not args.quick:
            raise MultiNeuronError("--tasks and --data: give one of them")
        data = dataset(args, shard=False)
        sets = {data.name: lambda: data}
    else:
        names = list(TASKS) if args.tasks == "all" else [x.strip() for x in args.tasks.split(",")]
        bad = [x for x in names if x not in TASKS]
        if bad or not names:
            raise MultiNeuronError(f"--tasks: unknown task(s) {bad}; built-in: {sorted(TASKS)}")
        sets = {n: (lambda n=n: load_task(n, answer_delimiter=delimiter(args))) for n in names}
    names = list(sets)
    cfg = grid_config(args, analysis=True)
    t0 = time.perf_counter()
    model, info = load(args, return_info=True)
    print(
        f"model {args.model} loaded in {info.seconds:.1f}s; {len(names)} task(s), "
        f"{len(cfg.conditions)} conditions each, {cfg.eval_items} evaluated items per task"
    )
    out = Path(args.out)
    for name, make in sets.items():
        ds = make()
        args.task = name if not args.data else None
        comp = run_task(
            model,
            ds,
            out / name,
            cfg,
            identity(args, ds),
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            log=print,
        )
        print_comparisons(comp[comp["reference"] == "none"].head(8))
    write_index(out, names, {"command": " ".join(sys.argv), "seconds": time.perf_counter() - t0})
    return out, names, t0
