"""The language-specificity study's run directory (``OUT/specificity/``): resumable, atomic.

One recording pass over the calibration split gives the item-level methods' sets
(sharing-matters, magnitude) and the controls' activity strata; LAPE and Act-Prob-90p count
tokens of running text as their authors do (``unit='token'``, the default): a corpus's
identification part when one is given (the last ``eval_items`` texts of every language are held
out), else the calibration items' prompts + gold answers as text. The deactivation matrix is
scored on held-out text (the corpus's held-out texts, else the evaluated items), one method at a
time, and the output-language generations follow.

**A corpus alone** (no dataset: ``ds=None``): the corpus's languages; the token methods identify
on its texts and the matrix scores its held-out texts; what needs items is said in one line and
left out (sharing-matters and magnitude, the all-shared comparison, the output-language study),
and the controls' activity strata are the RMS of LAPE's site over the corpus's tokens. A method
that cannot run at the chosen unit (Act-Prob-90p at ``unit='item'``) is left out the same way.

Files: ``calibration.pt`` (the recording pass), ``token_stats.pt`` (LAPE's counts),
``act_prob.pt`` (Act-Prob-90p's two passes) and ``lape_probabilities.csv`` (LAPE's
probabilities per language, beside its bars), ``sets.pt`` and ``sets.csv`` (each method's
masks and sizes per language and layer, after equalising; a loaded LAPE file's sets as
``lape-file``, at their own sizes), ``matrix_rows.csv`` (one row per condition x item x
language, rewritten after each method), ``matrix.csv`` and
``selectivity.csv`` (:func:`~tl_multineuron.experiments.specificity.matrix_table` /
:func:`~tl_multineuron.experiments.specificity.selectivity`), ``identifier.csv``,
``generations.csv`` (rewritten after each condition) and ``output_language.csv``.

Cost: conditions that deactivate the same neurons are scored once (the digest of their mask,
across the matrix's parts). The run measures a GEMM rate at its start, prints each phase's
floor before it runs (the matrix's: conditions x positions computed, with shared prefixes
computed once) and writes ``cost.csv``: per phase run, the seconds taken beside its floor
(:mod:`~tl_multineuron.experiments.cost`) and their ratio.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..data.corpus import Corpus, corpus_from_dataset
from ..data.datasets import ParallelDataset
from ..data.splits import calibration_split, split_record
from ..errors import MultiNeuronError
from ..experiments.cost import CostLedger, gemm_rate, minutes, model_flops, scored_positions
from ..experiments.language_sets import (
    ITEM_METHODS,
    METHODS,
    TOKEN_METHODS,
    LanguageSets,
    equalize,
    identify_language_sets,
    lape_diagnostics,
    load_lape_sets,
    token_language_sets,
)
from ..experiments.specificity import (
    SpecificityConfig,
    deactivation_matrix,
    mask_digest,
    matrix_table,
    output_language,
    output_language_table,
    record_for_sets,
    selectivity,
    text_rows,
)
from ..files import atomic_write
from ..sharing.act_prob import ActProbStats, record_act_prob
from ..sharing.recording import encode
from ..sharing.statistics import SharingStats
from ..sharing.token_batches import Window, parse_window, token_rows
from ..sharing.token_stats import TokenStats, corpus_fingerprint, record_token_stats
from .directories import RunDir, scorer_provenance
from .language import RELIABLE


@dataclass(frozen=True)
class SpecificityRunConfig:
    """methods: identification methods; equal_size: cut every method's sets, per language, to
    the smallest method's non-empty size; min_frequency / top_rate: sharing-matters' frequency
    and the LAPE / magnitude share of all neurons; act_prob_rate: Act-Prob-90p's share per
    language (its authors' 0.00125); filter_rate / activation_bar_ratio: LAPE's quantiles
    (Tang et al.'s 0.95); seeds:
    random and activity-matched controls per seed; shared_frequency: the all-shared
    comparison set (as the grid's); generate: the output-language study (``max_new_tokens``
    greedy tokens, in batches of ``generate_batch`` (set, prompt) rows); unit: ``token``
    (LAPE and Act-Prob-90p on token statistics of running text, as published) or ``item``
    (at the last prompt token of the calibration items); window: the rows of running text
    (:func:`~tl_multineuron.sharing.token_batches.token_rows`: ``None`` one text per row,
    ``W`` packed rows of W tokens behind a BOS, ``lape`` / ``lape:W`` LAPE's own); include_bos:
    deactivate at the BOS position too."""

    methods: tuple[str, ...] = METHODS
    eval_items: int = 16
    calibration: int = 64
    equal_size: bool = True
    min_frequency: float = 0.5
    top_rate: float = 0.01
    filter_rate: float = 0.95
    activation_bar_ratio: float = 0.95
    seeds: tuple[int, ...] = (0,)
    shared_frequency: float = 0.9
    generate: bool = True
    max_new_tokens: int = 8
    batch_size: int = 8
    score_batch: int = 64
    generate_batch: int = 128
    n_boot: int = 2000
    unit: str = "token"
    window: Window = None
    include_bos: bool = False
    act_prob_rate: float = 0.00125

    def __post_init__(self) -> None:
        if self.unit not in ("token", "item"):
            raise MultiNeuronError(f"specificity unit {self.unit!r}; expected 'token' or 'item'")
        parse_window(self.window)
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise MultiNeuronError(f"specificity methods {bad or '[]'}; expected some of {METHODS}")
        if not self.seeds:
            raise MultiNeuronError("specificity: controls need at least one seed")
        if self.max_new_tokens < 1:
            raise MultiNeuronError(f"max_new_tokens {self.max_new_tokens}: need >= 1")
        for k in ("batch_size", "score_batch", "generate_batch"):
            if getattr(self, k) < 1:
                raise MultiNeuronError(f"specificity: {k} {getattr(self, k)}: need >= 1")
        for name in (
            "min_frequency",
            "top_rate",
            "filter_rate",
            "activation_bar_ratio",
            "shared_frequency",
            "act_prob_rate",
        ):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise MultiNeuronError(f"specificity: {name} {v!r}; expected a number in (0, 1]")

    def params(self, method: str) -> dict[str, float]:
        if method == "sharing-matters":
            return {"min_frequency": self.min_frequency}
        if method == "magnitude":
            return {"top_rate": self.top_rate}
        if method == "act-prob-90p":
            return {"top_rate": self.act_prob_rate}
        return {
            "top_rate": self.top_rate,
            "filter_rate": self.filter_rate,
            "activation_bar_ratio": self.activation_bar_ratio,
        }

    def identity(self) -> dict:
        d = asdict(self)
        for k in ("batch_size", "score_batch", "generate_batch", "n_boot"):
            d.pop(k)
        return d


def on_tokens(cfg: SpecificityRunConfig, method: str) -> bool:
    """Whether ``method`` identifies from token statistics of running text in this run."""
    return method in TOKEN_METHODS and cfg.unit == "token"


def runnable_methods(
    cfg: SpecificityRunConfig, has_items: bool
) -> tuple[list[str], list[tuple[str, str]]]:
    """The methods this run can identify with, and ``(method, why)`` for each left out: the
    item-level ones without items, a token-level one at ``unit='item'`` when it has no
    item-level definition (Act-Prob-90p)."""
    keep, left = [], []
    for m in cfg.methods:
        if on_tokens(cfg, m):
            keep.append(m)
        elif m not in ITEM_METHODS:
            left.append((m, "is defined on tokens of running text only (unit 'token')"))
        elif not has_items:
            left.append((m, "needs items (a task or --data); the corpus alone has none"))
        else:
            keep.append(m)
    return keep, left


def method_sets(
    stats: SharingStats | None,
    cfg: SpecificityRunConfig,
    tokens: TokenStats | None = None,
    act_prob: ActProbStats | None = None,
    methods: list[str] | None = None,
) -> list[LanguageSets]:
    """Every method's sets (``methods``, default ``cfg.methods``: LAPE from ``tokens`` and
    Act-Prob-90p from ``act_prob`` when ``cfg.unit`` is ``token``, the others from the
    recording pass ``stats``), equalised when ``cfg.equal_size``."""
    sets = []
    for m in methods if methods is not None else cfg.methods:
        if on_tokens(cfg, m):
            source = act_prob if m == "act-prob-90p" else tokens
            if source is None:
                raise MultiNeuronError(f"{m} at unit 'token' needs its token statistics")
            sets.append(token_language_sets(source, m, **cfg.params(m)))
        else:
            if stats is None:
                raise MultiNeuronError(f"{m} needs the items' recording pass")
            sets.append(identify_language_sets(stats, m, **cfg.params(m)))
    return equalize(sets) if cfg.equal_size and len(sets) > 1 else sets


def lape_file_sets(
    path: str | Path,
    languages: list[str] | tuple[str, ...],
    run_langs: list[str],
    n_layers: int,
    d_mlp: int,
) -> LanguageSets:
    """A LAPE ``*.neuron.pth`` judged beside the methods: its entries named by ``languages``,
    which must be the run's languages ``run_langs`` (any order); checked against the model's
    layers and width. Kept at its own sizes (a file carries no ranking to cut by)."""
    run_langs = list(run_langs)
    if sorted(languages) != sorted(run_langs):
        raise MultiNeuronError(
            f"LAPE file {str(path)!r}: its languages {list(languages)} differ from the run's "
            f"{run_langs} (name the file's entries in order with --lape-languages)"
        )
    sets = load_lape_sets(path, languages, d_mlp, n_layers)
    order = [sets.languages.index(x) for x in run_langs]
    return LanguageSets(sets.method, tuple(run_langs), sets.masks[order], sets.scores[order],
                        {**sets.params, "file": str(path)})  # fmt: skip


def common_languages(sets: list[LanguageSets]) -> list[str]:
    """The languages every method that found anything has a set for: methods' selectivity is
    compared over these."""
    found = [s for s in sets if s.masks.any()]
    if not found:
        return []
    return [x for x in found[0].languages if all(s.size(x) > 0 for s in found)]


def sets_frame(sets: list[LanguageSets]) -> pd.DataFrame:
    return pd.concat([s.to_frame() for s in sets], ignore_index=True)


def run_specificity(
    model: Any,
    ds: ParallelDataset | None,
    out: str | Path,
    cfg: SpecificityRunConfig,
    identity: dict,
    *,
    corpus: Corpus | None = None,
    lape_file: str | Path | None = None,
    lape_languages: list[str] | tuple[str, ...] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    log: Any = None,
) -> dict[str, pd.DataFrame]:
    """Run (or continue) the study into ``out``; returns its tables (``matrix``,
    ``selectivity``, ``sets``, with token statistics ``lape_probabilities`` and, with
    generation, ``output_language``). ``corpus``: running text per language (its languages
    pick ``ds``'s; with ``ds=None`` the corpus alone, see the module docstring);
    ``lape_file`` / ``lape_languages``: a LAPE neuron file judged beside the methods (its
    entries named in order)."""
    out = Path(out)
    say = log or (lambda *_: None)
    if ds is None and corpus is None:
        raise MultiNeuronError("specificity needs a dataset (task / --data), a corpus, or both")
    if ds is not None and not ds.has_answers:
        raise MultiNeuronError(f"dataset {ds.name!r}: the matrix scores prompts + gold answers")
    held_out = None
    extra_identity: dict = {}
    if corpus is not None:
        if ds is not None:
            missing = [x for x in corpus.languages if x not in ds.languages]
            if missing:
                raise MultiNeuronError(
                    f"corpus {corpus.name!r}: language(s) {missing} are not in dataset "
                    f"{ds.name!r} ({list(ds.languages)}); a dataset adds its items for every "
                    "corpus language: drop it to run on the corpus alone"
                )
            ds = ds.select_languages(corpus.languages)
        corpus, held_out = corpus.split(cfg.eval_items)
        extra_identity["corpus"] = {"name": corpus.name, "fingerprint": corpus_fingerprint(corpus),
                                    "held_out": corpus_fingerprint(held_out)}  # fmt: skip
    languages = list(corpus.languages if corpus is not None else ds.languages)
    if lape_file is not None:
        if not lape_languages:
            raise MultiNeuronError(
                f"LAPE file {str(lape_file)!r}: name its languages in order (lape_languages / "
                "--lape-languages en,zh,...): the file carries no names"
            )
        extra_identity["lape_file"] = {"path": str(lape_file), "languages": list(lape_languages)}
    methods, left_out = runnable_methods(cfg, has_items=ds is not None)
    for m, why in left_out:
        say(f"{m} {why}: left out")
    if not methods:
        raise MultiNeuronError(f"specificity: none of the methods {list(cfg.methods)} can run "
                               "here (see above)")  # fmt: skip
    cal = ev = None
    if ds is not None:
        cal, ev = calibration_split(ds, cfg.eval_items, cfg.calibration)
    run = RunDir(
        out, {**identity, "specificity": cfg.identity(), **extra_identity}, resume=resume,
        overwrite=overwrite, kind="specificity", stats_file="matrix_rows.csv",
    )  # fmt: skip
    try:
        split = split_record(cal, ev) if cal is not None else {"items": None}
        run.write_run({**split, **scorer_provenance(model, "auto"),
                       "methods_left_out": dict(left_out)})  # fmt: skip
        cost = CostLedger(gemm_rate(model), model_flops(model))
        say(f"GEMM rate {cost.rate / 1e9:.0f} GFLOP/s (unembedding shape, measured now): each "
            "phase's floor is its weight GEMMs and unembedding at this rate")  # fmt: skip
        stats = _recording(model, cal, out, cfg, resume, progress, say, cost) if cal else None
        tokens = act_prob = None
        tables: dict[str, pd.DataFrame] = {}
        text = corpus if corpus is not None else (corpus_from_dataset(cal) if cal else None)
        if stats is None or "lape" in methods and on_tokens(cfg, "lape"):
            tokens = _token_stats(model, text, out, cfg, resume, progress, say, cost)
            p = cfg.params("lape")
            diag = lape_diagnostics(tokens.probabilities(), tokens.languages, **p)
            atomic_write(out / "lape_probabilities.csv", lambda f: diag.to_csv(f, index=False))
            tables["lape_probabilities"] = diag
        if "act-prob-90p" in methods:
            act_prob = _act_prob(model, text, out, cfg, resume, progress, say, cost)
        sets = method_sets(stats, cfg, tokens, act_prob, methods)
        L, D = int(model.cfg.n_layers), int(model.cfg.d_mlp)
        if lape_file is not None:
            sets.append(lape_file_sets(lape_file, list(lape_languages), languages, L, D))
        masks = {s.method: s.masks for s in sets}
        atomic_write(out / "sets.pt", lambda f: torch.save(masks, f))
        sizes = sets_frame(sets)
        atomic_write(out / "sets.csv", lambda f: sizes.to_csv(f, index=False))
        if stats is None:
            shared = torch.zeros(L, D, dtype=torch.bool)
            say("the all-shared comparison needs items (a task or --data): left out")
        else:
            shared = stats.neuron_mask("all-shared", cfg.shared_frequency)
            if not shared.any():
                say(f"no neuron is all-shared in {cfg.shared_frequency:.0%} of the calibration "
                    "items: the all-shared comparison is left out")  # fmt: skip
        evaluated = held_out if held_out is not None else ev
        strata_from = stats if stats is not None else tokens
        rows = _matrix(model, evaluated, sets, strata_from, shared, out, cfg, resume, progress,
                       say, cost)  # fmt: skip
        tables.update({
            "sets": sizes,
            "matrix": matrix_table(rows, cfg.n_boot, sets=sets),
            "selectivity": selectivity(rows, cfg.n_boot, languages=common_languages(sets)),
        })  # fmt: skip
        atomic_write(out / "matrix.csv", lambda f: tables["matrix"].to_csv(f, index=False))
        atomic_write(
            out / "selectivity.csv", lambda f: tables["selectivity"].to_csv(f, index=False)
        )
        if cfg.generate and ev is None:
            say("the output-language study needs items' prompts (a task or --data): left out")
        elif cfg.generate:
            tables["output_language"] = _generations(model, ev, sets, out, cfg, resume, say,
                                                     cost)  # fmt: skip
        tables["cost"] = cost.frame()
        atomic_write(out / "cost.csv", lambda f: tables["cost"].to_csv(f, index=False))
        for r in tables["cost"].itertuples():
            say(f"{r.phase}: {minutes(r.seconds)}, floor {minutes(r.floor_s)} "
                f"({r.gflop:.0f} GFLOP), {r.ratio:.2f}x floor")  # fmt: skip
    finally:
        run.close()
    return tables


def _recording(model, cal, out, cfg, resume, progress, say, cost: CostLedger) -> SharingStats:
    f_stats = out / "calibration.pt"
    if resume and f_stats.exists():
        return SharingStats.load(f_stats)
    n_tok = sum(len(encode(model, p)) for x in cal.languages for p in cal.prompts(x))
    say(f"{cal.name}: recording pass over {len(cal)} items, {n_tok} tokens (floor "
        f"{minutes(cost.floor(n_tok))})")  # fmt: skip
    t0 = time.perf_counter()
    stats = record_for_sets(model, cal, cfg.batch_size, progress)
    stats.save(f_stats)
    cost.add("recording", time.perf_counter() - t0, n_tok)
    say(f"{cal.name}: recording pass over {len(cal)} items ({time.perf_counter() - t0:.0f}s)")
    return stats


def _saved(f: Path, resume: bool, load: Any, record: Any) -> tuple[Any, float | None]:
    """A statistic read back from ``f`` on ``--resume``, else recorded and saved; with the
    seconds its recording took (``None`` when read back)."""
    if resume and f.exists():
        return load(f), None
    t0 = time.perf_counter()
    value = record()
    value.save(f)
    return value, time.perf_counter() - t0


def _token_stats(model, text: Corpus, out, cfg, resume, progress, say, cost) -> TokenStats:
    kw = {"window": cfg.window, "batch_size": cfg.batch_size, "progress": progress}
    record = lambda: record_token_stats(model, text, **kw)  # noqa: E731
    tokens, took = _saved(out / "token_stats.pt", resume, TokenStats.load, record)
    if took is not None:
        cost.add("token statistics", took, tokens.n_items)
        say(f"{text.name}: token statistics over {tokens.n_items} tokens at {tokens.site} "
            f"({took:.0f}s)")  # fmt: skip
    return tokens


def _act_prob(model, text: Corpus, out, cfg, resume, progress, say, cost) -> ActProbStats:
    kw = {"window": cfg.window, "batch_size": cfg.batch_size, "progress": progress}
    record = lambda: record_act_prob(model, text, **kw)  # noqa: E731
    stats, took = _saved(out / "act_prob.pt", resume, ActProbStats.load, record)
    if took is not None:
        rows = [r for x in text.languages for r in token_rows(model, text, x, cfg.window)]
        cost.add("act-prob statistics", took, 2 * sum(len(r) for r in rows))
        say(f"{text.name}: Act-Prob-90p's two passes over {int(stats.share_batches.sum())} "
            f"batches at {stats.site} ({took:.0f}s)")  # fmt: skip
    return stats


def _matrix(model, ev, sets, stats, shared, out, cfg, resume, progress, say, cost):
    f = out / "matrix_rows.csv"
    done = _read(f) if resume and f.exists() else None
    frames = [done] if done is not None else []
    have = set(done["method"]) if done is not None else set()
    scfg = SpecificityConfig(
        seeds=cfg.seeds, batch_size=cfg.score_batch, n_boot=cfg.n_boot,
        include_bos=cfg.include_bos,
    )  # fmt: skip
    parts: list[tuple[str, list[LanguageSets], dict]] = [("none", [], {})]
    parts += [(s.method, [s], {}) for s in sets]
    if shared.any():
        parts.append(("all-shared", [], {"all-shared": shared}))
    per_set = 2 * len(cfg.seeds)  # a random and a matched control per seed
    masks = {name: [m for s in part for m in s.masks if m.any()] + list(extra.values())
             for name, part, extra in parts}  # fmt: skip
    seen: set[str] = set()  # the same neurons deactivated twice are scored once
    counts = {}
    for name, _, _ in parts:
        new = {mask_digest(m) for m in masks[name]} - seen
        counts[name] = (name == "none") + len(new) + per_set * len(masks[name])
        seen |= new
    todo = sum(n for name, n in counts.items() if name not in have)
    text, _ = text_rows(model, ev)  # the scored rows, for the floor
    n_fwd, n_unemb = scored_positions(text, cfg.score_batch)
    say(
        f"{ev.name}: matrix of {todo} conditions x {n_fwd} positions ({len(text)} rows, shared "
        f"prefixes computed once): floor {minutes(cost.floor(todo * n_fwd, todo * n_unemb))}"
    )
    t0 = time.perf_counter()
    spent, done_n = 0.0, 0  # the edited parts so far: their conditions share passes
    scored: dict = {}
    for k, (name, part, extra) in enumerate(parts):
        if name in have:
            continue
        t_part = time.perf_counter()
        before = len(scored)
        rows = deactivation_matrix(
            model, ev, part, stats, scfg, extra=extra, progress=progress,
            baseline=name == "none", scored=scored,
        )  # fmt: skip
        n_new = len(scored) - before
        cost.add(f"matrix: {name}", time.perf_counter() - t_part, n_new * n_fwd, n_new * n_unemb)
        frames.append(rows)
        allrows = pd.concat(frames, ignore_index=True)
        atomic_write(f, lambda t, r=allrows: r.to_csv(t, index=False))
        took = time.perf_counter() - t0
        say(f"{ev.name}: matrix part {k + 1}/{len(parts)} ({name}, {n_new} conditions scored) "
            f"({took:.0f}s)")  # fmt: skip
        todo -= counts[name]
        if name == "none" and todo:
            # an upper bound: the baseline ran alone, the later parts share passes
            each = time.perf_counter() - t_part
            say(f"{ev.name}: {todo} more conditions to score, at most ~{each:.0f}s each (the "
                f"baseline's pass alone): at most about {minutes(todo * each)} more")  # fmt: skip
        elif counts[name]:
            spent, done_n = spent + time.perf_counter() - t_part, done_n + counts[name]
            if todo:
                say(f"{ev.name}: {todo} more conditions, about "
                    f"{minutes(todo * spent / done_n)} more at the rate so far")  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _read(f: Path) -> pd.DataFrame:
    return pd.read_csv(f, keep_default_na=False, dtype={"item_id": str})


def _generations(model, ev, sets, out, cfg, resume, say, cost) -> pd.DataFrame:
    from ..steering.identifier import LanguageIdentifier, identifier_accuracy

    ident = LanguageIdentifier(ev.languages)
    acc = identifier_accuracy(ident, {x: [it.answers[x] for it in ev.items] for x in ev.languages})
    acc["reliable"] = acc["accuracy"] >= RELIABLE
    atomic_write(out / "identifier.csv", lambda t: acc.to_csv(t, index=False))
    reliable = [x for x, ok in zip(acc["language"], acc["reliable"], strict=True) if ok]
    f = out / "generations.csv"
    done = _read(f) if resume and f.exists() else None
    frames = [done] if done is not None else []
    have = set()
    if done is not None:
        have = set(zip(done["method"], done["set_language"], done["control"], strict=True))

    prompt_tokens = {x: sum(len(encode(model, p)) for p in ev.prompts(x)) for x in reliable}
    n_new = cfg.max_new_tokens
    spent = {"forward": 0, "unembedded": 0}

    def save(part: pd.DataFrame) -> None:
        # a floor: the prompts once, then every new token but the last through the decoder
        spent["forward"] += prompt_tokens[part["set_language"].iloc[0]] + len(part) * (n_new - 1)
        spent["unembedded"] += len(part) * n_new
        frames.append(part)
        rows = pd.concat(frames, ignore_index=True)
        atomic_write(f, lambda t: rows.to_csv(t, index=False))
        say(f"{ev.name}: generated {part['method'].iloc[0]} / {part['set_language'].iloc[0]} / "
            f"{part['control'].iloc[0]}")  # fmt: skip

    t0 = time.perf_counter()
    output_language(
        model, ev, sets, reliable, seed=cfg.seeds[0], max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.generate_batch, detect=ident.detect, done=have, on_rows=save,
    )  # fmt: skip
    if spent["forward"]:
        cost.add("generation", time.perf_counter() - t0, spent["forward"], spent["unembedded"])
    if not frames:
        table = pd.DataFrame()
    else:
        rows = pd.concat(frames, ignore_index=True)
        rows["in_language"] = rows["in_language"].astype(str).str.lower() == "true"
        table = output_language_table(rows, cfg.n_boot)
    atomic_write(out / "output_language.csv", lambda t: table.to_csv(t, index=False))
    return table
