"""One rank of ``torchrun ... -m tl_multineuron analyze|attribute|intervene``: the command on
this rank's shard, then the reduction (:mod:`tl_multineuron.distributed` holds the process
group, rank devices and the all-reduce; this module only maps the command's flags onto them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MultiNeuronError
from .options import dataset, loader


def run_rank(args: argparse.Namespace, info) -> int:
    """One rank of ``torchrun ... -m tl_multineuron analyze|attribute|intervene``: this rank's
    shard into ``OUT/ranks/rank-K-of-N`` (resumable on its own), then the reduction; rank 0
    writes ``OUT`` (:mod:`tl_multineuron.distributed`)."""
    from .. import distributed
    from ..merge import merge_shards
    from ..pipelines import write_item_views
    from ..statistics import SharingStats

    if args.command not in ("analyze", "attribute", "intervene"):
        raise MultiNeuronError(
            f"torchrun runs analyze, attribute and intervene, not {args.command}"
        )
    if getattr(args, "shard", None):
        raise MultiNeuronError("--shard and torchrun both split the items; use one of them")
    full = dataset(args, shard=False)
    n = min(args.eval_items, len(full)) if args.command == "intervene" else len(full)
    what = "evaluated items" if args.command == "intervene" else "items"
    if info.world > n:  # every rank finds this before any of them waits on another
        raise MultiNeuronError(
            f"{info.world} ranks for {n} {what}: some ranks would get nothing; use "
            f"--nproc-per-node (x nodes) <= {n}"
        )
    device = distributed.rank_device(info, args.device)
    backend = distributed.init(info, device)
    out, views = Path(args.out), args.command == "analyze" and not args.no_views
    dirs = [str(distributed.RankInfo(k, info.world, 0).directory(out)) for k in range(info.world)]
    args.shard, args.device, args.out = info.shard, device, dirs[info.rank]
    args.no_views = True
    if info.rank:
        args.no_progress = True
    print(f"rank {info.shard} on {device} ({backend}): shard directory {args.out}")
    try:
        rc = args.func(args)
        if rc:
            return rc
        kind = args.command
        reduced = None
        if kind == "analyze":  # the counters: an all-reduce (sum)
            reduced = distributed.all_reduce_stats(SharingStats.load(Path(args.out) / "stats.pt"))
        else:
            distributed.barrier()
        if info.rank == 0:
            merge_shards(
                dirs,
                out,
                overwrite=args.overwrite,
                resume=args.resume,
                kinds=[kind],
                reduced=reduced,
            )
            if views and not (out / "views.json").exists():
                write_item_views(loader(args)(), full, reduced, out)
            print(f"rank 0: {info.world} ranks joined into {out}/")
        distributed.barrier()
        return 0
    finally:
        distributed.finish()
