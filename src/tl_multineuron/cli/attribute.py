"""``tl-multineuron attribute``: neuron importance (contribution, effective score, integrated
gradients) joined with the sharing categories, into a resumable results directory
(:func:`tl_multineuron.runs.pipelines.run_attribution`)."""

from __future__ import annotations

import argparse

from ..errors import MultiNeuronError
from .options import (
    add_common,
    add_run_control,
    add_shard,
    config_defaults,
    csv,
    dataset,
    identity,
    ints,
    loader,
)

HELP = "neuron importance joined with sharing categories"


def register(b: argparse.ArgumentParser) -> None:
    from ..attribution.analysis import AttributionConfig

    d = config_defaults(AttributionConfig)
    add_common(b, batch_size=d["batch_size"])
    b.add_argument(
        "--method",
        default=csv(d["methods"]),
        help="comma-separated: contribution, effective, ig",
    )
    b.add_argument("--k", default=str(d["k"]), help="top-K per layer: a count or a fraction")
    b.add_argument(
        "--threshold", default=str(d["threshold"]), help="activity threshold for the categories"
    )
    b.add_argument("--criterion", default=d["criterion"], choices=["gt", "abs"])
    b.add_argument("--layers", help="layers for contribution/effective (default all)")
    b.add_argument(
        "--hook",
        default=d["hook"],
        choices=["mlp.hook_post", "gate"],
        help="site whose activity defines the categories (gate: act(gate pre-activation))",
    )
    b.add_argument(
        "--compare-rules",
        action="store_true",
        help="also categorise under post>t, |post|>t and gate>t (report: side by side)",
    )
    b.add_argument(
        "--n-boot", type=int, default=d["n_boot"], help="bootstrap replicates for enrichment"
    )
    b.add_argument(
        "--ig-layers", help="layers for IG: comma-separated or 'all' (default: the last layer)"
    )
    b.add_argument(
        "--ig-preset",
        choices=["dai"],
        help="Dai et al.'s knowledge neurons: prob target, 20-step left Riemann, zero "
        "baseline, coarse at 0.2 x max, refined over the item's languages",
    )
    b.add_argument(
        "--kn-fraction", type=float, default=d["kn_fraction"], help="dai: coarse threshold x max"
    )
    b.add_argument(
        "--kn-share", type=float, default=d["kn_share"], help="dai: refined = in more than this"
    )
    # IG settings: unset flags take the config's defaults (or the --ig-preset's)
    b.add_argument("--steps", type=int, help=f"IG interpolation steps ({d['ig_steps']})")
    b.add_argument("--ig-target", choices=["logprob", "logit", "prob"], help=f"({d['ig_target']})")
    b.add_argument(
        "--ig-method",
        choices=[
            "gausslegendre",
            "riemann_left",
            "riemann_right",
            "riemann_middle",
            "riemann_trapezoid",
        ],
        help=f"({d['ig_method']})",
    )
    b.add_argument("--baseline", choices=["zero", "mean"], help=f"IG ({d['ig_baseline']})")
    b.add_argument(
        "--use-embedding", action="store_true", help="effective score with the tied input embedding"
    )
    add_shard(b)
    add_run_control(b)


def _enrichment_table(frame):
    """``layer x category`` cells 'ratio [low, high]' from an enrichment frame."""
    from ..sharing.classification import CATEGORY_NAMES

    cell = frame.apply(
        lambda r: (
            f"{r.enrichment:.2f} [{r.low:.2f}, {r.high:.2f}]"
            if r.enrichment == r.enrichment
            else "-"
        ),
        axis=1,
    )
    return frame.assign(cell=cell).pivot(index="layer", columns="category", values="cell")[
        list(reversed(CATEGORY_NAMES))
    ]


def run(args: argparse.Namespace) -> int:
    from ..attribution.analysis import AttributionConfig
    from ..attribution.knowledge import DAI_PRESET
    from ..runs.pipelines import run_attribution

    k = float(args.k) if "." in args.k else int(args.k)
    ig = {
        "ig_steps": args.steps,
        "ig_target": args.ig_target,
        "ig_method": args.ig_method,
        "ig_baseline": args.baseline,
    }
    if args.ig_preset == "dai":
        clash = {n: v for n, v in ig.items() if v is not None and v != DAI_PRESET[n]}
        if clash:
            raise MultiNeuronError(
                f"--ig-preset dai means {DAI_PRESET}; the flags also given say {clash}"
            )
        ig = dict(DAI_PRESET)
    ig = {n: v for n, v in ig.items() if v is not None}  # unset: the config's defaults
    methods = tuple(m.strip() for m in args.method.split(","))
    if args.ig_preset == "dai" and "ig" not in methods:
        methods = (*methods, "ig")
    ig_layers = (
        "all"
        if args.ig_layers and args.ig_layers.strip() == "all"
        else ints(args.ig_layers, "--ig-layers")
    )
    config = AttributionConfig(
        methods=methods,
        k=k,
        threshold=float(args.threshold),
        criterion=args.criterion,
        layers=ints(args.layers, "--layers"),
        ig_layers=ig_layers,
        use_embedding=args.use_embedding,
        batch_size=args.batch_size,
        hook=args.hook,
        compare_rules=args.compare_rules,
        n_boot=args.n_boot,
        ig_preset=args.ig_preset,
        kn_fraction=args.kn_fraction,
        kn_share=args.kn_share,
        **ig,
    )
    ds = dataset(args)
    cfg_id = config.to_dict()
    cfg_id.pop("batch_size")
    stats = run_attribution(
        loader(args),
        ds,
        args.out,
        config,
        identity(args, ds, attribution=cfg_id),
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        max_memory=args.max_memory,
        attention=args.attention,
        log=print,
    )
    for m, s in stats.methods.items():
        print(
            f"\n{m}: enrichment of each category among the top-{s.k} neurons (share / base rate, "
            f"pooled over languages; 95% bootstrap interval over {s.n_items} items)"
        )
        print(_enrichment_table(s.enrichment_frame(over=(0,))).to_string())
        if m == "ig":
            print(
                f"IG completeness: mean |gap| {s.gap_abs_sum / max(1, s.n_gaps):.4g}, "
                f"max relative gap {s.rel_gap_max:.3g} over {s.n_gaps} runs"
            )
    if stats.rules:
        print("\nactivity rules: % of the top contributors each rule calls non-activated")
        for _, r in stats.rules_frame().iterrows():
            print(f"  {r.rule:10s} {r['top contributors non-activated %']:5.1f}%")
    if stats.knowledge is not None:
        kn = stats.knowledge.to_frame(pooled=True)
        print(
            f"\nknowledge neurons (Dai et al.): refined per item and category, "
            f"{stats.knowledge.n_items} items"
        )
        print(kn.set_index("category")["per_item"].round(2).to_string())
    print(f"\nresults in {args.out}/ (attribution.pt, attribution.csv)")
    return 0
