"""One call from a model and a parallel dataset to sharing categories and statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backends.models import check_model, identity_meta, provenance
from ..backends.sites import site_width
from ..data.datasets import ParallelDataset
from ..errors import MultiNeuronError
from .accumulator import check_same_origin
from .classification import Categories, validate_thresholds
from .item_summaries import ItemSummaries
from .recording import CRITERIA, RecordingConfig, iter_dataset
from .statistics import SharingStats


@dataclass(frozen=True)
class AnalysisConfig:
    """What :func:`analyze` computes.

    thresholds: a neuron is active when ``a > t`` (``criterion='gt'``, the paper's) or
        ``|a| > t`` (``'abs'``); several thresholds form a sweep computed from one forward pass.
    recording: where activations are read (hook, token mode, layers).
    batch_size: items per forward pass (each item contributes one prompt per language).
    """

    thresholds: tuple[float, ...] = (0.0,)
    criterion: str = "gt"
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    batch_size: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", validate_thresholds(self.thresholds))
        if self.criterion not in CRITERIA:
            raise MultiNeuronError(f"criterion {self.criterion!r}; expected one of {CRITERIA}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise MultiNeuronError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.recording.criterion != self.criterion:
            object.__setattr__(
                self, "recording", dataclasses.replace(self.recording, criterion=self.criterion)
            )

    def to_dict(self) -> dict:
        return {
            "thresholds": list(self.thresholds),
            "criterion": self.criterion,
            "recording": self.recording.to_dict(),
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> AnalysisConfig:
        return cls(
            tuple(d["thresholds"]),
            d["criterion"],
            RecordingConfig.from_dict(d["recording"]),
            int(d["batch_size"]),
        )

    def identity(self) -> dict:
        """The fields that change results (batch size does not)."""
        d = self.to_dict()
        d.pop("batch_size")
        return d


@dataclass(frozen=True)
class AnalysisResult:
    """Statistics over the dataset, and per-item categories at the first threshold when
    requested (``keep_items=True``; memory then grows with the dataset)."""

    stats: SharingStats
    categories: Categories | None = None
    item_ids: tuple[str, ...] | None = None


def new_stats(model: Any, dataset: ParallelDataset, config: AnalysisConfig) -> SharingStats:
    layers = config.recording.layer_indices(model)
    meta = {
        "site": config.recording.site,
        **identity_meta(model),
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "layers": layers,
        "n_model_layers": int(model.cfg.n_layers),
        "config": config.to_dict(),
    }
    width = site_width(model, config.recording.hook, layers)
    items = ItemSummaries(dataset.languages, config.thresholds, len(layers), width)
    return SharingStats(
        dataset.languages,
        config.thresholds,
        config.criterion,
        len(layers),
        width,
        meta=meta,
        items=items,
    )


def analyze(
    model: Any,
    dataset: ParallelDataset,
    config: AnalysisConfig | None = None,
    *,
    keep_items: bool = False,
    progress: bool = False,
    stats: SharingStats | None = None,
    start: int = 0,
    on_batch: Callable[[int, SharingStats, Categories], None] | None = None,
    max_memory: int | str | None = None,
    attention: str = "auto",
) -> AnalysisResult:
    """Sharing categories of every MLP neuron for every item of ``dataset``.

    ``stats``/``start`` continue an earlier accumulation from item ``start``; ``on_batch(end,
    stats, categories)`` is called after each batch (the CLI checkpoints there).
    ``max_memory`` / ``attention``: see :func:`~tl_multineuron.sharing.recording.iter_dataset`; the
    device and attention implementation used are recorded in ``stats.meta``.
    """
    config = config or AnalysisConfig()
    check_model(model)
    check_model(model, config.recording.hook_names(model))
    if stats is not None:
        check_same_origin(stats.meta, identity_meta(model), "statistics", verb="continue")
    if stats is not None and start != stats.n_items:
        raise MultiNeuronError(
            f"start {start} does not continue the given statistics, which hold "
            f"{stats.n_items} items"
        )
    stats = stats if stats is not None else new_stats(model, dataset, config)
    stats.meta.update(provenance(model, attention))
    kept: list[torch.Tensor] = []
    kept_lang: list[torch.Tensor] = []
    batches = iter_dataset(
        model,
        dataset,
        config.recording,
        config.batch_size,
        start,
        progress,
        max_memory=max_memory,
        attention=attention,
    )
    for s, acts in batches:
        all_cats = stats.update(acts, [it.item_id for it in dataset.items[s : s + acts.shape[0]]])
        cats = None
        if keep_items or on_batch is not None:  # the first threshold's categories
            cats = Categories(
                all_cats.codes[0].cpu(), all_cats.specific_lang[0].cpu(), all_cats.languages
            )
        if keep_items:
            kept.append(cats.codes)
            kept_lang.append(cats.specific_lang)
        if on_batch is not None:
            on_batch(s + acts.shape[0], stats, cats)
    categories = item_ids = None
    if keep_items and kept:
        categories = Categories(torch.cat(kept), torch.cat(kept_lang), dataset.languages)
        item_ids = tuple(it.item_id for it in dataset.items[start:])
    return AnalysisResult(stats, categories, item_ids)
