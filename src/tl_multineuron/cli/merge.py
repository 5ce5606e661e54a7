"""``tl-multineuron merge``: join shards (``--shard K/N``, or torchrun's rank directories)
into one directory equal to a single run."""

from __future__ import annotations

import argparse

from .options import add_run_control

HELP = "join shards (--shard K/N) of analyze / attribute / intervene into one run"


def register(mg: argparse.ArgumentParser) -> None:
    mg.add_argument("shards", nargs="+", help="the shards' result directories")
    mg.add_argument("--out", required=True)
    add_run_control(mg, resume=False)


def run(args: argparse.Namespace) -> int:
    """Join shards (``--shard K/N``, or torchrun's rank directories) into one directory."""
    from ..runs.merge import merge_shards

    done = merge_shards(args.shards, args.out, overwrite=args.overwrite)
    for kind, n in done.items():
        print(f"{kind}: merged {len(args.shards)} shards ({n} items)")
    print(f"results in {args.out}/")
    return 0
