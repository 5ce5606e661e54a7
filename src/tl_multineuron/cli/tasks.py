"""``tl-multineuron tasks``: the built-in tasks."""

from __future__ import annotations

import argparse

HELP = "list the built-in tasks"


def register(t: argparse.ArgumentParser) -> None:
    return None


def run(args: argparse.Namespace) -> int:
    from ..data.tasks import list_tasks, load_task

    for name, desc in list_tasks().items():
        ds = load_task(name)
        print(f"{name:16s} {len(ds):4d} items  {','.join(ds.languages):24s} {desc}")
    return 0
