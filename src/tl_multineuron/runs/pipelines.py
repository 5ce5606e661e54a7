"""``analyze`` and ``attribute`` into a results directory, resumable by the library itself.

:func:`run_analysis` and :func:`run_attribution` own a run directory
(:class:`~tl_multineuron.runs.directories.RunDir`: one writer, identity checked on resume),
checkpoint the
streaming statistics every few batches, continue from the last checkpoint with
``resume=True``, and write the tables (and, for the analysis, the circuitsvis views). The model
is a model or a zero-argument function that loads one: it is loaded only when items are left
to process (or views to draw). The CLI only parses flags and calls these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..attribution.analysis import AttributionConfig, attribute
from ..attribution.stats import AttributionStats
from ..backends.models import check_model
from ..data.datasets import ParallelDataset
from ..errors import MultiNeuronError
from ..sharing.analysis import AnalysisConfig, analyze
from ..sharing.statistics import SharingStats
from ..sharing.views import neuron_activation_view, save_views, token_activations
from .directories import RunDir, write_attribution_tables, write_stats_tables

#: A model, or a function of no arguments that loads one (called at most once).
ModelSource = Any | Callable[[], Any]


class _Lazy:
    """The model of a :data:`ModelSource`, loaded on first use."""

    def __init__(self, source: ModelSource) -> None:
        self.source, self.model = source, None

    def get(self) -> Any:
        if self.model is None:
            is_loader = callable(self.source) and not hasattr(self.source, "cfg")
            self.model = self.source() if is_loader else self.source
        return self.model


def run_analysis(
    model: ModelSource,
    ds: ParallelDataset,
    out: str | Path,
    config: AnalysisConfig,
    identity: dict,
    *,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: int = 1,
    save_items: bool = False,
    views: bool = True,
    progress: bool = False,
    max_memory: int | str | None = None,
    attention: str = "auto",
    log: Callable[[str], None] | None = None,
) -> SharingStats:
    """The sharing statistics of ``ds`` in ``out`` (``stats.pt`` and its tables): checkpointed
    every ``checkpoint_every`` batches, continued from the checkpoint with ``resume``;
    ``save_items`` keeps every item's categories; ``views``: the first item's circuitsvis view
    (``views.json``). Returns the statistics of every item."""
    if checkpoint_every < 1:
        raise MultiNeuronError(f"checkpoint_every {checkpoint_every}: need >= 1")
    say = log or (lambda _: None)
    lazy = _Lazy(model)
    run = RunDir(out, identity, resume=resume, overwrite=overwrite)
    stats = run.load_checkpoint() if resume else None
    start = stats.n_items if stats is not None else 0
    if start >= len(ds):
        say(f"{out}: all {len(ds)} items already done")
    else:
        t0 = time.perf_counter()
        m = lazy.get()
        say(
            f"{len(ds)} items x {ds.n_languages} languages {list(ds.languages)}"
            + (f", resuming at item {start}" if start else "")
        )
        check_model(m, config.recording.hook_names(m))  # before run.json is written
        run.write_run({"config": config.to_dict(), "n_items": len(ds)})
        state = {"batches": 0, "begin": start}

        def on_batch(end: int, stats: SharingStats, cats: Any) -> None:
            if save_items and cats is not None:
                b = state["begin"]
                ids = [it.item_id for it in ds.items[b:end]]
                run.stage_items(b, ids, cats.codes, cats.specific_lang)
            state["begin"] = end
            state["batches"] += 1
            if state["batches"] % checkpoint_every == 0 or end == len(ds):
                run.checkpoint(stats)

        stats = analyze(
            m,
            ds,
            config,
            progress=progress,
            stats=stats,
            start=start,
            on_batch=on_batch,
            max_memory=max_memory,
            attention=attention,
        ).stats
        run.checkpoint(stats)
        say(f"analysed {len(ds) - start} items in {time.perf_counter() - t0:.1f}s")
    write_stats_tables(stats, out)
    if views and not (Path(out) / "views.json").exists():
        write_item_views(lazy.get(), ds, stats, out)
    return stats


def write_item_views(model: Any, ds: ParallelDataset, stats: SharingStats, out: str | Path) -> Path:
    """``OUT/views.json``: circuitsvis data for the first item, the 4 neurons most often
    all-shared in the first, middle and last recorded layer, token by token, one row per
    language."""
    layers = list(stats.meta.get("layers") or range(stats.n_layers))
    pick = sorted({0, len(layers) // 2, len(layers) - 1})
    neurons = {layers[i]: stats.top_neurons("all-shared", i, 4) for i in pick}
    hook = stats.meta.get("config", {}).get("recording", {}).get("hook", "mlp.hook_post")
    item = ds.items[0]
    toks, acts = token_activations(model, [item.prompts[x] for x in ds.languages], neurons, hook)
    view = neuron_activation_view(
        dict(zip(ds.languages, toks, strict=True)),
        dict(zip(ds.languages, acts, strict=True)),
        [f"L{x}" for x in neurons],
        [f"top-{j + 1} all-shared" for j in range(4)],
        title=f"Item {item.item_id!r}: the 4 neurons most often all-shared in layers "
        f"{list(neurons)} ({', '.join(f'L{x}: {v}' for x, v in neurons.items())})",
    )
    path = Path(out) / "views.json"
    save_views([view], path)
    return path


def run_attribution(
    model: ModelSource,
    ds: ParallelDataset,
    out: str | Path,
    config: AttributionConfig,
    identity: dict,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    max_memory: int | str | None = None,
    attention: str = "auto",
    log: Callable[[str], None] | None = None,
) -> AttributionStats:
    """The attribution statistics of ``ds`` in ``out`` (``attribution.pt`` and its tables):
    checkpointed after every batch, continued from the checkpoint with ``resume``."""
    say = log or (lambda _: None)
    run = RunDir(
        out,
        identity,
        resume=resume,
        overwrite=overwrite,
        kind="attribute",
        stats_file="attribution.pt",
    )
    stats = run.load_checkpoint(AttributionStats.load) if resume else None
    start = stats.n_items if stats is not None else 0
    if start >= len(ds):
        say(f"{out}: all {len(ds)} items already attributed")
    else:
        t0 = time.perf_counter()
        m = _Lazy(model).get()
        run.write_run(
            {
                "config": config.to_dict(),
                "n_items": len(ds),
                "answer_delimiter": ds.answer_delimiter,
            }
        )
        stats = attribute(
            m,
            ds,
            config,
            progress=progress,
            stats=stats,
            start=start,
            on_batch=lambda end, st: run.checkpoint(st),
            max_memory=max_memory,
            attention=attention,
            announce=True,
        ).stats
        run.checkpoint(stats)
        say(f"attributed {len(ds) - start} items in {time.perf_counter() - t0:.1f}s")
    write_attribution_tables(stats, out)
    return stats
