"""Calibration / evaluation splits of a dataset, and their disjointness (one implementation for
the grid, ``prepare_sets`` and the steering studies)."""

from __future__ import annotations

from ..errors import MultiNeuronError
from .datasets import ParallelDataset


def check_disjoint(calibration: ParallelDataset, evaluated: ParallelDataset) -> None:
    """Calibration and evaluated items share no item id and no prompt."""
    ids = {i.item_id for i in calibration} & {i.item_id for i in evaluated}
    if ids:
        raise MultiNeuronError(
            f"the calibration split overlaps the evaluated split: item(s) {sorted(ids)[:5]}"
        )
    prompts = {p for i in calibration for p in i.prompts.values()}
    same = [(i.item_id, x) for i in evaluated for x, p in i.prompts.items() if p in prompts]
    if same:
        item, lang = same[0]
        raise MultiNeuronError(
            f"the calibration split overlaps the evaluated split: evaluated item {item!r} "
            f"({lang}) has the prompt of a calibration item"
        )


def calibration_split(
    ds: ParallelDataset, eval_items: int, calibration: int
) -> tuple[ParallelDataset, ParallelDataset]:
    """(calibration, evaluated): the first ``calibration`` items and the last ``eval_items``."""
    if eval_items < 1 or calibration < 1:
        raise MultiNeuronError(f"eval_items {eval_items} / calibration {calibration}: need >= 1")
    if len(ds) <= eval_items:
        raise MultiNeuronError(
            f"{ds.name!r} has {len(ds)} items: evaluating {eval_items} leaves no calibration items"
        )
    ev = ds.slice(len(ds) - eval_items)
    cal = ds.slice(0, min(calibration, len(ds) - eval_items))
    check_disjoint(cal, ev)
    return cal, ev


def split_record(calibration: ParallelDataset, evaluated: ParallelDataset) -> dict:
    """The split as run files record it: first and last item id and the count of each side,
    and the evaluated items' answer delimiter."""
    return {
        "calibration_items": _span(calibration),
        "eval_items": _span(evaluated),
        "answer_delimiter": evaluated.answer_delimiter,
    }


def _span(ds: ParallelDataset) -> list:
    return [ds.items[0].item_id, ds.items[-1].item_id, len(ds)]
