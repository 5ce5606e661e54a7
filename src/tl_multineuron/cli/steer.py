"""``tl-multineuron steer``: accuracy steering in a layer band (a search on calibration items,
one held-out evaluation) and output-language control, each a resumable study."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    add_common,
    add_run_control,
    add_split_args,
    config_defaults,
    csv,
    dataset,
    floats,
    identity,
    ints,
    load,
)

HELP = "targeted steering: accuracy (band search + held-out) / output language"


def register(st: argparse.ArgumentParser) -> None:
    from ..runs.language import LanguageSteerConfig
    from ..runs.steer import AccuracySteerConfig

    d, lang = config_defaults(AccuracySteerConfig), config_defaults(LanguageSteerConfig)
    add_common(st, batch_size=d["batch_size"])
    st.add_argument("--study", default="accuracy", choices=["accuracy", "language", "both"])
    add_split_args(st, d, "the first N items: sets, means, search")
    st.add_argument(
        "--search-items",
        type=int,
        default=d["search_items"],
        help="accuracy: calibration items the search scores",
    )
    st.add_argument(
        "--bands",
        help="accuracy: layer bands START-STOP (stop excluded), comma-separated "
        "(default: 6 equal bands over the depth)",
    )
    st.add_argument("--alphas", default=csv(d["alphas"]), help="accuracy: all-shared factors")
    st.add_argument(
        "--betas", default=csv(d["betas"]), help="accuracy: own-language specific factors"
    )
    st.add_argument(
        "--mu", default=csv(d["mu_strengths"]), help="accuracy: Int-mu strengths ('' for none)"
    )
    st.add_argument("--seeds", default=csv(d["seeds"]), help="random-control seeds")
    st.add_argument("--min-frequency", type=float, default=d["min_frequency"])
    st.add_argument("--specific-frequency", type=float, default=d["specific_frequency"])
    st.add_argument(
        "--max-english-drop",
        type=float,
        default=d["max_english_drop"],
        help="accuracy: the search rejects configurations losing more English points",
    )
    st.add_argument("--english", default=d["english"], help="the language kept intact")
    st.add_argument(
        "--score-batch", type=int, default=d["score_batch"], help="rows per prompt pass"
    )
    _add_language_args(st, lang)
    add_run_control(st)


def _steer_accuracy_config(args: argparse.Namespace):
    from ..runs.steer import AccuracySteerConfig
    from ..steering.sets import parse_band

    bands = None
    if args.bands:
        bands = tuple(parse_band(b.strip()) for b in args.bands.split(",") if b.strip())
    return AccuracySteerConfig(
        eval_items=args.eval_items,
        calibration=args.calibration,
        search_items=args.search_items,
        bands=bands,
        alphas=floats(args.alphas, "--alphas"),
        betas=floats(args.betas, "--betas"),
        mu_strengths=floats(args.mu, "--mu") if args.mu else (),
        seeds=ints(args.seeds, "--seeds") or (),
        min_frequency=args.min_frequency,
        specific_frequency=args.specific_frequency,
        max_english_drop=args.max_english_drop,
        english=args.english,
        batch_size=args.batch_size,
        score_batch=args.score_batch,
        max_memory=args.max_memory,
    )


def _add_language_args(p: argparse.ArgumentParser, d: dict) -> None:
    p.add_argument("--source", default=d["source"], help="language: the prompts' language")
    p.add_argument("--targets", help="language: target languages (default: all others)")
    p.add_argument(
        "--methods",
        default=csv(d["methods"]),
        help="language: lape (target-specific neurons at strength x their mean), deactivate "
        "(source-specific neurons off), lape+deactivate, diff-means (residual baseline)",
    )
    p.add_argument("--strengths", default=csv(d["strengths"]), help="language: strength sweep")
    p.add_argument(
        "--dom-layer", type=int, help="language: diff-means block (default: 2/3 of the depth)"
    )
    p.add_argument(
        "--lang-eval-items", type=int, default=d["eval_items"], help="language: evaluated items"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=d["max_new_tokens"], help="language: generated tokens"
    )


def _steer_language_config(args: argparse.Namespace, ds):
    from ..runs.language import LanguageSteerConfig

    targets = None
    if args.targets:
        targets = tuple(x.strip() for x in args.targets.split(",") if x.strip())
    return LanguageSteerConfig(
        source=args.source,
        targets=targets,
        methods=tuple(x.strip() for x in args.methods.split(",") if x.strip()),
        strengths=floats(args.strengths, "--strengths"),
        dom_layer=args.dom_layer,
        eval_items=args.lang_eval_items,
        calibration=args.calibration,
        min_frequency=args.min_frequency,
        specific_frequency=args.specific_frequency,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    ).checked(ds)


def run(args: argparse.Namespace) -> int:
    from ..runs.steer import run_accuracy_study

    ds = dataset(args, shard=False)
    out = Path(args.out)
    studies = ("accuracy", "language") if args.study == "both" else (args.study,)
    acc_cfg = _steer_accuracy_config(args) if "accuracy" in studies else None
    lang_cfg = _steer_language_config(args, ds) if "language" in studies else None
    model = load(args)
    if acc_cfg is not None:
        print(
            f"accuracy steering on {ds.name!r}: search of "
            f"{len(acc_cfg.configs(model.cfg.n_layers))} configurations on "
            f"{acc_cfg.search_items} calibration items, then the last {acc_cfg.eval_items} items"
        )
        comp = run_accuracy_study(
            model, ds, out / "accuracy", acc_cfg, identity(args, ds),
            resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
            log=print,
        )  # fmt: skip
        _print_steer(comp)
    if lang_cfg is not None:
        from ..runs.language import run_language_study

        table = run_language_study(
            model, ds, out / "language", lang_cfg, identity(args, ds),
            resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
            log=print,
        )  # fmt: skip
        print(table.to_string(index=False))
    print(f"\nresults in {out}/ (tl-multineuron report {out})")
    return 0


def _print_steer(comp) -> None:
    c = comp[comp["metric"] == "accuracy"]
    for _, r in c.iterrows():
        print(
            f"  {r['language']:12s} vs {r['reference']:7s} {r['value']:6.1f}% vs "
            f"{r['reference_value']:6.1f}%  delta {r['delta']:+6.2f} "
            f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        )
