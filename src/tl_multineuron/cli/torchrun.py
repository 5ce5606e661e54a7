"""One rank of ``torchrun ... -m tl_multineuron analyze|attribute|intervene``: this module
only maps the command's flags onto :func:`tl_multineuron.runs.distributed.run_ranks` (process
group, rank devices, shard directories, the all-reduce and the join)."""

from __future__ import annotations

import argparse

from ..errors import MultiNeuronError
from .options import dataset, loader


def run_rank(args: argparse.Namespace, info) -> int:
    """Run ``args``' command as rank ``info`` of a torchrun job."""
    from ..runs.distributed import KINDS, run_ranks
    from ..runs.pipelines import write_item_views

    if args.command not in KINDS:
        raise MultiNeuronError(f"torchrun runs {', '.join(KINDS)}, not {args.command}")
    if getattr(args, "shard", None):
        raise MultiNeuronError("--shard and torchrun both split the items; use one of them")
    full = dataset(args, shard=False)
    n = min(args.eval_items, len(full)) if args.command == "intervene" else len(full)
    views = args.command == "analyze" and not args.no_views

    def run_shard(shard: str, device: str, directory, progress: bool) -> int:
        args.shard, args.device, args.out, args.no_views = shard, device, str(directory), True
        args.no_progress = args.no_progress or not progress
        return args.func(args)

    return run_ranks(
        info,
        args.command,
        n,
        args.out,
        args.device,
        run_shard,
        overwrite=args.overwrite,
        resume=args.resume,
        views=(lambda stats, out: write_item_views(loader(args)(), full, stats, out))
        if views
        else None,
        announce=print,
    )
