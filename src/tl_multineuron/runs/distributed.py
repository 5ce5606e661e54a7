"""Data-parallel runs on ``torch.distributed``: ``torchrun --nproc-per-node N -m
tl_multineuron analyze|attribute|intervene ...``.

Each rank is shard ``rank/world`` of the items (of the evaluated items for ``intervene``), runs
on its own device (``cuda:LOCAL_RANK`` where CUDA is usable, else the CPU) and writes an
ordinary shard directory ``OUT/ranks/rank-K-of-N/`` with its own checkpoints, so ``--resume``
continues each rank where it stopped. When every rank is done, the sharing counters are
all-reduced (sum; gloo on CPU, nccl on GPUs) and rank 0 alone writes ``OUT``; attribution and
experiment scores, which are not plain sums, are joined by rank 0 with ``merge``'s code. A rank
that dies never reaches the reduction: torchrun stops the others, nothing is written to
``OUT``, and a rerun with ``--resume`` finishes the missing shard.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import MultiNeuronError
from ..sharing.statistics import TENSOR_FIELDS, SharingStats


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int

    @property
    def shard(self) -> str:
        return f"{self.rank}/{self.world}"

    def directory(self, out: str | Path) -> Path:
        """This rank's shard directory under ``out``."""
        return Path(out) / "ranks" / f"rank-{self.rank}-of-{self.world}"


def rank_info() -> RankInfo | None:
    """The torchrun rank of this process (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``), or
    ``None`` outside torchrun. A one-rank torchrun job still runs distributed (rank directory,
    reduction), which is how the bookkeeping's cost is measured."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return RankInfo(
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
        )
    except ValueError as e:
        raise MultiNeuronError(f"torchrun environment not understood: {e}") from e


def rank_device(info: RankInfo, requested: str | None) -> str:
    """The device of a rank: ``cuda:LOCAL_RANK`` when CUDA is usable and ``requested`` is
    ``None`` or ``"cuda"``; ``"cpu"`` when asked or without CUDA. A device with an index would
    put every rank on one GPU, so it is refused."""
    if requested in (None, "cuda"):
        if torch.cuda.is_available():
            if info.local_rank >= torch.cuda.device_count():
                raise MultiNeuronError(
                    f"rank {info.rank} has local rank {info.local_rank} but this node has "
                    f"{torch.cuda.device_count()} CUDA device(s); use --nproc-per-node <= that"
                )
            return f"cuda:{info.local_rank}"
        if requested == "cuda":
            raise MultiNeuronError("--device cuda under torchrun, but CUDA is not usable here")
        return "cpu"
    if requested == "cpu":
        return "cpu"
    raise MultiNeuronError(
        f"--device {requested!r} under torchrun: each rank takes cuda:LOCAL_RANK (pass --device "
        "cuda, or nothing) or the CPU (--device cpu)"
    )


def init(info: RankInfo, device: str, timeout_s: float = 1800.0) -> str:
    """Join the process group (nccl for CUDA devices, gloo otherwise); returns the backend."""
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(
            backend,
            rank=info.rank,
            world_size=info.world,
            timeout=timedelta(seconds=timeout_s),
        )
    return dist.get_backend()


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def all_reduce_stats(stats: SharingStats) -> SharingStats:
    """A new accumulator holding the sum of every rank's ``stats`` (collective: every rank
    calls it). Counts are integers and sums lie on a binary grid, so the sum is exact in any
    reduction order and equals :meth:`SharingStats.merge` of the ranks' shards."""
    dev = _comm_device()
    out = stats.copy()
    for name in TENSOR_FIELDS:
        t = getattr(stats, name).to(dev).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        setattr(out, name, t.cpu())
    n = torch.tensor([stats.n_items], dtype=torch.int64, device=dev)
    dist.all_reduce(n, op=dist.ReduceOp.SUM)
    out.n_items = int(n.item())
    fps: list = [None] * dist.get_world_size()
    dist.all_gather_object(fps, stats.meta.get("dataset_fingerprint"))
    out.meta["dataset_fingerprints"] = sorted(f for f in fps if f)
    return out


def barrier() -> None:
    dist.barrier()


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


#: the commands a torchrun job runs
KINDS = ("analyze", "attribute", "intervene")


def run_ranks(
    info: RankInfo,
    kind: str,
    n_items: int,
    out: str | Path,
    device: str | None,
    run_shard: Callable[[str, str, Path, bool], int],
    *,
    overwrite: bool = False,
    resume: bool = False,
    views: Callable[[SharingStats, Path], None] | None = None,
    announce: Callable[[str], None] = lambda _: None,
) -> int:
    """One rank of a torchrun job of ``kind`` over ``n_items`` items (evaluated items for
    ``intervene``): ``run_shard(shard, device, directory, progress)`` runs this rank's shard
    into ``OUT/ranks/rank-K-of-N`` (resumable on its own), then the reduction: the sharing
    counters are all-reduced, the other kinds joined with ``merge``'s code; rank 0 alone
    writes ``out`` (and, with ``views``, the item views of the reduced statistics).
    ``announce`` gets a line per step. Returns the shard's exit code when it fails, else 0."""
    from .merge import merge_shards

    if kind not in KINDS:
        raise MultiNeuronError(f"torchrun runs {', '.join(KINDS)}, not {kind}")
    if info.world > n_items:  # every rank finds this before any of them waits on another
        what = "evaluated items" if kind == "intervene" else "items"
        raise MultiNeuronError(
            f"{info.world} ranks for {n_items} {what}: some ranks would get nothing; use "
            f"--nproc-per-node (x nodes) <= {n_items}"
        )
    out = Path(out)
    device = rank_device(info, device)
    backend = init(info, device)
    dirs = [RankInfo(k, info.world, 0).directory(out) for k in range(info.world)]
    announce(f"rank {info.shard} on {device} ({backend}): shard directory {dirs[info.rank]}")
    try:
        rc = run_shard(info.shard, device, dirs[info.rank], info.rank == 0)
        if rc:
            return rc
        reduced = None
        if kind == "analyze":  # the counters: an all-reduce (sum)
            reduced = all_reduce_stats(SharingStats.load(dirs[info.rank] / "stats.pt"))
        else:
            barrier()
        if info.rank == 0:
            merge_shards(
                [str(d) for d in dirs],
                out,
                overwrite=overwrite,
                resume=resume,
                kinds=[kind],
                reduced=reduced,
            )
            if views is not None and reduced is not None and not (out / "views.json").exists():
                views(reduced, out)
            announce(f"rank 0: {info.world} ranks joined into {out}/")
        barrier()
        return 0
    finally:
        finish()
