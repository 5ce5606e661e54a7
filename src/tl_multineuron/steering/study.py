"""The accuracy-steering study: search on a calibration split, one held-out evaluation.

1. :func:`score_steering` scores rows (item x language, item-major) under many
   :class:`~tl_multineuron.steering.sets.SteerConfig` at once with the one-pass scorer (the prompt
   prefix is cached once and configurations share padded batches).
2. :func:`search_surface` summarises the calibration rows per configuration: deltas vs no
   steering of the mean gold log-probability and accuracy, non-English and English apart;
   :func:`choose` picks the configuration with the largest non-English log-prob gain whose
   English accuracy loss stays within ``max_english_drop`` points (calibration rows only).
3. :func:`heldout_comparisons` compares the chosen configuration on the evaluated items with
   no steering and with equal-size random neurons in the same layers (seeds pooled), paired by
   item and language, per language and over the non-English rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data.datasets import ParallelDataset
from ..errors import MultiNeuronError
from ..experiments.comparisons import aligned_values, compare
from ..experiments.scoring import answer_rows, score_answers
from .sets import SteerConfig, SteeringSets

ALL_OTHER = "non-English"


def score_steering(
    model: Any,
    ds: ParallelDataset,
    sets: SteeringSets,
    configs: Sequence[tuple[SteerConfig, int | None]],
    *,
    batch_size: int = 64,
    max_rows: int = 512,
    per_pass: int = 40,
    on_scored: Callable[[pd.DataFrame], None] | None = None,
    progress: bool = False,
    max_memory: int | str | None = None,
) -> pd.DataFrame:
    """Score every (item, language) row of ``ds`` under each ``(config, control_seed)``
    (``None``: the configuration itself; a seed: its random control). ``per_pass``
    configurations share one pass over the rows; ``on_scored(rows)`` after each pass."""
    if not ds.has_answers:
        raise MultiNeuronError(f"dataset {ds.name!r}: steering needs gold answers")
    if tuple(ds.languages) != sets.languages:
        raise MultiNeuronError(
            f"steering sets are for {list(sets.languages)}; the dataset has {list(ds.languages)}"
        )
    items = [(it, x) for it in ds.items for x in ds.languages]
    labels = [f"item {it.item_id!r}, language {x!r}" for it, x in items]
    rows = answer_rows(
        model, [it.prompts[x] for it, x in items], [ds.target(it, x) for it, x in items], labels
    )
    lang_of = torch.tensor([sets.lang_index(x) for _, x in items])
    base = pd.DataFrame(
        {
            "item_id": [it.item_id for it, _ in items],
            "language": [x for _, x in items],
        }
    )
    frames = []
    for s in range(0, len(configs), per_pass):
        chunk = configs[s : s + per_pass]
        edits = []
        for cfg, seed in chunk:

            def edit(idx: Sequence[int], cfg: SteerConfig = cfg, seed: int | None = seed):
                return sets.intervention(cfg, lang_of[torch.as_tensor(list(idx))], seed)

            edits.append(None if cfg.kind == "none" else edit)
        scores = score_answers(
            model,
            rows,
            edits,
            scope="last",
            batch_size=batch_size,
            max_rows=max_rows,
            progress=progress,
            max_memory=max_memory,
        )
        part = []
        for (cfg, seed), sc in zip(chunk, scores, strict=True):
            f = sc.to_frame()[["greedy_match", "logprob", "n_answer_tokens"]]
            df = pd.concat([base, f], axis=1)
            df.insert(
                0, "condition", cfg.name + (f" random seed={seed}" if seed is not None else "")
            )
            df.insert(1, "config", cfg.name)
            df["seed"] = seed if seed is not None else -1
            df["kind"], df["band"], df["setting"] = cfg.kind, cfg.band_name, cfg.setting
            part.append(df)
        part_df = pd.concat(part, ignore_index=True)
        if on_scored is not None:
            on_scored(part_df)
        frames.append(part_df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _wide(rows: pd.DataFrame, condition: str, column: str, keys: pd.DataFrame) -> np.ndarray:
    return aligned_values(rows, "condition", condition, column, keys)[0]


def _keys(rows: pd.DataFrame) -> pd.DataFrame:
    none = rows[rows["condition"] == "none"]
    if none.empty:
        raise MultiNeuronError("steering rows need the 'none' condition to compare with")
    return none[["item_id", "language"]].drop_duplicates().reset_index(drop=True)


def search_surface(rows: pd.DataFrame, english: str = "en") -> pd.DataFrame:
    """Per configuration on the calibration rows: mean deltas vs ``none`` of accuracy (points)
    and gold log-prob (nats), over the non-English rows and the English rows."""
    keys = _keys(rows)
    en = (keys["language"] == english).to_numpy()
    base = {c: _wide(rows, "none", c, keys) for c in ("greedy_match", "logprob")}
    out = []
    for name, g in rows[rows["seed"] == -1].groupby("condition", sort=False):
        if name == "none":
            continue
        r = {"config": name, "kind": g["kind"].iloc[0], "band": g["band"].iloc[0],
             "setting": g["setting"].iloc[0]}  # fmt: skip
        for col, metric, scale in (("greedy_match", "accuracy", 100.0), ("logprob", "logprob", 1)):
            d = _wide(rows, name, col, keys) - base[col]
            r[f"d_{metric}_non_en"] = float(d[~en].mean() * scale) if (~en).any() else np.nan
            r[f"d_{metric}_en"] = float(d[en].mean() * scale) if en.any() else np.nan
        out.append(r)
    if not out:
        raise MultiNeuronError("no steering configuration among the calibration rows")
    return pd.DataFrame(out)


def choose(surface: pd.DataFrame, max_english_drop: float = 1.0) -> str:
    """The configuration with the largest non-English log-prob gain among those whose English
    accuracy falls by at most ``max_english_drop`` points (all, without English rows)."""
    ok = surface[~(surface["d_accuracy_en"] < -max_english_drop)]
    if ok.empty:
        raise MultiNeuronError(
            f"every steering configuration costs English more than {max_english_drop} points "
            "on the calibration split; widen the search or the allowance"
        )
    return str(ok.sort_values("d_logprob_non_en", ascending=False, kind="stable")["config"].iloc[0])


def heldout_comparisons(
    rows: pd.DataFrame,
    english: str = "en",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """The steered condition vs ``none`` and vs its random controls (seeds pooled), paired by
    item and language: per language, over the non-English rows (``non-English``) and over all
    rows, for accuracy (points; exact McNemar, max over seeds) and gold log-prob (nats)."""
    keys = _keys(rows)
    steered = rows[(rows["condition"] != "none") & (rows["seed"] == -1)]["condition"].unique()
    if len(steered) != 1:
        raise MultiNeuronError(f"expected one steered configuration, found {list(steered)}")
    name = steered[0]
    controls = sorted(rows[rows["seed"] >= 0]["condition"].unique())
    langs = keys["language"].to_numpy()
    groups = [(x, langs == x) for x in dict.fromkeys(langs)]
    groups += [(ALL_OTHER, langs != english), ("all", np.ones(len(langs), bool))]
    items = keys["item_id"].to_numpy()
    out = []
    refs = [("none", ["none"])] + ([("random", controls)] if controls else [])
    for ref, conds in refs:
        for metric, col in (("accuracy", "greedy_match"), ("logprob", "logprob")):
            a = _wide(rows, name, col, keys)[None]
            b = np.stack([_wide(rows, c, col, keys) for c in conds])
            for lang, m in groups:
                if not m.any():
                    continue
                c = compare(a[:, m], b[:, m], items[m], metric, n_boot, seed, level)
                out.append(
                    {
                        "condition": name, "reference": ref, "language": lang, "metric": metric,
                        **{k: v for k, v in c.items() if k != "test"}, "n_rows": int(m.sum()),
                        "n_items": len(np.unique(items[m])), "n_seeds_reference": len(conds),
                    }
                )  # fmt: skip
    return pd.DataFrame(out)


def verdict(comp: pd.DataFrame, english: str = "en", max_english_drop: float = 1.0) -> dict:
    """Whether the held-out result meets the target: the non-English accuracy gain vs ``none``
    has a paired interval above 0 and English loses at most ``max_english_drop`` points."""
    acc = comp[(comp["metric"] == "accuracy") & (comp["reference"] == "none")].set_index("language")
    other = acc.loc[ALL_OTHER]
    en_delta = float(acc.loc[english, "delta"]) if english in acc.index else None
    gain = bool(other["ci_low"] > 0)
    en_ok = en_delta is None or en_delta >= -max_english_drop
    return {
        "non_english_delta": float(other["delta"]),
        "non_english_ci": [float(other["ci_low"]), float(other["ci_high"])],
        "english_delta": en_delta,
        "met": bool(gain and en_ok),
    }
