"""Command line: ``tl-multineuron analyze | attribute | intervene | grid | report | evaluate |
tasks``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import MultiNeuronError


def _floats(text: str, flag: str = "--threshold") -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise MultiNeuronError(f"{flag} {text!r}: expected comma-separated numbers") from e


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise MultiNeuronError(f"{flag} {text!r}: expected comma-separated integers") from e


def _dataset(args: argparse.Namespace, shard: bool = True):
    """The dataset the flags select; with ``shard`` (and ``--shard``), only that shard."""
    from .data import load_parallel
    from .tasks import load_task

    langs = [x.strip() for x in args.languages.split(",")] if args.languages else None
    if bool(args.task) == bool(args.data):
        raise MultiNeuronError("give exactly one of --task NAME or --data FILE")
    if langs is not None and len([x for x in langs if x]) < 2:
        raise MultiNeuronError(
            f"--languages {args.languages!r}: give at least 2 languages to compare"
        )
    delim = _delimiter(args)
    if args.task:
        ds = load_task(args.task, langs, answer_delimiter=delim)
    else:
        ds = load_parallel(args.data, langs, answer_delimiter=delim)
    if getattr(args, "items", None):
        start, sep, stop = args.items.partition(":")
        try:
            a = int(start) if start.strip() else 0
            b = int(stop) if stop.strip() else None
        except ValueError as e:
            raise MultiNeuronError(f"--items {args.items!r}: expected START:STOP") from e
        if not sep:
            raise MultiNeuronError(f"--items {args.items!r}: expected START:STOP")
        ds = ds.slice(a, b)
    if args.limit is not None:
        if args.limit < 1:
            raise MultiNeuronError(f"--limit {args.limit}: expected at least 1 item")
        ds = ds.head(args.limit)
    if shard and getattr(args, "shard", None):
        from .shards import Shard

        record = Shard.parse(args.shard).record(len(ds), ds.fingerprint())
        ds = ds.slice(record["start"], record["stop"])
        args.shard_record = record
    return ds


def _identity(args: argparse.Namespace, ds, **extra) -> dict:
    """The settings that make results of one run comparable with another's."""
    return {
        "model": args.model,
        "dtype": args.dtype,
        "dataset": ds.name,
        "dataset_fingerprint": ds.fingerprint(),
        "languages": list(ds.languages),
        **({"saes": list(args.sae)} if getattr(args, "sae", None) else {}),
        **({"shard": args.shard_record} if getattr(args, "shard_record", None) else {}),
        **extra,
    }


def _load(args: argparse.Namespace, return_info: bool = False):
    """The model the flags name, where they place it."""
    from .models import load_model
    from .placement import parse_device_map

    dm = getattr(args, "device_map", None)
    return load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        saes=args.sae or (),
        return_info=return_info,
        device_map=parse_device_map(dm) if dm else None,
    )


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: TL's choice)")
    p.add_argument(
        "--sae",
        action="append",
        help="attach an SAE (a directory saved by SAELens, or RELEASE:SAE_ID; repeatable; needs "
        "sae-lens): its features become a site, e.g. --hook hook_resid_post.hook_sae_acts_post",
    )
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument(
        "--device-map",
        default=None,
        help="split the model over devices: auto, balanced, sequential, a JSON object "
        "{module: device}, or devices to split the layers over in order, e.g. cuda:0,cuda:1",
    )
    p.add_argument(
        "--max-memory",
        default=None,
        help="working memory one forward pass may use, e.g. 8GiB (default: 80%% of the "
        "device's free memory); larger batches are split, a prompt that cannot fit is an error",
    )
    p.add_argument(
        "--attention",
        default="auto",
        choices=["auto", "eager", "sdpa"],
        help="recording passes: auto = SDPA where the model allows (memory linear in length)",
    )


def _delimiter(args: argparse.Namespace):
    from .answers import parse_delimiter

    return parse_delimiter(getattr(args, "answer_delimiter", None) or "auto")


def _add_delimiter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--answer-delimiter",
        default="auto",
        help="what separates a prompt from its gold answer where neither has whitespace at the "
        "boundary: auto (a space; none for zh, ja, th, ...), space, none, or per language "
        "en=space,zh=none",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="gemma-3-270m",
        help="'gemma-3-270m' (embedded), a .gguf file, a HF directory or a hub id",
    )
    p.add_argument("--task", help="built-in task (see `tl-multineuron tasks`)")
    p.add_argument("--data", help="JSONL/CSV/TSV parallel data file")
    p.add_argument("--languages", help="comma-separated languages (default: all of the data)")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument(
        "--items", help="an item range START:STOP (Python slice of the data, before --limit)"
    )
    _add_delimiter_arg(p)
    p.add_argument("--batch-size", type=int, default=8, help="items per forward pass")
    _add_device_args(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true")


def _loader(args: argparse.Namespace):
    """Load the model the flags name once, saying how; kept on ``args.loaded_model``."""

    def load():
        if getattr(args, "loaded_model", None) is None:
            model, info = _load(args, return_info=True)
            print(
                f"model {args.model} ({info.kind}, cache hit: {info.cache_hit}) loaded in "
                f"{info.seconds:.1f}s"
            )
            args.loaded_model = model
        return args.loaded_model

    return load


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import AnalysisConfig
    from .pipelines import run_analysis
    from .recording import RecordingConfig

    layers = _ints(args.layers, "--layers")
    config = AnalysisConfig(
        thresholds=_floats(args.threshold),
        criterion=args.criterion,
        recording=RecordingConfig(
            hook=args.hook, token=args.token, aggregate=args.aggregate, layers=layers
        ),
        batch_size=args.batch_size,
    )
    ds = _dataset(args)
    identity = _identity(args, ds, analysis=config.identity(), save_items=bool(args.save_items))
    stats = run_analysis(
        _loader(args),
        ds,
        args.out,
        config,
        identity,
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
    print(f"\nresults in {args.out}/ (stats.pt, layer_fractions.csv, stability.csv)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Join shards (``--shard K/N``, or torchrun's rank directories) into one directory."""
    from .merge import merge_shards

    done = merge_shards(args.shards, args.out, overwrite=args.overwrite)
    for kind, n in done.items():
        print(f"{kind}: merged {len(args.shards)} shards ({n} items)")
    print(f"results in {args.out}/")
    return 0


def _run_distributed(args: argparse.Namespace, info) -> int:
    """One rank of ``torchrun ... -m tl_multineuron analyze|attribute|intervene``: this rank's
    shard into ``OUT/ranks/rank-K-of-N`` (resumable on its own), then the reduction; rank 0
    writes ``OUT`` (:mod:`tl_multineuron.distributed`)."""
    from . import distributed
    from .merge import merge_shards
    from .pipelines import write_item_views
    from .statistics import SharingStats

    if args.command not in ("analyze", "attribute", "intervene"):
        raise MultiNeuronError(
            f"torchrun runs analyze, attribute and intervene, not {args.command}"
        )
    if getattr(args, "shard", None):
        raise MultiNeuronError("--shard and torchrun both split the items; use one of them")
    full = _dataset(args, shard=False)
    n = min(args.eval_items, len(full)) if args.command == "intervene" else len(full)
    what = "evaluated items" if args.command == "intervene" else "items"
    if info.world > n:  # every rank finds this before any of them waits on another
        raise MultiNeuronError(
            f"{info.world} ranks for {n} {what}: some ranks would get nothing; use "
            f"--nproc-per-node (x nodes) <= {n}"
        )
    device = distributed.rank_device(info, args.device)
    backend = distributed.init(info, device)
    out, views = Path(args.out), args.command == "analyze" and not args.no_views
    dirs = [str(distributed.RankInfo(k, info.world, 0).directory(out)) for k in range(info.world)]
    args.shard, args.device, args.out = info.shard, device, dirs[info.rank]
    args.no_views = True
    if info.rank:
        args.no_progress = True
    print(f"rank {info.shard} on {device} ({backend}): shard directory {args.out}")
    try:
        rc = args.func(args)
        if rc:
            return rc
        kind = args.command
        reduced = None
        if kind == "analyze":  # the counters: an all-reduce (sum)
            reduced = distributed.all_reduce_stats(SharingStats.load(Path(args.out) / "stats.pt"))
        else:
            distributed.barrier()
        if info.rank == 0:
            merge_shards(
                dirs,
                out,
                overwrite=args.overwrite,
                resume=args.resume,
                kinds=[kind],
                reduced=reduced,
            )
            if views and not (out / "views.json").exists():
                write_item_views(_loader(args)(), full, reduced, out)
            print(f"rank 0: {info.world} ranks joined into {out}/")
        distributed.barrier()
        return 0
    finally:
        distributed.finish()


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    path = build_report(args.results, args.out)
    print(f"report written to {path}")
    return 0


def _enrichment_table(frame):
    """``layer x category`` cells 'ratio [low, high]' from an enrichment frame."""
    from .classification import CATEGORY_NAMES

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


def cmd_attribute(args: argparse.Namespace) -> int:
    from .attribution_analysis import AttributionConfig
    from .knowledge import DAI_PRESET
    from .pipelines import run_attribution

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
        else _ints(args.ig_layers, "--ig-layers")
    )
    config = AttributionConfig(
        methods=methods,
        k=k,
        threshold=float(args.threshold),
        criterion=args.criterion,
        layers=_ints(args.layers, "--layers"),
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
    ds = _dataset(args)
    cfg_id = config.to_dict()
    cfg_id.pop("batch_size")
    stats = run_attribution(
        _loader(args),
        ds,
        args.out,
        config,
        _identity(args, ds, attribution=cfg_id),
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


def _grid_config(args: argparse.Namespace, analysis: bool):
    from .experiments import paper_conditions
    from .grid import GridConfig

    seeds = list(_ints(args.seeds, "--seeds") or ())
    if len(seeds) < 2:
        raise MultiNeuronError(
            f"--seeds {args.seeds!r}: random controls need at least 2 seeds for an interval"
        )
    if len(set(seeds)) != len(seeds):
        raise MultiNeuronError(f"--seeds {args.seeds!r}: seeds repeat")
    scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
    conds = paper_conditions(
        alphas=_floats(args.alphas, "--alphas"),
        scopes=scopes,
        seeds=seeds,
        modes=[x.strip() for x in args.modes.split(",") if x.strip()],
        matched=not args.no_matched,
        amplify_controls=not args.no_amplify_controls,
        include_bos=(False, True) if args.bos == "both" else (args.bos == "with",),
    )
    return GridConfig(
        conditions=tuple(conds),
        eval_items=args.eval_items,
        calibration=args.calibration,
        min_frequency=args.min_frequency,
        specific_frequency=args.specific_frequency,
        batch_size=args.batch_size,
        score_batch=args.score_batch,
        allow_empty=args.allow_empty,
        analysis=analysis,
        max_memory=args.max_memory,
        attention=args.attention,
        hook=args.hook,
    )


def _print_comparisons(comp) -> None:
    from .grid import headline

    for metric, unit in (("accuracy", "greedy-match accuracy, points"), ("logprob", "nats")):
        print(f"\n{metric} ({unit}); paired by item and language, 95% bootstrap interval")
        print(headline(comp, metric).to_string(index=False))


def cmd_intervene(args: argparse.Namespace) -> int:
    from .grid import run_task
    from .shards import Shard

    ds = _dataset(args, shard=False)
    cfg = _grid_config(args, analysis=False)
    shard = Shard.parse(args.shard) if args.shard else None
    if shard is not None:  # before the model loads: more shards than evaluated items
        shard.item_range(min(cfg.eval_items, len(ds)))
    print(
        f"{len(cfg.conditions)} conditions on the last {cfg.eval_items} items x "
        f"{ds.n_languages} languages of {ds.name!r}; static sets calibrated on up to "
        f"{cfg.calibration} other items"
    )
    model = _load(args)
    comp = run_task(
        model,
        ds,
        args.out,
        cfg,
        _identity(args, ds),
        resume=args.resume,
        overwrite=args.overwrite,
        kind="intervene",
        progress=not args.no_progress,
        log=print,
        shard=shard,
    )
    _print_comparisons(comp)
    print(f"\nresults in {args.out}/ (scores.csv, summary.csv, comparisons.csv)")
    return 0


def _size_grid(args: argparse.Namespace) -> None:
    """Fill the grid command's --modes / --alphas from its size (--quick, default, --full);
    flags given explicitly win, except under --quick."""
    if args.quick and args.full:
        raise MultiNeuronError("--quick and --full: choose one grid size")
    if args.quick:  # a first look: one task, static sets, deactivation with every control
        args.tasks, args.modes, args.alphas = "facts", "static", "2"
        args.no_amplify_controls = True
    size = GRID_SIZES["full" if args.full else "main"]
    args.modes = args.modes or size["modes"]
    args.alphas = args.alphas or size["alphas"]


def cmd_grid(args: argparse.Namespace) -> int:
    from .grid import run_task, write_index
    from .report import build_report
    from .tasks import TASKS, load_task

    _size_grid(args)
    names = list(TASKS) if args.tasks == "all" else [x.strip() for x in args.tasks.split(",")]
    bad = [x for x in names if x not in TASKS]
    if bad or not names:
        raise MultiNeuronError(f"--tasks: unknown task(s) {bad}; built-in: {sorted(TASKS)}")
    cfg = _grid_config(args, analysis=True)
    t0 = time.perf_counter()
    model, info = _load(args, return_info=True)
    print(
        f"model {args.model} loaded in {info.seconds:.1f}s; {len(names)} task(s), "
        f"{len(cfg.conditions)} conditions each, {cfg.eval_items} evaluated items per task"
    )
    out = Path(args.out)
    for name in names:
        ds = load_task(name, answer_delimiter=_delimiter(args))
        args.task = name
        comp = run_task(
            model,
            ds,
            out / name,
            cfg,
            _identity(args, ds),
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            log=print,
        )
        _print_comparisons(comp[comp["reference"] == "none"].head(8))
    write_index(out, names, {"command": " ".join(sys.argv), "seconds": time.perf_counter() - t0})
    path = build_report(out)
    print(f"\ngrid done in {time.perf_counter() - t0:.0f}s; report: {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import EvalConfig, accuracy_table, evaluate
    from .files import atomic_write, write_json
    from .models import provenance

    ds = _dataset(args)
    model = _load(args)
    df = evaluate(
        model, ds, EvalConfig(args.max_new_tokens, args.batch_size), progress=not args.no_progress
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "generations.csv", lambda t: df.to_csv(t, index=False))
    write_json(
        out / "run-evaluate.json",
        {"identity": _identity(args, ds, kind="evaluate"), **provenance(model, "eager")},
    )
    for m in ("prefix_match", "text_match", "first_token_match"):
        print(f"\n{m} accuracy (%)")
        print(accuracy_table(df, m).to_string())
    return 0


def _steer_accuracy_config(args: argparse.Namespace):
    from .steer_runs import AccuracySteerConfig
    from .steering import parse_band

    bands = None
    if args.bands:
        bands = tuple(parse_band(b.strip()) for b in args.bands.split(",") if b.strip())
    return AccuracySteerConfig(
        eval_items=args.eval_items,
        calibration=args.calibration,
        search_items=args.search_items,
        bands=bands,
        alphas=_floats(args.alphas, "--alphas"),
        betas=_floats(args.betas, "--betas"),
        mu_strengths=_floats(args.mu, "--mu") if args.mu else (),
        seeds=_ints(args.seeds, "--seeds") or (),
        min_frequency=args.min_frequency,
        specific_frequency=args.specific_frequency,
        max_english_drop=args.max_english_drop,
        english=args.english,
        batch_size=args.batch_size,
        score_batch=args.score_batch,
        max_memory=args.max_memory,
    )


def _add_language_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="en", help="language: the prompts' language")
    p.add_argument("--targets", help="language: target languages (default: all others)")
    p.add_argument(
        "--methods",
        default="lape,deactivate,lape+deactivate,diff-means",
        help="language: lape (target-specific neurons at strength x their mean), deactivate "
        "(source-specific neurons off), lape+deactivate, diff-means (residual baseline)",
    )
    p.add_argument("--strengths", default="1,2,4,8", help="language: strength sweep")
    p.add_argument(
        "--dom-layer", type=int, help="language: diff-means block (default: 2/3 of the depth)"
    )
    p.add_argument("--lang-eval-items", type=int, default=24, help="language: evaluated items")
    p.add_argument("--max-new-tokens", type=int, default=8, help="language: generated tokens")


def _steer_language_config(args: argparse.Namespace, ds):
    from .language_runs import LanguageSteerConfig

    targets = None
    if args.targets:
        targets = tuple(x.strip() for x in args.targets.split(",") if x.strip())
    return LanguageSteerConfig(
        source=args.source,
        targets=targets,
        methods=tuple(x.strip() for x in args.methods.split(",") if x.strip()),
        strengths=_floats(args.strengths, "--strengths"),
        dom_layer=args.dom_layer,
        eval_items=args.lang_eval_items,
        calibration=args.calibration,
        min_frequency=args.min_frequency,
        specific_frequency=args.specific_frequency,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    ).checked(ds)


def cmd_steer(args: argparse.Namespace) -> int:
    from .steer_runs import run_accuracy_study

    ds = _dataset(args, shard=False)
    out = Path(args.out)
    studies = ("accuracy", "language") if args.study == "both" else (args.study,)
    acc_cfg = _steer_accuracy_config(args) if "accuracy" in studies else None
    lang_cfg = _steer_language_config(args, ds) if "language" in studies else None
    model = _load(args)
    if acc_cfg is not None:
        print(
            f"accuracy steering on {ds.name!r}: search of "
            f"{len(acc_cfg.configs(model.cfg.n_layers))} configurations on "
            f"{acc_cfg.search_items} calibration items, then the last {acc_cfg.eval_items} items"
        )
        comp = run_accuracy_study(
            model, ds, out / "accuracy", acc_cfg, _identity(args, ds),
            resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
            log=print,
        )  # fmt: skip
        _print_steer(comp)
    if lang_cfg is not None:
        from .language_runs import run_language_study

        table = run_language_study(
            model, ds, out / "language", lang_cfg, _identity(args, ds),
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


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import list_tasks, load_task

    for name, desc in list_tasks().items():
        ds = load_task(name)
        print(f"{name:16s} {len(ds):4d} items  {','.join(ds.languages):24s} {desc}")
    return 0


#: The grid command's sizes: ``main`` (the default: static sets, the paper's central
#: comparisons, 25 conditions) and ``full`` (``--full``: dynamic sets too, four factors, 73).
#: ``intervene`` defaults to the full grid.
GRID_SIZES = {
    "main": {"modes": "static", "alphas": "1.5,2"},
    "full": {"modes": "static,dynamic", "alphas": "1.1,1.5,2,3"},
}


def _add_grid_args(p: argparse.ArgumentParser, sized: bool = False) -> None:
    """The grid's flags; ``sized``: --modes / --alphas default to the grid size (see
    ``GRID_SIZES``) instead of the full grid."""
    full = GRID_SIZES["full"]
    p.add_argument("--eval-items", type=int, default=48, help="the last N items are evaluated")
    p.add_argument(
        "--calibration", type=int, default=64, help="the first N other items calibrate static sets"
    )
    p.add_argument(
        "--alphas",
        default=None if sized else full["alphas"],
        help=f"amplification factors (default: {GRID_SIZES['main']['alphas']}; "
        f"--full {full['alphas']})"
        if sized
        else "amplification factors",
    )
    p.add_argument("--scopes", default="last", help="last, all, or both (comma-separated)")
    p.add_argument(
        "--bos",
        default="without",
        choices=["without", "with", "both"],
        help="scope 'all': edit the BOS position too?",
    )
    p.add_argument(
        "--modes",
        default=None if sized else full["modes"],
        help="static and/or dynamic sets"
        + (f" (default: {GRID_SIZES['main']['modes']}; --full {full['modes']})" if sized else ""),
    )
    p.add_argument("--seeds", default="0,1,2,3,4", help="random-control seeds (>= 2)")
    p.add_argument("--no-matched", action="store_true", help="skip activity-matched controls")
    p.add_argument(
        "--no-amplify-controls", action="store_true", help="skip random controls of amplification"
    )
    p.add_argument(
        "--min-frequency",
        type=float,
        default=0.9,
        help="static set: all-shared in at least this share of calibration items",
    )
    p.add_argument("--specific-frequency", type=float, default=0.5)
    p.add_argument(
        "--hook",
        default="mlp.hook_post",
        help="the site whose units are edited: mlp.hook_post (MLP neurons) or an attached SAE's "
        "features, e.g. hook_resid_post.hook_sae_acts_post (with --sae)",
    )
    p.add_argument("--score-batch", type=int, default=64, help="rows per prompt pass")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="score rows whose neuron set is empty unedited (default: an error)",
    )
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")


def _add_shard(p: argparse.ArgumentParser, what: str = "(after --items/--limit)") -> None:
    p.add_argument(
        "--shard",
        help=f"K/N: only shard K (0-based) of N contiguous item ranges {what}; "
        "`tl-multineuron merge` joins the shards",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tl-multineuron", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="sharing categories of MLP neurons across languages")
    _add_common(a)
    a.add_argument("--threshold", default="0", help="threshold or comma-separated sweep")
    a.add_argument(
        "--criterion",
        default="gt",
        choices=["gt", "abs"],
        help="active when a > t (gt, the paper's) or |a| > t (abs)",
    )
    a.add_argument("--hook", default="mlp.hook_post", help="per-block hook suffix")
    a.add_argument("--token", default="last", choices=["last", "all"])
    a.add_argument("--aggregate", default="mean", choices=["mean", "max", "any"])
    a.add_argument("--layers", help="comma-separated layer indices (default all)")
    a.add_argument("--save-items", action="store_true", help="also write per-item categories")
    _add_shard(a)
    a.add_argument("--checkpoint-every", type=int, default=1, help="batches between checkpoints")
    a.add_argument("--no-views", action="store_true", help="skip the circuitsvis views data")
    a.add_argument("--resume", action="store_true", help="continue an interrupted run")
    a.add_argument("--overwrite", action="store_true", help="discard results in --out")
    a.set_defaults(func=cmd_analyze)
    b = sub.add_parser("attribute", help="neuron importance joined with sharing categories")
    _add_common(b)
    b.add_argument(
        "--method",
        default="contribution,effective",
        help="comma-separated: contribution, effective, ig",
    )
    b.add_argument("--k", default="0.05", help="top-K per layer: a count or a fraction")
    b.add_argument("--threshold", default="0", help="activity threshold for the categories")
    b.add_argument("--criterion", default="gt", choices=["gt", "abs"])
    b.add_argument("--layers", help="layers for contribution/effective (default all)")
    b.add_argument(
        "--hook",
        default="mlp.hook_post",
        choices=["mlp.hook_post", "gate"],
        help="site whose activity defines the categories (gate: act(gate pre-activation))",
    )
    b.add_argument(
        "--compare-rules",
        action="store_true",
        help="also categorise under post>t, |post|>t and gate>t (report: side by side)",
    )
    b.add_argument(
        "--n-boot", type=int, default=200, help="bootstrap replicates for enrichment intervals"
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
    b.add_argument("--kn-fraction", type=float, default=0.2, help="dai: coarse threshold x max")
    b.add_argument(
        "--kn-share", type=float, default=0.7, help="dai: refined = in more than this share"
    )
    b.add_argument("--steps", type=int, default=None, help="IG interpolation steps (20)")
    b.add_argument(
        "--ig-target", default=None, choices=["logprob", "logit", "prob"], help="(logprob)"
    )
    b.add_argument(
        "--ig-method",
        default=None,
        choices=[
            "gausslegendre",
            "riemann_left",
            "riemann_right",
            "riemann_middle",
            "riemann_trapezoid",
        ],
    )
    b.add_argument("--baseline", default=None, choices=["zero", "mean"], help="IG (zero)")
    b.add_argument(
        "--use-embedding", action="store_true", help="effective score with the tied input embedding"
    )
    _add_shard(b)
    b.add_argument("--resume", action="store_true")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=cmd_attribute)
    v = sub.add_parser("intervene", help="scores under deactivation / amplification, paired")
    _add_common(v)
    _add_grid_args(v)
    _add_shard(v, "of the evaluated items (every shard calibrates on the same items)")
    v.set_defaults(func=cmd_intervene)
    g = sub.add_parser("grid", help="the paper's grid on built-in tasks + report (main job)")
    g.add_argument("--tasks", default="all", help="comma-separated built-in tasks, or 'all'")
    g.add_argument("--model", default="gemma-3-270m")
    _add_device_args(g)
    g.add_argument("--batch-size", type=int, default=8, help="items per recording pass")
    _add_delimiter_arg(g)
    g.add_argument("--out", required=True)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument(
        "--quick",
        action="store_true",
        help="a first look: facts, static sets, deactivation + controls, amplify x2",
    )
    g.add_argument(
        "--full",
        action="store_true",
        help="the full grid: static and dynamic sets, amplify x1.1/1.5/2/3 with controls "
        "(73 conditions per task)",
    )
    _add_grid_args(g, sized=True)
    g.set_defaults(func=cmd_grid, limit=None, languages=None, data=None, task=None)
    e = sub.add_parser("evaluate", help="task accuracy by greedy generation")
    _add_common(e)
    e.add_argument("--max-new-tokens", type=int, default=8)
    e.set_defaults(func=cmd_evaluate, batch_size=16)
    r = sub.add_parser("report", help="self-contained HTML report of a results directory")
    r.add_argument("results", help="results directory")
    r.add_argument("--out", help="output file (default RESULTS/report.html)")
    r.set_defaults(func=cmd_report)
    mg = sub.add_parser(
        "merge", help="join shards (--shard K/N) of analyze / attribute / intervene into one run"
    )
    mg.add_argument("shards", nargs="+", help="the shards' result directories")
    mg.add_argument("--out", required=True)
    mg.add_argument("--overwrite", action="store_true")
    mg.set_defaults(func=cmd_merge)
    st = sub.add_parser(
        "steer", help="targeted steering: accuracy (band search + held-out) / output language"
    )
    _add_common(st)
    st.add_argument("--study", default="accuracy", choices=["accuracy", "language", "both"])
    st.add_argument("--eval-items", type=int, default=48, help="the last N items are evaluated")
    st.add_argument(
        "--calibration", type=int, default=64, help="the first N items: sets, means, search"
    )
    st.add_argument(
        "--search-items", type=int, default=24, help="accuracy: calibration items the search scores"
    )
    st.add_argument(
        "--bands",
        help="accuracy: layer bands START-STOP (stop excluded), comma-separated "
        "(default: 6 equal bands over the depth)",
    )
    st.add_argument("--alphas", default="1.25,1.5", help="accuracy: all-shared factors")
    st.add_argument("--betas", default="1,0.5", help="accuracy: own-language specific factors")
    st.add_argument("--mu", default="0.5", help="accuracy: Int-mu strengths ('' for none)")
    st.add_argument("--seeds", default="0,1,2", help="random-control seeds")
    st.add_argument("--min-frequency", type=float, default=0.9)
    st.add_argument("--specific-frequency", type=float, default=0.5)
    st.add_argument(
        "--max-english-drop",
        type=float,
        default=1.0,
        help="accuracy: the search rejects configurations losing more English points",
    )
    st.add_argument("--english", default="en", help="the language kept intact")
    st.add_argument("--score-batch", type=int, default=64, help="rows per prompt pass")
    _add_language_args(st)
    st.add_argument("--resume", action="store_true")
    st.add_argument("--overwrite", action="store_true")
    st.set_defaults(func=cmd_steer)
    t = sub.add_parser("tasks", help="list the built-in tasks")
    t.set_defaults(func=cmd_tasks)
    return ap


#: Commands that load a model and run for a while: their first line names any installed
#: version that differs from the tested lock.
LONG_COMMANDS = ("analyze", "attribute", "intervene", "grid", "evaluate", "steer")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in LONG_COMMANDS:
            from .versions import drift_line

            line = drift_line()
            if line is not None:
                print(line, file=sys.stderr, flush=True)
        if getattr(args, "checkpoint_every", 1) < 1:
            raise MultiNeuronError(f"--checkpoint-every {args.checkpoint_every}: expected >= 1")
        if getattr(args, "max_memory", None) is not None:
            from .memory import parse_memory

            parse_memory(args.max_memory)  # a bad size fails before anything loads
        if getattr(args, "device", None) is not None:
            from .devices import resolve_device

            resolve_device(args.device)
        from .distributed import rank_info

        info = rank_info()
        if info is not None:
            return _run_distributed(args, info)
        return args.func(args)
    except MultiNeuronError as e:
        print(f"tl-multineuron: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or directory that cannot be read or written: it is named
        print(f"tl-multineuron: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted; results up to the last checkpoint are saved: rerun with --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        from .locks import release_all

        release_all()


if __name__ == "__main__":
    sys.exit(main())
