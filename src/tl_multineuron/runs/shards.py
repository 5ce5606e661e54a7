"""Shards: deterministic, disjoint, covering item ranges of a dataset, and the checks a merge
needs (one configuration, no overlap, nothing missing).

Shard ``K/N`` (``0 <= K < N``, Slurm's ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) of
``n`` items is ``[floor(K n / N), floor((K + 1) n / N))``: sizes differ by at most one, the
ranges tile ``[0, n)`` in order, and they depend on nothing but ``K``, ``N`` and ``n``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MultiNeuronError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1):
            raise MultiNeuronError(f"shard count {self.count!r}: expected a positive int")
        if not (isinstance(self.index, int) and 0 <= self.index < self.count):
            raise MultiNeuronError(
                f"shard {self.index}/{self.count}: the index must be in 0..{self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"``."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m:
            raise MultiNeuronError(f"--shard {text!r}: expected K/N, e.g. 0/8")
        return cls(int(m.group(1)), int(m.group(2)))

    def item_range(self, n_items: int) -> tuple[int, int]:
        """``(start, stop)`` of this shard's items among ``n_items``."""
        if self.count > n_items:
            raise MultiNeuronError(
                f"{self.count} shards of {n_items} items: some shards would be empty; use at "
                f"most {n_items} shards"
            )
        return self.index * n_items // self.count, (self.index + 1) * n_items // self.count

    def to_dict(self, n_items: int) -> dict:
        start, stop = self.item_range(n_items)
        return {"index": self.index, "count": self.count, "start": start, "stop": stop}

    def record(self, n_items: int, of: str) -> dict:
        """What a shard's run file records (``identity.shard``): the range (:meth:`to_dict`),
        the number of items split and ``of``, the fingerprint of the run they come from."""
        return {**self.to_dict(n_items), "n_items": n_items, "of": of}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def check_cover(shards: Sequence[dict], n_items: int) -> list[dict]:
    """The shard records (``to_dict``) sorted by index, after checking that they are of one
    count, pairwise disjoint and cover all ``n_items`` items; the error names repeats and the
    missing shards."""
    if not shards:
        raise MultiNeuronError("no shards to merge")
    counts = sorted({int(s["count"]) for s in shards})
    if len(counts) != 1:
        raise MultiNeuronError(f"the shards split the data into different counts: {counts}")
    count = counts[0]
    seen: dict[int, int] = {}
    for s in shards:
        seen[int(s["index"])] = seen.get(int(s["index"]), 0) + 1
    repeats = sorted(k for k, v in seen.items() if v > 1)
    if repeats:
        raise MultiNeuronError(f"shard(s) {[f'{k}/{count}' for k in repeats]} given more than once")
    missing = [f"{k}/{count}" for k in range(count) if k not in seen]
    if missing:
        raise MultiNeuronError(f"incomplete: shard(s) {missing} are missing")
    ordered = sorted(shards, key=lambda s: int(s["index"]))
    for s in ordered:
        want = Shard(int(s["index"]), count).to_dict(n_items)
        if (int(s["start"]), int(s["stop"])) != (want["start"], want["stop"]):
            raise MultiNeuronError(
                f"shard {s['index']}/{count} covers items [{s['start']}, {s['stop']}); a "
                f"{count}-way split of {n_items} items gives [{want['start']}, {want['stop']})"
            )
    return ordered
