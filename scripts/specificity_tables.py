"""Markdown tables of `tl-multineuron specificity` runs for README / docs.

    python scripts/specificity_tables.py RUN [RUN ...] > /tmp/specificity.md

For each RUN (the ``--out`` directory; the study is in RUN/specificity/): the command and commit
that made it, the set sizes per method and language, selectivity per method (sets, random and
activity-matched controls) over the languages every method found neurons for, the diagonal
and mean off-diagonal change of each method's matrix, the all-shared row, and the output
language. Recomputed here from ``matrix_rows.csv`` / ``generations.csv`` with the library's
own functions, so the tables follow the code that prints them; ``matrix.csv``,
``selectivity.csv`` and ``output_language.csv`` of the run are rewritten from the same
computation (rebuild the report afterwards).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

from tl_multineuron.experiments.language_sets import LanguageSets
from tl_multineuron.experiments.specificity import matrix_table, output_language_table, selectivity
from tl_multineuron.runs.specificity import common_languages


def _ci(v: float, lo: float, hi: float, digits: int = 3) -> str:
    bold = hi < 0 or lo > 0
    s = f"{v:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return f"**{s}**" if bold else s


def one(run: Path) -> None:
    d = run / "specificity"
    info = json.loads((d / "run-specificity.json").read_text())
    ident = info["identity"]
    print(f"### {ident['model']}, {ident['dataset']}\n")
    print(
        f"Made by `{info['command']}` at commit {info.get('commit', '?')[:7]}; "
        f"{info['calibration_items'][-1]} calibration items, {info['eval_items'][-1]} evaluated "
        f"items x {len(ident['languages'])} languages.\n"
    )
    sizes = pd.read_csv(d / "sets.csv")
    piv = sizes.pivot_table(
        index="method", columns="language", values="size", aggfunc="sum", sort=False
    )
    piv = piv[ident["languages"]]
    print(
        "Set sizes (neurons, all layers; equalised per language over the methods that found any):\n"
    )
    print(piv.to_markdown(disable_numparse=True) + "\n")
    lp = d / "lape_probabilities.csv"
    if lp.exists():
        p = pd.read_csv(lp)
        print(
            "LAPE's activation probabilities on running text (the share of each language's "
            "tokens on which a neuron's gate is active, over all neurons), beside its bars "
            f"(filter {p['filter_bar'].iloc[0]:.4f}, activation bar "
            f"{p['activation_bar'].iloc[0]:.4f}: quantiles 0.95 of all probabilities):\n"
        )
        cols = ["language", "mean", "median", "q90", "q99", "share_zero", "share_one",
                "above_bar", "set_size"]  # fmt: skip
        print(p[cols].to_markdown(index=False, floatfmt=".4f") + "\n")
    masks = torch.load(d / "sets.pt", weights_only=True)
    rows = pd.read_csv(d / "matrix_rows.csv", keep_default_na=False, dtype={"item_id": str})
    langs = ident["languages"]
    common = common_languages_from(masks, langs)
    sel = selectivity(rows, languages=common)
    sel.to_csv(d / "selectivity.csv", index=False)
    all_rows = sel[sel["set_language"] == "all"]
    print(
        f"Selectivity over {', '.join(common)} (own-language change minus the mean of the "
        "others, nats/token, paired 95% interval over items; bold: excludes 0):\n"
    )
    t = all_rows.assign(v=[_ci(r.selectivity, r.ci_low, r.ci_high) for r in all_rows.itertuples()])
    wide = t.pivot_table(index="method", columns="control", values="v", aggfunc="first", sort=False)
    cols = [c for c in ("set", "random", "matched", "set - random", "set - matched") if c in wide]
    print(
        "The last two columns are the paired differences (set minus control, per item, seeds "
        "pooled): a set is specific when they exclude 0 below it.\n"
    )
    print(wide[cols].to_markdown(disable_numparse=True) + "\n")
    per = sel[(sel["control"] == "set") & (sel["set_language"] != "all")]
    per = per.assign(v=[f"{r.selectivity:+.3f}" for r in per.itertuples()])
    print("Selectivity of each method's set, per language (nats/token):\n")
    wide = per.pivot_table(
        index="method", columns="set_language", values="v", aggfunc="first", sort=False
    )
    print(wide.reindex(columns=langs).fillna("empty").to_markdown(disable_numparse=True) + "\n")
    sets = [LanguageSets(m, tuple(langs), t, t.float()) for m, t in masks.items()]
    mt = matrix_table(rows, sets=sets)
    mt.to_csv(d / "matrix.csv", index=False)
    shared = mt[mt["method"] == "all-shared"]
    if not shared.empty:
        s = shared.groupby("control")["delta"].agg(["min", "max"])
        print(
            f"All-shared set ({int(shared['set_size'].iloc[0])} neurons) deactivated: change "
            "per language "
            + "; ".join(f"{c} {r['min']:+.2f} to {r['max']:+.2f}" for c, r in s.iterrows())
            + " nats/token.\n"
        )
    g = d / "generations.csv"
    if g.exists():
        gen = pd.read_csv(g, keep_default_na=False, dtype={"item_id": str})
        gen["in_language"] = gen["in_language"].astype(str).str.lower() == "true"
        ol = output_language_table(gen)
        ol.to_csv(d / "output_language.csv", index=False)
        ol = ol[ol["control"] == "set"]
        ol = ol.assign(v=[f"{r.share:.0f}% ({_ci(r.delta, r.ci_low, r.ci_high, 0)})"
                          for r in ol.itertuples()])  # fmt: skip
        print(
            "Output language (share of greedy continuations still in the prompts' language "
            "with its set deactivated; in brackets the paired change vs unedited, points):\n"
        )
        print(ol.pivot_table(index="method", columns="language", values="v", aggfunc="first",
                             sort=False).to_markdown(disable_numparse=True) + "\n")  # fmt: skip


def common_languages_from(masks: dict, langs: list[str]) -> list[str]:
    sets = [LanguageSets(m, tuple(langs), t, t.float()) for m, t in masks.items()]
    return common_languages(sets)


if __name__ == "__main__":
    for r in sys.argv[1:]:
        one(Path(r))
