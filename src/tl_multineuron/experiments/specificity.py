"""The deactivation matrix: are a method's language-specific neurons specific by their effect?

For every method's sets (:mod:`.language_sets`) and every language L: deactivate L's set at
every position (BOS only with ``include_bos``) and measure the mean per-token log-likelihood of
held-out text in every language -- the evaluated items' prompt followed by the gold answer, or a
held-out corpus's running text (:func:`text_rows`), every token after the first scored, in one
pass of the one-pass scorer (scope ``all``) -- paired by item. The change against the unedited
model for (set of L, text in L') is one cell of a language x language matrix; a strong diagonal
means specific. Controls per L: equal-size random sets (the same per-layer sizes, drawn outside
the set) and activity-matched random sets (the same sizes within the calibration split's
per-layer RMS strata), one per seed, drawn independently for every (method, language). A
method's **selectivity** for L is the change of L's own text minus the mean change of the other
languages' texts (per item, so the two sides pair up); its selectivity is the mean over the
languages, with a bootstrap interval over items. LAPE reports the same matrix as perplexity
changes: ``exp(-mean_ll)`` per row, in :func:`matrix_table`'s ``ppl_change`` columns.

Output language (:func:`output_language`): greedy generations of the evaluated prompts in L
with L's set deactivated, and the share still identified as L (offline identifier, only for
languages it identifies reliably), against the unedited model and an equal-size random set.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from ..data.corpus import Corpus
from ..data.datasets import ParallelDataset
from ..errors import MultiNeuronError
from ..sharing.analysis import AnalysisConfig, new_stats
from ..sharing.recording import encode, get_tokenizer, iter_dataset
from ..sharing.statistics import SharingStats
from ..sharing.token_stats import TokenStats
from .comparisons import aligned_values, paired_bootstrap
from .evaluation import generate_greedy
from .interventions import Intervention
from .language_sets import LanguageSets
from .neuron_sets import NeuronSet, activity_strata, control_seed, sample_like
from .scoring import AnswerRows, score_answers

CONTROLS = ("set", "random", "matched")


@dataclass(frozen=True)
class SpecificityConfig:
    """seeds: one random and one activity-matched control per seed (each (method, language)
    set its own independent draws, :func:`~.neuron_sets.control_seed`); n_bins: activity
    strata; batch_size / max_rows: the scorer's; n_boot / level: the bootstrap intervals;
    include_bos: deactivate at the BOS position too (default: every position but BOS, whose
    activations are the same in every text)."""

    seeds: tuple[int, ...] = (0,)
    n_bins: int = 20
    batch_size: int = 64
    max_rows: int = 512
    n_boot: int = 2000
    level: float = 0.95
    include_bos: bool = False

    def __post_init__(self) -> None:
        if not self.seeds:
            raise MultiNeuronError("specificity: controls need at least one seed")
        if self.n_bins < 1 or self.batch_size < 1 or self.max_rows < 1 or self.n_boot < 1:
            raise MultiNeuronError(
                "specificity: n_bins, batch_size, max_rows and n_boot must be >= 1"
            )
        if not 0 < self.level < 1:
            raise MultiNeuronError(f"specificity: level {self.level}; expected (0, 1)")


def record_for_sets(
    model: Any, ds: ParallelDataset, batch_size: int = 8, progress: bool = False
) -> SharingStats:
    """One recording pass (last prompt token, threshold 0): the sharing statistics every
    item-level identification method and the controls' activity strata read."""
    stats = new_stats(model, ds, AnalysisConfig(batch_size=batch_size))
    for s, acts in iter_dataset(model, ds, batch_size=batch_size, progress=progress):
        stats.update(acts, [it.item_id for it in ds.items[s : s + acts.shape[0]]])
    return stats


def text_rows(model: Any, source: ParallelDataset | Corpus) -> tuple[AnswerRows, pd.DataFrame]:
    """One row per (item, language): the text (a dataset item's prompt followed by its gold
    answer, or a corpus's text) behind BOS, its first token the "prompt" and every later token
    scored; and the rows' keys (``item_id``, ``language``). A corpus's texts pair up by their
    position (``item_id`` = the k-th text of every language: a sentence of a parallel corpus
    such as FLORES); only the first ``min`` count over the languages is kept. A text of fewer
    than two tokens is an error naming the item (or text) and the language."""
    if isinstance(source, Corpus):
        n = min(source.n_texts(x) for x in source.languages)
        texts = [(str(k), x, source.texts[x][k], f"{source.name}, text {k + 1}")
                 for k in range(n) for x in source.languages]  # fmt: skip
    else:
        texts = [(it.item_id, x, it.prompts[x] + source.target(it, x), f"item {it.item_id!r}")
                 for it in source.items for x in source.languages]  # fmt: skip
    prompts, answers, labels, keys = [], [], [], []
    for item_id, x, text, where in texts:
        ids = encode(model, text)
        label = f"{where}, language {x!r}"
        if len(ids) < 2:
            raise MultiNeuronError(f"{label}: the text {text!r} is too short to score")
        prompts.append(tuple(ids[:1]))
        answers.append(tuple(ids[1:]))
        labels.append(label)
        keys.append((item_id, x))
    bos = getattr(get_tokenizer(model), "bos_token_id", None)
    rows = AnswerRows(tuple(prompts), tuple(answers), tuple(labels), bos)
    return rows, pd.DataFrame(keys, columns=["item_id", "language"])


def _deactivate(mask: Bool[Tensor, "layer d_mlp"]) -> Any:
    iv = Intervention(NeuronSet(mask), "zero", positions="all")
    return lambda block: iv


def deactivation_matrix(
    model: Any,
    ds: ParallelDataset | Corpus,
    sets: Sequence[LanguageSets],
    calibration: SharingStats | TokenStats,
    config: SpecificityConfig | None = None,
    extra: dict[str, Bool[Tensor, "layer d_mlp"]] | None = None,
    progress: bool = False,
    baseline: bool = True,
    scored: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Mean per-token log-likelihood of every row (item x language of ``ds``, a dataset or a
    held-out corpus, see :func:`text_rows`) unedited and with
    each set deactivated: one row per (method, set_language, control, seed, item, language).
    ``extra``: other sets on the same axes (e.g. ``{"all-shared": mask}``; ``set_language``
    ``"-"``). A language whose set is empty under a method gets no rows (:func:`matrix_table`
    says so). ``baseline=False`` leaves out the unedited rows (when scoring in parts).
    Conditions that deactivate the same neurons are scored once: ``scored`` (mask digest ->
    (mean_ll, n_tokens)) carries the scores across calls on the same rows, and is filled in."""
    cfg = config or SpecificityConfig()
    scored = {} if scored is None else scored
    rows, keys = text_rows(model, ds)
    strata = activity_strata(calibration, cfg.n_bins)
    jobs: list[tuple[dict, Tensor | None]] = []
    if baseline:
        jobs.append(({"method": "none", "set_language": "-", "control": "none", "seed": -1,
                      "set_size": 0}, None))  # fmt: skip
    targets = [(s.method, x, s.masks[i]) for s in sets for i, x in enumerate(s.languages)]
    targets += [(name, "-", m) for name, m in (extra or {}).items()]
    for method, x, mask in targets:
        if not mask.any():
            continue
        size = int(mask.sum())
        base = {"method": method, "set_language": x, "set_size": size}
        jobs.append(({**base, "control": "set", "seed": -1}, mask))
        for seed in cfg.seeds:
            for control, st in (("random", None), ("matched", strata)):
                drawn = sample_like(mask, control_seed(seed, control, method, x), strata=st)
                jobs.append(({**base, "control": control, "seed": seed}, drawn))
    if not jobs:
        return pd.DataFrame()
    digests = [mask_digest(m) for _, m in jobs]
    todo = {d: m for d, m in zip(digests, (m for _, m in jobs), strict=True) if d not in scored}
    if todo:
        scores = score_answers(
            model, rows, [_deactivate(m) if m is not None else None for m in todo.values()],
            scope="all", include_bos=cfg.include_bos, batch_size=cfg.batch_size,
            max_rows=cfg.max_rows, progress=progress,
        )  # fmt: skip
        for d, sc in zip(todo, scores, strict=True):
            scored[d] = ((sc.logprob / sc.n_tokens).numpy(), sc.n_tokens.numpy())
    frames = []
    for (meta, _), d in zip(jobs, digests, strict=True):
        mean_ll, n_tokens = scored[d]
        frames.append(keys.assign(**meta, mean_ll=mean_ll, n_tokens=n_tokens))
    return pd.concat(frames, ignore_index=True)


def mask_digest(mask: Bool[Tensor, "layer d_mlp"] | None) -> str:
    """A condition's identity: the deactivated neurons (``None``: the unedited model)."""
    if mask is None:
        return "none"
    m = mask.detach().cpu().bool().contiguous()
    return hashlib.sha256(str(tuple(m.shape)).encode() + m.numpy().tobytes()).hexdigest()


def matrix_table(
    rows: pd.DataFrame,
    n_boot: int = 2000,
    level: float = 0.95,
    sets: Sequence[LanguageSets] = (),
) -> pd.DataFrame:
    """Per (method, control, set language, text language): the change in mean per-token
    log-likelihood against the unedited model (nats/token), with a paired bootstrap interval
    over items (seeds pooled for the controls); and as LAPE reports it, the perplexity of the
    language's texts together (``exp`` of minus their token-weighted mean log-likelihood;
    ``ppl``, ``ppl_none`` and ``ppl_change`` = ``ppl - ppl_none``, seeds averaged). ``sets``:
    the methods scored; a language whose set is empty under one of them gets a row with
    ``set_size`` 0 and NaN change (``empty``)."""
    keys = _keys(rows)
    langs = list(dict.fromkeys(keys["language"]))
    base = aligned_values(rows, "method", "none", "mean_ll", keys)
    n_tok = (  # rows without token counts (made by hand) get no perplexities
        aligned_values(rows, "method", "none", "n_tokens", keys)[0]
        if "n_tokens" in rows.columns
        else np.full(len(keys), np.nan)
    )
    items = keys["item_id"].to_numpy()
    out = []
    for (method, x, control), g in _groups(rows):
        vals = aligned_values(g, "method", method, "mean_ll", keys)
        for y in langs:
            m = (keys["language"] == y).to_numpy()
            d = paired_bootstrap(vals[:, m], base[:, m], items[m], n_boot, 0, level)
            size = int(g["set_size"].iloc[0])
            ppl, ppl_none = _perplexity(vals[:, m], n_tok[m]), _perplexity(base[:, m], n_tok[m])
            out.append({"method": method, "control": control, "set_language": x,
                        "language": y, "delta": d.delta, "ci_low": d.ci_low,
                        "ci_high": d.ci_high, "ppl": ppl, "ppl_none": ppl_none,
                        "ppl_change": ppl - ppl_none, "n_items": len(np.unique(items[m])),
                        "n_seeds": vals.shape[0], "set_size": size,
                        "empty": False})  # fmt: skip
    for s in sets:
        for x in s.languages:
            if s.size(x) == 0:
                out += [{"method": s.method, "control": "set", "set_language": x, "language": y,
                         "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "ppl": np.nan,
                         "ppl_none": np.nan, "ppl_change": np.nan, "n_items": 0,
                         "n_seeds": 0, "set_size": 0, "empty": True} for y in langs]  # fmt: skip
    return pd.DataFrame(out)


def _perplexity(mean_ll: np.ndarray, n_tokens: np.ndarray) -> float:
    """Perplexity of rows ``[seeds, rows]`` taken together (token-weighted), seeds averaged."""
    return float(np.exp(-(mean_ll * n_tokens).sum(-1) / n_tokens.sum()).mean())


def selectivity(
    rows: pd.DataFrame,
    n_boot: int = 2000,
    level: float = 0.95,
    languages: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per (method, control) and per set language: own-language change minus the mean change
    of the other languages (nats/token), with a paired bootstrap interval over items; the
    language ``"all"`` row averages over ``languages`` (default: the method's own; give the
    languages every method has a set for to compare methods on the same ones; a method
    lacking a set for one of them gets no ``"all"`` row). Rows with control ``"set - random"``
    / ``"set - matched"`` are the paired difference between the set's selectivity and its
    control's (seeds pooled): the comparison a claim of specificity rests on."""
    keys = _keys(rows)
    base = aligned_values(rows, "method", "none", "mean_ll", keys)
    items = keys["item_id"].to_numpy()
    langs = keys["language"].to_numpy()
    out = []
    per_method: dict[tuple[str, str], list] = {}
    for (method, x, control), g in _groups(rows):
        if x == "-":
            continue
        d = aligned_values(g, "method", method, "mean_ll", keys) - base  # [seeds, rows]
        own = np.where(langs == x, 1.0, -1.0 / max(1, len(set(langs)) - 1))
        contrast = d * own  # own - mean(others), summed per item
        per_method.setdefault((method, control), {})[x] = contrast
        out.append(_selectivity_row(method, control, x, contrast, items, n_boot, level))
    for (method, control), parts in per_method.items():
        over = list(languages) if languages is not None else list(parts)
        if not over or any(x not in parts for x in over):
            continue
        contrast = np.mean([parts[x] for x in over], axis=0)
        row = _selectivity_row(method, control, "all", contrast, items, n_boot, level)
        out.append({**row, "over": ",".join(over)})
    for (method, control), parts in per_method.items():
        own = per_method.get((method, "set"))
        if control == "set" or own is None:
            continue
        name = f"set - {control}"
        for x in [x for x in own if x in parts]:
            out.append(_selectivity_row(method, name, x, own[x], items, n_boot, level, parts[x]))
        over = list(languages) if languages is not None else [x for x in own if x in parts]
        if over and all(x in own and x in parts for x in over):
            a = np.mean([own[x] for x in over], axis=0)
            b = np.mean([parts[x] for x in over], axis=0)
            row = _selectivity_row(method, name, "all", a, items, n_boot, level, b)
            out.append({**row, "over": ",".join(over)})
    return pd.DataFrame(out)


def _selectivity_row(method, control, x, contrast, items, n_boot, level, reference=None) -> dict:
    # per item: sum over the item's rows (own + others with weights) = own - mean(others)
    n_rows_per_item = pd.Series(items).value_counts().iloc[0]
    scaled = contrast * n_rows_per_item
    ref = np.zeros((1, scaled.shape[1])) if reference is None else reference * n_rows_per_item
    d = paired_bootstrap(scaled, ref, items, n_boot, 0, level)
    return {"method": method, "control": control, "set_language": x, "selectivity": d.delta,
            "ci_low": d.ci_low, "ci_high": d.ci_high, "n_items": len(np.unique(items))}  # fmt: skip


def _keys(rows: pd.DataFrame) -> pd.DataFrame:
    none = rows[rows["method"] == "none"]
    if none.empty:
        raise MultiNeuronError("specificity rows need the unedited ('none') rows")
    return none[["item_id", "language"]].drop_duplicates().reset_index(drop=True)


def _groups(rows: pd.DataFrame):
    edited = rows[rows["method"] != "none"]
    return edited.groupby(["method", "set_language", "control"], sort=False)


def output_language(
    model: Any,
    ds: ParallelDataset,
    sets: Sequence[LanguageSets],
    languages: Sequence[str],
    seed: int = 0,
    max_new_tokens: int = 8,
    batch_size: int = 128,
    detect: Callable[[list[str]], list[str | None]] | None = None,
    done: set[tuple[str, str, str]] = frozenset(),
    on_rows: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Greedy continuations of ``ds``'s prompts in each of ``languages``: unedited, with each
    method's set for that language deactivated, and with an equal-size random set (``seed``).
    One row per (method, set_language, control, item): ``generated`` (first line), ``detected``
    and ``in_language``. ``detect``: an identifier's ``detect`` (required); ``done``: (method,
    set_language, control) already generated (resume); ``on_rows``: called after each. A
    language's conditions run as rows of shared batches of ``batch_size`` (set, prompt) rows
    (:func:`generate_under_masks`)."""
    if detect is None:
        raise MultiNeuronError("output_language needs a language identifier (detect=...)")
    tok = get_tokenizer(model)
    ids = [it.item_id for it in ds.items]
    frames = []
    for x in languages:
        if x not in ds.languages:
            raise MultiNeuronError(f"output language: {x!r} is not among {list(ds.languages)}")
        jobs: list[tuple[str, str, Any]] = [("none", "none", None)]
        for s in sets:
            if s.size(x) == 0:
                continue
            mask = s.masks[s.languages.index(x)]
            jobs.append((s.method, "set", mask))
            drawn = sample_like(mask, control_seed(seed, "random", s.method, x))
            jobs.append((s.method, "random", drawn))
        jobs = [j for j in jobs if (j[0], x, j[1]) not in done]
        if not jobs:
            continue
        gens = generate_under_masks(
            model, ds.prompts(x), [m for _, _, m in jobs], max_new_tokens, batch_size
        )
        for (method, control, _), got in zip(jobs, gens, strict=True):
            texts = [tok.decode(g).split("\n")[0].strip() for g in got]
            found = detect(texts)
            part = pd.DataFrame({
                "method": method, "set_language": x, "control": control, "item_id": ids,
                "generated": texts, "detected": [f or "" for f in found],
                "in_language": [f == x for f in found],
            })  # fmt: skip
            frames.append(part)
            if on_rows is not None:
                on_rows(part)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def generate_under_masks(
    model: Any,
    prompts: Sequence[str],
    masks: Sequence[Bool[Tensor, "layer d_mlp"] | None],
    max_new_tokens: int = 8,
    batch_size: int = 64,
) -> list[list[list[int]]]:
    """Greedy continuations of ``prompts`` with each mask's MLP neurons deactivated at every
    position (``None``: unedited): one list per mask, one token list per prompt. Every
    (mask, prompt) pair is a row of one generation whose rows carry their own mask (per-row
    :class:`~.interventions.Intervention`), in batches of about ``batch_size`` rows: the same
    continuations as one generation per mask, up to float ties, with a few wide batches'
    steps instead of many narrow ones (a step's unembedding reads the whole vocabulary's
    weights whatever the batch)."""
    n, J = len(prompts), len(masks)
    if not n or not J:
        return [[] for _ in masks]
    shape = next((tuple(m.shape) for m in masks if m is not None), None)
    if shape is None:  # nothing edited
        stack = None
    else:
        stack = torch.zeros((J, *shape), dtype=torch.bool)
        for j, m in enumerate(masks):
            if m is not None:
                if tuple(m.shape) != shape:
                    raise MultiNeuronError(
                        f"output language: mask {j} of shape {tuple(m.shape)}; the others "
                        f"are {shape}"
                    )
                stack[j] = m.cpu()
    job = torch.arange(J).repeat_interleave(n)
    fired: list = []

    def hooks(start: int, stop: int) -> list:
        if stack is None:
            return []
        iv = Intervention(stack[job[start:stop]], "zero", positions="all", allow_empty=True)
        got = iv.fwd_hooks(model)
        fired.extend(got)
        return got

    rows = n * J
    n_batches = math.ceil(rows / max(1, batch_size))
    per = math.ceil(rows / n_batches)  # batches of equal size, none over batch_size
    gens = generate_greedy(model, list(prompts) * J, max_new_tokens, per, hooks_for_batch=hooks)
    silent = [name for name, h in fired if not h.fired]
    if silent:
        raise MultiNeuronError(f"output language: deactivation hooks never fired: {silent}")
    return [gens[j * n : (j + 1) * n] for j in range(J)]


def output_language_table(
    rows: pd.DataFrame, n_boot: int = 2000, level: float = 0.95
) -> pd.DataFrame:
    """Per (method, control, language): the share (%) of generations identified as the
    prompts' language, the unedited share, and their paired difference with a bootstrap
    interval over items."""
    out = []
    for x, g in rows.groupby("set_language", sort=False):
        base = g[g["method"] == "none"].set_index("item_id")["in_language"].astype(float)
        for (method, control), h in g[g["method"] != "none"].groupby(
            ["method", "control"], sort=False
        ):
            v = h.set_index("item_id")["in_language"].astype(float).reindex(base.index)
            d = paired_bootstrap(
                v.to_numpy()[None], base.to_numpy()[None], base.index.to_numpy(), n_boot, 0, level
            )
            out.append({"method": method, "control": control, "language": x,
                        "share": 100 * d.value, "share_none": 100 * d.reference_value,
                        "delta": 100 * d.delta, "ci_low": 100 * d.ci_low,
                        "ci_high": 100 * d.ci_high, "n_items": len(base)})  # fmt: skip
    return pd.DataFrame(out)
