"""The report section of a language-specificity run (``tl-multineuron specificity``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .reading import load_result, run_info


def specificity_section(rep: Any, d: Path) -> None:
    """The answer first (selectivity per method with intervals), then the matrices, the set
    sizes, LAPE's probabilities and the output language; only what the run has."""
    from . import plots

    rep.h2("Language specificity: identification methods and the deactivation matrix")
    sel = load_result(d / "selectivity.csv", pd.read_csv, "selectivity", rep)
    table = load_result(d / "matrix.csv", pd.read_csv, "deactivation matrix", rep)
    run = run_info(d, "run-specificity.json") or {}
    ident = run.get("identity", {})
    cfg = ident.get("specificity", {})
    n_cal, n_ev = ((run.get(k) or ["?"] * 3)[-1] for k in ("calibration_items", "eval_items"))
    corpus = ident.get("corpus")
    name = repr(corpus.get("name", "?")) if corpus else ""
    held = f"{n_ev} evaluated items' prompt + gold answer"
    token_src = f"every token of the {n_cal} calibration items' prompt + gold answer"
    if corpus:
        held = f"the last {cfg.get('eval_items', '?')} texts per language of corpus {name}"
        token_src = f"every token of corpus {name} (the other texts)"
    unit = cfg.get("unit", "item")
    from_tokens = token_src if unit == "token" else "the same items"
    if run.get("calibration_items"):
        sets = (f"Sets: sharing-matters and magnitude from {n_cal} calibration items (last "
                f"prompt token); LAPE and Act-Prob-90p from {from_tokens}.")  # fmt: skip
    else:
        sets = f"Sets from the corpus alone: LAPE and Act-Prob-90p from {token_src}."
    rep.p(
        f"{sets} Held-out text: {held}, every token scored. Sets equalised per language across "
        f"methods: {cfg.get('equal_size', '?')}; BOS deactivated: {cfg.get('include_bos', False)}."
    )
    left = run.get("methods_left_out") or {}
    if left:
        rep.p("Left out: " + "; ".join(f"{m} ({why})" for m, why in left.items()) + ".")
    if sel is not None and not sel.empty:
        rep.p(
            "Selectivity: own-language change minus the mean change of the other languages "
            "(nats/token; below 0 = specific), for each method's sets and as the paired "
            "difference (per item) from equal-size random and activity-matched controls, "
            "the comparison a claim of specificity rests on."
        )
        rep.figure(lambda: plots.plot_selectivity(sel), "selectivity")
    elif sel is not None:
        rep.p("No method found a non-empty set for any language: nothing to compare.")
    if table is not None:
        for method in dict.fromkeys(table["method"]):
            t = table[table["method"] == method]
            if method == "all-shared":
                all_shared_sentence(rep, t)
            elif t["empty"].astype(str).str.lower().eq("true").all():
                rep.p(f"{method}: no neuron found for any language (no matrix).")
            else:
                rep.figure(lambda m=method: plots.plot_specificity_matrix(table, m),
                           f"matrix {method}")  # fmt: skip
    sizes = load_result(d / "sets.csv", pd.read_csv, "set sizes", rep)
    if sizes is not None and not sizes.empty:
        rep.p("Set sizes per method and language (neurons, all layers)")
        pivot = sizes.pivot_table(index="method", columns="language", values="size",
                                  aggfunc="sum", sort=False)  # fmt: skip
        rep.table(pivot.reset_index())
    lp = d / "lape_probabilities.csv"
    if lp.exists():
        probs = load_result(lp, pd.read_csv, "LAPE probabilities", rep)
        if probs is not None:
            rep.p(
                "LAPE's activation probabilities (share of each language's tokens on which a "
                "neuron is active) per language, beside its two bars (quantiles of all "
                "probabilities) and the set it selects"
            )
            rep.table(probs.round(4))
    ol = d / "output_language.csv"
    if ol.exists():
        lang = load_result(ol, pd.read_csv, "output language", rep)
        if lang is not None and not lang.empty:
            rep.p(
                "Output language: share (%) of greedy continuations identified as the prompts' "
                "language with L's set deactivated, vs the unedited model (paired by item, 95% "
                "interval); only languages the identifier recognises in >= 90% of gold answers."
            )
            rep.table(lang.round(1))
    if sel is not None and not sel.empty:
        rep.folded(f"All selectivity rows ({len(sel)}; selectivity.csv)", sel.round(4))


def all_shared_sentence(rep: Any, t: pd.DataFrame) -> None:
    parts = []
    for control in ("set", "random", "matched"):
        g = t[t["control"] == control]
        if not g.empty:
            parts.append(f"{control} {g['delta'].min():+.2f} to {g['delta'].max():+.2f}")
    size = int(t["set_size"].iloc[0]) if len(t) else 0
    rep.p(
        f"All-shared set ({size} neurons) deactivated: change per language "
        + "; ".join(parts)
        + " nats/token (matrix.csv)."
    )
