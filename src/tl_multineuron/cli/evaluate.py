"""``tl-multineuron evaluate``: accuracy by greedy generation (token prefix, text and first-token
match per task and language)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_common, config_defaults, dataset, identity, load

HELP = "task accuracy by greedy generation"


def register(e: argparse.ArgumentParser) -> None:
    from ..experiments.evaluation import EvalConfig

    d = config_defaults(EvalConfig)
    add_common(e, batch_size=d["batch_size"])
    e.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"])


def run(args: argparse.Namespace) -> int:
    from ..backends.models import provenance
    from ..experiments.evaluation import EvalConfig, accuracy_table, evaluate
    from ..files import atomic_write, write_json

    ds = dataset(args)
    model = load(args)
    df = evaluate(
        model, ds, EvalConfig(args.max_new_tokens, args.batch_size), progress=not args.no_progress
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "generations.csv", lambda t: df.to_csv(t, index=False))
    write_json(
        out / "run-evaluate.json",
        {"identity": identity(args, ds, kind="evaluate"), **provenance(model, "eager")},
    )
    for m in ("prefix_match", "text_match", "first_token_match"):
        print(f"\n{m} accuracy (%)")
        print(accuracy_table(df, m).to_string())
    return 0
