"""What several commands share: option groups (declared once), parsing helpers, the dataset
and model the flags select, and the experiment grid's options and sizes.

Defaults of options that configure a library step come from that step's config dataclass
(:func:`config_defaults`), so the command line and the Python API cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any

from ..errors import MultiNeuronError


def config_defaults(cls: type) -> dict[str, Any]:
    """Field -> default of a config dataclass (fields without a plain default are left out)."""
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


def signature_default(fn: Any, name: str) -> Any:
    """The default of parameter ``name`` of ``fn``."""
    return inspect.signature(fn).parameters[name].default


def csv(values: Any) -> str:
    """A tuple default as the comma-separated text its flag takes."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def add_run_control(p: argparse.ArgumentParser, resume: bool = True) -> None:
    """--resume (where a run can continue) and --overwrite."""
    if resume:
        p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument(
        "--overwrite", action="store_true", help="discard this run's results in --out first"
    )


def floats(text: str, flag: str = "--threshold") -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise MultiNeuronError(f"{flag} {text!r}: expected comma-separated numbers") from e


def ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise MultiNeuronError(f"{flag} {text!r}: expected comma-separated integers") from e


#: the published datasets' options: flag -> (the loader's keyword, how the flag's text is read)
DATA_FLAGS: dict[str, tuple[str, Any]] = {
    "--xnli-prompt": ("prompt", str),
    "--data-split": ("split", str),
    "--relations": ("relations", lambda t: [x.strip() for x in t.split(",") if x.strip()]),
    "--pattern": ("pattern", lambda t: int(t) if t.strip().lstrip("-").isdigit() else t.strip()),
    "--per-relation": ("items_per_relation", int),
    "--question": ("question", str),
    "--prompt-template": ("template", lambda t: t.replace("\\n", "\n")),
}


def add_data_args(p: argparse.ArgumentParser) -> None:
    """--data, --data-format and the options of the published datasets' formats."""
    from ..data.formats import DATA_FORMATS

    p.add_argument(
        "--data",
        help="a data file or directory (JSONL/CSV/TSV parallel file, or a published dataset: "
        "see --data-format)",
    )
    p.add_argument(
        "--data-format",
        default="parallel",
        choices=list(DATA_FORMATS),
        help="how --data is laid out: " + "; ".join(f"{k}: {v}" for k, v in DATA_FORMATS.items()),
    )
    g = p.add_argument_group("published datasets (with --data-format)")
    g.add_argument(
        "--xnli-prompt",
        choices=["authors", "authors-words", "localized"],
        help="xnli: the authors' English prompt answered with the gold label (authors, the "
        "default), the same prompt answered true/inconclusive/false, or our localized templates",
    )
    g.add_argument("--data-split", help="xnli: the split of a hub layout (default: test)")
    g.add_argument("--relations", help="mpararel: relations, e.g. P36,P37 (default: every one)")
    g.add_argument(
        "--pattern",
        help="mpararel: first-human (default: the first human-checked pattern, else the first "
        "usable), first, or a pattern file's line number (0-based)",
    )
    g.add_argument("--per-relation", help="mpararel: at most N items per relation")
    g.add_argument(
        "--question", choices=["src", "rephrase"], help="mzsre: the question asked (default: src)"
    )
    g.add_argument(
        "--prompt-template",
        help="mzsre: the prompt, with {fact_question} {fact_answer} {question} (\\n a newline; "
        "default: ReMaKE's 'Question: {fact_question} Answer: {fact_answer}\\nQuestion: "
        "{question} Answer:')",
    )


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The loader options the published-dataset flags give; a flag of another format is an
    error naming it."""
    from ..data.formats import FORMAT_OPTIONS

    fmt = getattr(args, "data_format", "parallel")
    out: dict[str, Any] = {}
    for flag, (key, read) in DATA_FLAGS.items():
        text = getattr(args, flag[2:].replace("-", "_"), None)
        if text is None:
            continue
        if key not in FORMAT_OPTIONS[fmt]:
            raise MultiNeuronError(f"{flag} does not apply to --data-format {fmt}")
        try:
            out[key] = read(text)
        except ValueError as e:
            raise MultiNeuronError(f"{flag} {text!r}: {e}") from e
    return out


def dataset(args: argparse.Namespace, shard: bool = True):
    """The dataset the flags select; with ``shard`` (and ``--shard``), only that shard."""
    from ..data.formats import load_data
    from ..data.tasks import load_task

    langs = [x.strip() for x in args.languages.split(",")] if args.languages else None
    if bool(args.task) == bool(args.data):
        raise MultiNeuronError("give exactly one of --task NAME or --data FILE")
    if langs is not None and len([x for x in langs if x]) < 2:
        raise MultiNeuronError(
            f"--languages {args.languages!r}: give at least 2 languages to compare"
        )
    delim = delimiter(args)
    fmt = getattr(args, "data_format", "parallel")
    if args.task:
        if fmt != "parallel" or data_options(args):
            raise MultiNeuronError("--data-format and its options go with --data, not --task")
        ds = load_task(args.task, langs, answer_delimiter=delim)
    else:
        ds = load_data(args.data, fmt, langs, answer_delimiter=delim, **data_options(args))
        if ds.source:
            src = ds.source
            print(
                f"data: {src['format']} {src['path']} ({src['options'].get('layout', fmt)}), "
                f"{len(ds)} items x {ds.n_languages} languages; language codes "
                f"{src['language_codes'] or 'as given'}; left out: {src['dropped'] or 'none'}"
            )
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
        from ..runs.shards import Shard

        record = Shard.parse(args.shard).record(len(ds), ds.fingerprint())
        ds = ds.slice(record["start"], record["stop"])
        args.shard_record = record
    return ds


def identity(args: argparse.Namespace, ds, **extra) -> dict:
    """The settings that make results of one run comparable with another's."""
    return {
        "model": args.model,
        "dtype": args.dtype,
        "dataset": ds.name,
        "dataset_fingerprint": ds.fingerprint(),
        "languages": list(ds.languages),
        **({"data_source": dict(ds.source)} if ds.source else {}),
        **({"saes": list(args.sae)} if getattr(args, "sae", None) else {}),
        **({"shard": args.shard_record} if getattr(args, "shard_record", None) else {}),
        **extra,
    }


def load(args: argparse.Namespace, return_info: bool = False):
    """The model the flags name, where they place it."""
    from ..backends.models import load_model
    from ..backends.placement import parse_device_map

    dm = getattr(args, "device_map", None)
    return load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        saes=args.sae or (),
        return_info=return_info,
        device_map=parse_device_map(dm) if dm else None,
    )


def add_device_args(p: argparse.ArgumentParser) -> None:
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


def delimiter(args: argparse.Namespace):
    from ..data.answers import parse_delimiter

    return parse_delimiter(getattr(args, "answer_delimiter", None) or "auto")


def add_delimiter_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--answer-delimiter",
        default="auto",
        help="what separates a prompt from its gold answer where neither has whitespace at the "
        "boundary: auto (a space; none for zh, ja, th, ...), space, none, or per language "
        "en=space,zh=none",
    )


def add_common(p: argparse.ArgumentParser, batch_size: int = 8) -> None:
    """The options of every command that reads a dataset and a model (``batch_size``: the
    default of --batch-size, from the command's config)."""
    p.add_argument(
        "--model",
        default="gemma-3-270m",
        help="'gemma-3-270m' (embedded), a .gguf file, a HF directory or a hub id",
    )
    p.add_argument("--task", help="built-in task (see `tl-multineuron tasks`)")
    add_data_args(p)
    p.add_argument("--languages", help="comma-separated languages (default: all of the data)")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument(
        "--items", help="an item range START:STOP (Python slice of the data, before --limit)"
    )
    add_delimiter_arg(p)
    p.add_argument("--batch-size", type=int, default=batch_size, help="items per forward pass")
    add_device_args(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true")


def loader(args: argparse.Namespace):
    """Load the model the flags name once, saying how; kept on ``args.loaded_model``."""

    def load_once():
        if getattr(args, "loaded_model", None) is None:
            model, info = load(args, return_info=True)
            print(
                f"model {args.model} ({info.kind}, cache hit: {info.cache_hit}) loaded in "
                f"{info.seconds:.1f}s"
            )
            args.loaded_model = model
        return args.loaded_model

    return load_once


def add_shard(p: argparse.ArgumentParser, what: str = "(after --items/--limit)") -> None:
    p.add_argument(
        "--shard",
        help=f"K/N: only shard K (0-based) of N contiguous item ranges {what}; "
        "`tl-multineuron merge` joins the shards",
    )


#: The grid command's sizes: ``main`` (the default: static sets, the paper's central
#: comparisons, 25 conditions) and ``full`` (``--full``: dynamic sets too, four factors, 73).
#: ``intervene`` defaults to the full grid.
GRID_SIZES = {
    "main": {"modes": "static", "alphas": "1.5,2"},
    "full": {"modes": "static,dynamic", "alphas": "1.1,1.5,2,3", "all_categories": True},
}


def add_split_args(p: argparse.ArgumentParser, defaults: dict, calibration_help: str) -> None:
    """--eval-items / --calibration (:func:`~tl_multineuron.data.splits.calibration_split`),
    defaults from a config's ``eval_items`` / ``calibration``."""
    p.add_argument(
        "--eval-items",
        type=int,
        default=defaults["eval_items"],
        help="the last N items are evaluated",
    )
    p.add_argument(
        "--calibration", type=int, default=defaults["calibration"], help=calibration_help
    )


def add_grid_args(p: argparse.ArgumentParser, sized: bool = False) -> None:
    """The grid's flags; ``sized``: --modes / --alphas default to the grid size (see
    ``GRID_SIZES``) instead of the full grid."""
    from ..experiments.conditions import paper_conditions
    from ..runs.grid import GridConfig

    full, d = GRID_SIZES["full"], config_defaults(GridConfig)
    seeds = ",".join(str(s) for s in signature_default(paper_conditions, "seeds"))
    add_split_args(p, d, "the first N other items calibrate static sets")
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
    p.add_argument("--seeds", default=seeds, help="random-control seeds (>= 2)")
    p.add_argument("--no-matched", action="store_true", help="skip activity-matched controls")
    p.add_argument(
        "--all-categories",
        action="store_true",
        help="deactivate the partial-shared and non-activated sets too, each with its own "
        "equal-size and activity-matched controls (on with grid --full and paper)",
    )
    p.add_argument(
        "--other-seeds",
        default=None,
        help="seeds of the partial-shared and non-activated sets' controls (default: --seeds; "
        "paper: 0)",
    )
    p.add_argument(
        "--no-amplify-controls", action="store_true", help="skip random controls of amplification"
    )
    p.add_argument(
        "--min-frequency",
        type=float,
        default=d["min_frequency"],
        help="static set: all-shared in at least this share of calibration items",
    )
    p.add_argument("--specific-frequency", type=float, default=d["specific_frequency"])
    p.add_argument(
        "--hook",
        default=d["hook"],
        help="the site whose units are edited: mlp.hook_post (MLP neurons) or an attached SAE's "
        "features, e.g. hook_resid_post.hook_sae_acts_post (with --sae)",
    )
    p.add_argument("--score-batch", type=int, default=d["score_batch"], help="rows per prompt pass")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="score rows whose neuron set is empty unedited (default: an error)",
    )


def grid_config(args: argparse.Namespace, analysis: bool):
    from ..experiments.conditions import paper_conditions
    from ..runs.grid import GridConfig

    seeds = list(ints(args.seeds, "--seeds") or ())
    if len(seeds) < 2:
        raise MultiNeuronError(
            f"--seeds {args.seeds!r}: random controls need at least 2 seeds for an interval"
        )
    if len(set(seeds)) != len(seeds):
        raise MultiNeuronError(f"--seeds {args.seeds!r}: seeds repeat")
    scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
    conds = paper_conditions(
        alphas=floats(args.alphas, "--alphas"),
        scopes=scopes,
        seeds=seeds,
        modes=[x.strip() for x in args.modes.split(",") if x.strip()],
        matched=not args.no_matched,
        amplify_controls=not args.no_amplify_controls,
        include_bos=(False, True) if args.bos == "both" else (args.bos == "with",),
        other_categories=bool(getattr(args, "all_categories", False)),
        other_seeds=ints(getattr(args, "other_seeds", None), "--other-seeds"),
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


def print_comparisons(comp) -> None:
    from ..runs.grid import headline

    for metric, unit in (("accuracy", "greedy-match accuracy, points"), ("logprob", "nats")):
        print(f"\n{metric} ({unit}); paired by item and language, 95% bootstrap interval")
        print(headline(comp, metric).to_string(index=False))
