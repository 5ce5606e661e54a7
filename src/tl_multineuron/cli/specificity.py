"""``tl-multineuron specificity``: which neurons are language-specific, by their effect.

Every identification method (sharing-matters, LAPE, Act-Prob-90p, magnitude) picks each
language's neurons: sharing-matters and magnitude from one recording pass over the calibration
items, LAPE and Act-Prob-90p from every token of running text (``--corpus DIR`` of LANG.txt
files, one text per line, whose last ``--eval-items`` texts are held out; by default the
calibration items' prompts + gold answers): LAPE at the gate on gated MLPs, Act-Prob-90p at the
pre-activation as its authors read it. ``--corpus DIR`` alone (no ``--task`` / ``--data``) is
enough: the methods and comparisons that need items are named and left out. ``--window lape``
runs LAPE's own rows. A LAPE ``*.neuron.pth``
(``--lape-file``, ``--lape-languages``) is judged beside them. Deactivating language L's set,
every language's held-out text (the corpus's held-out texts, else the evaluated prompts + gold
answers; every token scored) is scored: a language x language matrix of changes in
log-likelihood (and perplexity) per method, with random and activity-matched controls, a
selectivity score per method, the all-shared set on the same axes, and the share of greedy
outputs still in L. Resumable; results in OUT/specificity/.
"""

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
    identity,
    ints,
    load,
)

HELP = "language-specific neurons: methods side by side, deactivation matrix, output language"


def register(p: argparse.ArgumentParser) -> None:
    from ..runs.specificity import SpecificityRunConfig

    d = config_defaults(SpecificityRunConfig)
    add_common(p, batch_size=d["batch_size"])
    add_split_args(p, d, "the first N items: the recording pass every method's sets come from")
    p.add_argument(
        "--methods", default=csv(d["methods"]), help="identification methods, comma-separated"
    )
    p.add_argument(
        "--no-equal-size",
        action="store_true",
        help="keep each method's own set sizes (default: per language, every method's set is "
        "cut to the smallest method's size, its highest-scoring neurons kept)",
    )
    p.add_argument(
        "--min-frequency",
        type=float,
        default=d["min_frequency"],
        help="sharing-matters: specific to the language in at least this share of the items",
    )
    p.add_argument(
        "--top-rate",
        type=float,
        default=d["top_rate"],
        help="lape / magnitude: the share of all neurons selected",
    )
    p.add_argument(
        "--act-prob-rate",
        type=float,
        default=d["act_prob_rate"],
        help="act-prob-90p: each language's share of all neurons (its authors' 0.00125)",
    )
    p.add_argument(
        "--filter-rate",
        type=float,
        default=d["filter_rate"],
        help="lape: drop neurons none of whose probabilities exceed this "
        "quantile of all probabilities",
    )
    p.add_argument(
        "--activation-bar-ratio",
        type=float,
        default=d["activation_bar_ratio"],
        help="lape: a neuron belongs to the languages whose probability exceeds "
        "this quantile of all probabilities",
    )
    p.add_argument("--seeds", default=csv(d["seeds"]), help="random / matched control seeds")
    p.add_argument(
        "--shared-frequency",
        type=float,
        default=d["shared_frequency"],
        help="the all-shared comparison set: all-shared in at least this share of the items",
    )
    p.add_argument(
        "--corpus",
        help="running text: a directory of LANG.txt files, one text per line (LAPE's layout); "
        "its languages are the files found (or --languages). Enough alone: without --task / "
        "--data the methods that need items are left out",
    )
    p.add_argument(
        "--unit",
        choices=("token", "item"),
        default=d["unit"],
        help="lape / act-prob-90p: over every token of running text, as published (token), or "
        "at the last prompt token of the calibration items (item)",
    )
    p.add_argument(
        "--window",
        default=d["window"],
        help="rows of running text: N (packed rows of N tokens, each behind a BOS), 'lape' "
        "(LAPE's own: one stream per language, rows of the model's context, no BOS, remainder "
        "dropped) or 'lape:N' (LAPE's with rows of N); default: one text per row",
    )
    p.add_argument("--lape-file", help="a LAPE *.neuron.pth judged beside the methods")
    p.add_argument(
        "--lape-languages",
        help="the LAPE file's languages in its order, comma-separated (the file has no names)",
    )
    p.add_argument(
        "--edit-bos",
        action="store_true",
        help="deactivate at the BOS position too (default: every position but BOS)",
    )
    p.add_argument("--no-generate", action="store_true", help="skip the output-language study")
    p.add_argument(
        "--max-new-tokens", type=int, default=d["max_new_tokens"], help="generated tokens"
    )
    p.add_argument(
        "--score-batch", type=int, default=d["score_batch"], help="rows per scoring pass"
    )
    p.add_argument(
        "--generate-batch",
        type=int,
        default=d["generate_batch"],
        help="(set, prompt) rows per generation batch of the output-language study",
    )
    add_run_control(p)


def run(args: argparse.Namespace) -> int:
    from ..data.corpus import load_corpus
    from ..runs.specificity import SpecificityRunConfig, run_specificity

    corpus = None
    if args.corpus:
        langs = [x.strip() for x in args.languages.split(",")] if args.languages else None
        corpus = load_corpus(args.corpus, langs)
        args.languages = ",".join(corpus.languages)
    ds = dataset(args, shard=False) if corpus is None or args.task or args.data else None
    cfg = SpecificityRunConfig(
        methods=tuple(x.strip() for x in args.methods.split(",") if x.strip()),
        eval_items=args.eval_items,
        calibration=args.calibration,
        equal_size=not args.no_equal_size,
        min_frequency=args.min_frequency,
        top_rate=args.top_rate,
        filter_rate=args.filter_rate,
        activation_bar_ratio=args.activation_bar_ratio,
        seeds=ints(args.seeds, "--seeds") or (),
        shared_frequency=args.shared_frequency,
        generate=not args.no_generate,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        score_batch=args.score_batch,
        generate_batch=args.generate_batch,
        unit=args.unit,
        window=args.window,
        include_bos=args.edit_bos,
        act_prob_rate=args.act_prob_rate,
    )
    lape_langs = (
        [x.strip() for x in args.lape_languages.split(",")] if args.lape_languages else None
    )
    model = load(args)
    out = Path(args.out)
    tables = run_specificity(
        model, ds, out / "specificity", cfg, _identity(args, ds, corpus), corpus=corpus,
        lape_file=args.lape_file, lape_languages=lape_langs, resume=args.resume,
        overwrite=args.overwrite, progress=not args.no_progress, log=print,
    )  # fmt: skip
    sel = tables["selectivity"]
    if sel.empty:
        print("\nno method found a non-empty set for any language: nothing to compare")
        return 0
    own = sel[(sel["set_language"] == "all")]
    print("\nselectivity (own-language change minus the others', nats/token; 95% interval):")
    for _, r in own.iterrows():
        print(
            f"  {r['method']:16s} {r['control']:8s} {r['selectivity']:+.4f} "
            f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        )
    print(f"\nresults in {out}/specificity/ (tl-multineuron report {out})")
    return 0


def _identity(args: argparse.Namespace, ds, corpus) -> dict:
    """The run's identity: the dataset's, or the corpus's when it runs alone."""
    if ds is not None:
        return identity(args, ds)
    from ..sharing.token_stats import corpus_fingerprint

    return {
        "model": args.model,
        "dtype": args.dtype,
        "dataset": corpus.name,
        "dataset_fingerprint": corpus_fingerprint(corpus),
        "languages": list(corpus.languages),
    }
