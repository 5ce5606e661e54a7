"""``tl-multineuron intervene``: the experiment on one dataset -- scores under deactivation /
amplification of neuron sets, with paired comparisons
(:func:`tl_multineuron.runs.grid.run_task`)."""

from __future__ import annotations

import argparse

from .options import (
    add_common,
    add_grid_args,
    add_run_control,
    add_shard,
    dataset,
    grid_config,
    identity,
    load,
    print_comparisons,
)

HELP = "scores under deactivation / amplification, paired"


def register(v: argparse.ArgumentParser) -> None:
    add_common(v)
    add_grid_args(v)
    add_run_control(v)
    add_shard(v, "of the evaluated items (every shard calibrates on the same items)")


def run(args: argparse.Namespace) -> int:
    from ..runs.grid import run_task
    from ..runs.shards import Shard

    ds = dataset(args, shard=False)
    cfg = grid_config(args, analysis=False)
    shard = Shard.parse(args.shard) if args.shard else None
    if shard is not None:  # before the model loads: more shards than evaluated items
        shard.item_range(min(cfg.eval_items, len(ds)))
    print(
        f"{len(cfg.conditions)} conditions on the last {cfg.eval_items} items x "
        f"{ds.n_languages} languages of {ds.name!r}; static sets calibrated on up to "
        f"{cfg.calibration} other items"
    )
    model = load(args)
    comp = run_task(
        model,
        ds,
        args.out,
        cfg,
        identity(args, ds),
        resume=args.resume,
        overwrite=args.overwrite,
        kind="intervene",
        progress=not args.no_progress,
        log=print,
        shard=shard,
    )
    print_comparisons(comp)
    print(f"\nresults in {args.out}/ (scores.csv, summary.csv, comparisons.csv)")
    return 0
