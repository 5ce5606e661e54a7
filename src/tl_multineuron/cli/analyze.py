"""``tl-multineuron analyze``: sharing categories of MLP neurons across languages, into a
resumable results directory (:func:`tl_multineuron.runs.pipelines.run_analysis`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    add_common,
    add_run_control,
    add_shard,
    config_defaults,
    csv,
    dataset,
    floats,
    identity,
    ints,
    loader,
)

HELP = "sharing categories of MLP neurons across languages"


def register(a: argparse.ArgumentParser) -> None:
    from ..sharing.analysis import AnalysisConfig
    from ..sharing.recording import RecordingConfig

    d, r = config_defaults(AnalysisConfig), config_defaults(RecordingConfig)
    add_common(a, batch_size=d["batch_size"])
    a.add_argument(
        "--threshold", default=csv(d["thresholds"]), help="threshold or comma-separated sweep"
    )
    a.add_argument(
        "--criterion",
        default=d["criterion"],
        choices=["gt", "abs"],
        help="active when a > t (gt, the paper's) or |a| > t (abs)",
    )
    a.add_argument("--hook", default=r["hook"], help="per-block hook suffix")
    a.add_argument("--token", default=r["token"], choices=["last", "all"])
    a.add_argument("--aggregate", default=r["aggregate"], choices=["mean", "max", "any"])
    a.add_argument("--layers", help="comma-separated layer indices (default all)")
    a.add_argument("--save-items", action="store_true", help="also write per-item categories")
    add_shard(a)
    a.add_argument("--checkpoint-every", type=int, default=1, help="batches between checkpoints")
    a.add_argument("--no-views", action="store_true", help="skip the circuitsvis views data")
    add_run_control(a)


def run(args: argparse.Namespace) -> int:
    from ..runs.pipelines import run_analysis
    from ..sharing.analysis import AnalysisConfig
    from ..sharing.recording import RecordingConfig

    layers = ints(args.layers, "--layers")
    config = AnalysisConfig(
        thresholds=floats(args.threshold),
        criterion=args.criterion,
        recording=RecordingConfig(
            hook=args.hook, token=args.token, aggregate=args.aggregate, layers=layers
        ),
        batch_size=args.batch_size,
    )
    ds = dataset(args)
    ident = identity(args, ds, analysis=config.identity(), save_items=bool(args.save_items))
    stats = run_analysis(
        loader(args),
        ds,
        args.out,
        config,
        ident,
        resume=args.resume,
        overwrite=args.overwrite,
        checkpoint_every=args.checkpoint_every,
        save_items=bool(args.save_items),
        views=not args.no_views,
        progress=not args.no_progress,
        max_memory=args.max_memory,
        attention=args.attention,
        log=print,
    )
    print(
        f"\nsite {stats.meta.get('site')}, criterion {stats.criterion}, "
        f"threshold {stats.thresholds[0]}: % of neurons per item"
    )
    print(stats.summary().round(2).to_string())
    sim = Path(args.out) / "language_similarity.csv"
    if sim.is_file():
        import pandas as pd

        table = pd.read_csv(sim)
        pooled = table[(table.layer == "all") & (table.threshold == stats.thresholds[0])]
        if len(pooled):
            print(
                "\nco-activation distance (1 - Jaccard, layers pooled) vs typological distance, "
                "Mantel test (Spearman, two-sided):"
            )
            cols = ["distance", "statistic", "p_value", "n_languages"]
            print(pooled[cols].round(4).to_string(index=False))
    print(
        f"\nresults in {args.out}/ (stats.pt, layer_fractions.csv, stability.csv, "
        "category_bands.csv, language_pairs.csv, partial_subsets.csv, language_similarity.csv)"
    )
    return 0
