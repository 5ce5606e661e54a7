"""One-pass answer scoring: the gold answer's log-probability and greedy match, under edits.

For each (prompt, gold answer) row, one forward pass over the prompt followed by the answer's
tokens (tokenized as the answer continues the prompt) gives, at every answer position, the
model's distribution over the next token. Per row:

* ``greedy_match``: the argmax at every answer position is the gold token -- exactly the event
  "greedy generation starts with the gold answer's tokens" (teacher forcing and free running
  agree as long as every argmax is gold);
* ``logprob``: the gold answer's log-probability (sum over its tokens) and ``token_logprobs``;
* ``first_rank``: how many tokens score strictly higher than the answer's first token (0 = top).

Only the answer positions are unembedded, and where the unembedding is a plain linear map
one block of the vocabulary at a time (:mod:`.answer_metrics`: a running log-sum-exp, argmax
and exact rank, so the vocabulary-sized logits never exist for more than a cache-sized block;
else the whole vocabulary for a chunk of positions).

Edits (interventions) act on exactly the positions greedy generation would touch. Scope
``last``: the last prompt token and every answer position (what a KV-cached generation step
sees). Scope ``all``: every real position, the BOS position only with ``include_bos=True``.

Speed. With scope ``last`` nothing before the last prompt token is edited, so the prompt
minus its last token is run **once** (a KV cache) and every edit runs only over the answer
positions (``cache='auto'`` uses this on models whose forward returns a HF cache; a native
TransformerBridge has none and gets full passes, which give the same numbers). Several edits
share one padded batch: each gets its own block of rows (``max_rows`` rows per pass).
Attention runs through SDPA where the model allows it (``attention='auto'``, see
:mod:`tl_multineuron.backends.attention`): the edits act on MLP (or SAE) sites, never inside
attention; on the embedded Gemma 3 a scored call was 1.18x faster than under eager attention
on nli and 1.05x on qa (``benchmarks/bench_scorer_conditions.py --compare attention``),
log-probs within 9e-5 nats, greedy matches identical.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..backends.attention import efficient_attention
from ..backends.cache_probes import prefix_cache_status, supports_prefix_cache, warn_full_pass
from ..backends.devices import model_device
from ..backends.logits import output_width
from ..backends.memory import MemoryEstimate, estimate_forward, memory_budget, plan_chunks
from ..backends.tl_compat import (
    quiet_cache_rename,
)
from ..errors import MultiNeuronError
from ..sharing.prompt_prefix import within_window
from ..sharing.recording import (
    answer_ids,
    encode_prompts,
    get_tokenizer,
)
from .answer_blocks import AnswerPass, block_pass, shared_blocks
from .answer_metrics import answer_metrics
from .prefix_groups import prefix_groups, score_group, uniform_edit
from .shared_prefix import fold_mask, folds
from .site_edits import Hidden, bind_rows, check_fired, fuse_edits

SCOPES = ("last", "all")
CACHE_MODES = ("auto", "prefix", "none")

#: An edit for a block of rows: called with the rows' indices, it returns an Intervention (or
#: Composite) whose neuron masks are per row ``[n_rows, layer, d_mlp]`` or one NeuronSet, or
#: ``None`` for no edit. Positions are set by the scorer (see the module docstring).
EditFn = Callable[[Sequence[int]], Any]


@dataclass(frozen=True)
class AnswerRows:
    """Token ids of every row: the prompt (BOS included) and the gold answer's tokens."""

    prompts: tuple[tuple[int, ...], ...]
    answers: tuple[tuple[int, ...], ...]
    labels: tuple[str, ...]
    bos: int | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def starts_with_bos(self, r: int) -> bool:
        return self.bos is not None and self.prompts[r][0] == self.bos


def answer_rows(
    model: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    labels: Sequence[str] | None = None,
) -> AnswerRows:
    """Tokenize rows for scoring; an answer that tokenizes to nothing, or a prompt + answer
    longer than the model's context, is an error naming the row."""
    if len(prompts) != len(answers):
        raise MultiNeuronError(f"{len(prompts)} prompts but {len(answers)} answers")
    labels = list(labels) if labels is not None else [f"row {i}" for i in range(len(prompts))]
    p_ids = encode_prompts(model, prompts, labels)
    a_ids = [
        answer_ids(model, p, a, lab, pid)
        for p, a, lab, pid in zip(prompts, answers, labels, p_ids, strict=True)
    ]
    n_ctx = getattr(model.cfg, "n_ctx", None)
    for lab, p, a in zip(labels, p_ids, a_ids, strict=True):
        if n_ctx and len(p) + len(a) - 1 > n_ctx:
            raise MultiNeuronError(
                f"{lab}: prompt ({len(p)} tokens) + answer ({len(a)} tokens) exceed the "
                f"model's context ({n_ctx})"
            )
    bos = getattr(get_tokenizer(model), "bos_token_id", None)
    return AnswerRows(
        tuple(tuple(x) for x in p_ids), tuple(tuple(x) for x in a_ids), tuple(labels), bos
    )


@dataclass(frozen=True)
class AnswerScores:
    """Scores of every row under one edit (see the module docstring)."""

    greedy_match: Bool[Tensor, " row"]
    logprob: Float[Tensor, " row"]
    token_logprobs: Float[Tensor, "row answer_pos"]
    first_rank: Int[Tensor, " row"]
    n_tokens: Int[Tensor, " row"]
    #: the model's greedy token at the first answer position (what generation emits first)
    first_token: Int[Tensor, " row"]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "greedy_match": self.greedy_match.numpy(),
                "logprob": self.logprob.numpy(),
                "token_logprobs": [
                    " ".join(f"{v:.6g}" for v in row[:n].tolist())
                    for row, n in zip(self.token_logprobs, self.n_tokens.tolist(), strict=True)
                ],
                "first_rank": self.first_rank.numpy(),
                "n_answer_tokens": self.n_tokens.numpy(),
            }
        )


def check_vocabulary(model: Any, rows: AnswerRows) -> None:
    """Every answer token must be one the model can output: an id outside its output
    vocabulary is an error naming the row (it would have no logit, hence no log-prob)."""
    width = output_width(model)
    for lab, ans in zip(rows.labels, rows.answers, strict=True):
        bad = [t for t in ans if not 0 <= t < width]
        if bad:
            raise MultiNeuronError(
                f"{lab}: answer token id(s) {bad} outside the model's output vocabulary "
                f"(0..{width - 1})"
            )


def scoring_path(model: Any, scope: str = "last", cache: str = "auto") -> str:
    """Which path :func:`score_answers` takes with these options: ``'prefix-cache'`` (scope
    ``last``: the prompt prefix runs once, edits run over the answer positions),
    ``'shared-prefix'`` (scope ``all``: rows that share a prefix compute it once per edit,
    :mod:`.prefix_groups`; rows that share none take full passes) or ``'full-pass'``."""
    if cache != "none" and supports_prefix_cache(model):
        return "prefix-cache" if scope == "last" else "shared-prefix"
    return "full-pass"


# -- batches --------------------------------------------------------------------------------------
def score_answers(
    model: Any,
    rows: AnswerRows,
    edits: Sequence[EditFn | None] = (None,),
    *,
    scope: str = "last",
    include_bos: bool = False,
    batch_size: int = 64,
    max_rows: int = 512,
    cache: str = "auto",
    chunk: int = 1024,
    progress: bool = False,
    max_memory: int | str | None = None,
    attention: str = "auto",
) -> list[AnswerScores]:
    """Score every row under every edit (``None`` = no edit); one :class:`AnswerScores` per
    edit. ``batch_size`` rows share one prompt pass; up to ``max_rows`` rows (edits x rows)
    share one answer pass. Both shrink where a pass's estimated peak memory
    (:mod:`tl_multineuron.backends.memory`) would exceed ``max_memory`` (default: 80% of the
    device's free memory); a row that cannot fit alone is an error naming it, before any pass
    runs. ``attention``: every pass's attention (:func:`~tl_multineuron.efficient_attention`;
    ``auto`` runs SDPA where the model can, eager where it cannot)."""
    with efficient_attention(model, attention) as impl:
        return _score_answers(
            model, rows, edits, scope=scope, include_bos=include_bos, batch_size=batch_size,
            max_rows=max_rows, cache=cache, chunk=chunk, progress=progress,
            max_memory=max_memory, impl=impl,
        )  # fmt: skip


def _score_answers(
    model: Any,
    rows: AnswerRows,
    edits: Sequence[EditFn | None],
    *,
    scope: str,
    include_bos: bool,
    batch_size: int,
    max_rows: int,
    cache: str,
    chunk: int,
    progress: bool,
    max_memory: int | str | None,
    impl: str,
) -> list[AnswerScores]:
    """:func:`score_answers` inside its attention block (``impl``: the implementation)."""
    plan = _plan(model, rows, edits, scope, cache, batch_size, max_rows, chunk, max_memory, impl)
    if scope == "all" and cache != "none":
        ok, why = prefix_cache_status(model)
        if not ok and cache == "prefix":
            raise MultiNeuronError(f"cache='prefix': no reusable KV cache: {why}")
        shared = None
        if ok:  # rows sharing a prompt prefix compute it once per edit (see prefix_groups)
            shared = _score_shared(
                model, rows, edits, include_bos=include_bos, batch_size=batch_size,
                max_rows=max_rows, chunk=plan.chunk, fits=plan.fits, progress=progress,
                plain=lambda sub, sub_edits: _score_answers(
                    model, sub, sub_edits, scope=scope, include_bos=include_bos,
                    batch_size=batch_size, max_rows=max_rows, cache="none", chunk=plan.chunk,
                    progress=False, max_memory=max_memory, impl=impl,
                ),
            )  # fmt: skip
        if shared is not None:
            return shared
    out = _buffers(rows, len(edits))
    blocks = shared_blocks(model, rows, batch_size, plan.cached, plan.fits, impl)
    passes = [(b, g) for b in blocks for g in plan.edit_groups(b[0], len(edits), max_rows)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(passes), desc="scoring", unit="pass")
    try:
        bp, last = None, None
        for (block, prefix), group in passes:
            if block is not last:  # the block's inputs (and prefix cache) once for its groups
                bp = block_pass(model, rows, block, scope, include_bos, plan.cached, prefix())
                last = block
            vals = _run_group(model, bp, block, [edits[e] for e in group], plan)
            for e, v in zip(group, vals, strict=True):
                _scatter(out[e], block, bp.answer_pos, *v)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return _collect(rows, out)


@dataclass(frozen=True)
class _ScorePlan:
    """What every pass of one :func:`score_answers` call shares: whether prompts run once
    (``cached``) and suffixes fold, the unembedding chunk, the memory check."""

    cached: bool
    folded: bool
    chunk: int
    fits: Callable[[int, int], bool]
    width: tuple[int, ...]  # each row's prompt + answer length
    dtype: torch.dtype

    def edit_groups(self, block: list[int], n_edits: int, max_rows: int) -> list[list[int]]:
        """Edits sharing one pass over ``block``: as many as ``max_rows`` and memory allow (a
        small block -- few rows share its answer length -- takes more edits per pass)."""
        w, c = max(self.width[x] for x in block), max(1, max_rows // len(block))
        while c > 1 and not self.fits(c * len(block), w):
            c = max(1, c // 2)
        return [list(range(s, min(s + c, n_edits))) for s in range(0, n_edits, c)]


def _plan(
    model, rows, edits, scope, cache, batch_size, max_rows, chunk, max_memory, impl
) -> _ScorePlan:
    """Check the call's arguments and plan its passes (see :class:`_ScorePlan`) for attention
    ``impl``; a row that cannot fit in memory alone is an error here, before any pass runs."""
    if scope not in SCOPES:
        raise MultiNeuronError(f"scope {scope!r}; expected one of {SCOPES}")
    if cache not in CACHE_MODES:
        raise MultiNeuronError(f"cache {cache!r}; expected one of {CACHE_MODES}")
    if batch_size < 1 or max_rows < 1:
        raise MultiNeuronError(f"batch_size {batch_size} / max_rows {max_rows}: need >= 1")
    if not edits:
        raise MultiNeuronError("no edits to score (pass [None] for the model as it is)")
    if len(rows) == 0:
        raise MultiNeuronError("no rows to score")
    check_vocabulary(model, rows)
    cached = scope == "last" and cache != "none" and min(len(p) for p in rows.prompts) >= 2
    if cached:
        cached, why = prefix_cache_status(model)
        if not cached and cache == "prefix":
            raise MultiNeuronError(f"cache='prefix': no reusable KV cache: {why}")
        if not cached:
            warn_full_pass(model, rows, why)
    # edits share the prefix cache without copies where the suffix is one position (below);
    # the probe runs only when some row has a 1-token answer
    folded = cached and any(len(a) == 1 for a in rows.answers) and folds(model)
    budget = memory_budget(model_device(model), max_memory)
    # the vocabulary-sized logits of one unembedding chunk (and their log-softmax) come first
    per_position = 2 * model.cfg.d_vocab * 4
    chunk = max(1, min(chunk, budget // (2 * per_position)))
    budget -= chunk * per_position
    width = tuple(len(p) + len(a) for p, a in zip(rows.prompts, rows.answers, strict=True))

    def estimate(n_rows: int, w: int) -> MemoryEstimate:
        return estimate_forward(model, n_rows, w, impl)

    def fits(n_rows: int, w: int) -> bool:
        return estimate(n_rows, w).total <= budget

    plan_chunks(
        list(width), estimate, budget, rows.labels,
        "shorten the prompt or use a device with more memory"
        + (" (this model's scoring runs eager attention)" if impl == "eager" else ""),
    )  # fmt: skip
    dtype = getattr(model.cfg, "dtype", torch.float32)
    return _ScorePlan(bool(cached), bool(folded), chunk, fits, width, dtype)


def _run_group(
    model: Any, bp: AnswerPass, block: list[int], edits: list, plan: _ScorePlan
) -> list[tuple[Tensor, ...]]:
    """One answer pass over ``block`` for ``C = len(edits)`` edits (tiled ``C x n`` rows, or
    folded into the positions of one row each); per edit, the outputs of
    :func:`.answer_metrics.answer_metrics` at the block's answer positions."""
    dev = model_device(model)
    n, C = len(block), len(edits)
    # the first answer position of each row (its rank is reported)
    first = bp.answer_pos & (bp.answer_pos.long().cumsum(1) == 1)
    hooks: list[tuple[str, Any]] = []
    edit_pos = bp.edit_pos.to(dev)
    for c, fn in enumerate(edits):
        iv = fn(block) if fn is not None else None
        if iv is not None:
            hooks += bind_rows(iv, model, (c * n, (c + 1) * n), edit_pos)
    cap = Hidden()
    S = bp.tokens.shape[1]
    # fold one-position suffixes (1-token answers): measured to win there (nli's
    # conditions 366 s -> 222 s in the main job); longer suffixes stay tiled
    fold = bp.cache is not None and plan.folded and S == 1 and within_window(model, bp.reach + S)
    if fold:  # C suffixes per row, one cache (see shared_prefix)
        am = bp.kwargs["attention_mask"]
        kw = {
            "attention_mask": fold_mask(am, S, C, plan.dtype).to(dev),
            "position_ids": bp.kwargs["position_ids"].repeat(1, C).to(dev),
            "past_key_values": copy.deepcopy(bp.cache),  # one copy: n rows
        }
        toks = bp.tokens.repeat(1, C)
    else:
        kw = {k: v.repeat(C, 1).to(dev) for k, v in bp.kwargs.items()}
        if bp.cache is not None:
            kv = copy.deepcopy(bp.cache)
            kv.reorder_cache(torch.arange(n, device=dev).repeat(C))
            kw["past_key_values"] = kv
        toks = bp.tokens.repeat(C, 1)
    with (
        torch.inference_mode(),
        quiet_cache_rename(),
        model.hooks(fwd_hooks=[*fuse_edits(hooks, edit_pos, C, fold), ("unembed.hook_in", cap)]),
    ):
        model(toks.to(dev), **kw)
    check_fired(hooks, cap)
    h = cap.h
    if fold:  # [n, C*S, d] -> the tiled order [C*n, S, d]
        h = h.view(n, C, S, -1).transpose(0, 1).reshape(C * n, S, -1)
    # every edit's answer positions in one unembedding (large GEMMs are ~2x faster per
    # position on a CPU than one small product per edit)
    sel = bp.answer_pos.to(h.device).repeat(C, 1)
    vals = answer_metrics(
        model,
        h[sel],
        bp.gold.to(h.device).repeat(C, 1)[sel],
        first.to(h.device).repeat(C, 1)[sel],
        plan.chunk,
    )
    k = int(bp.answer_pos.sum())
    return [tuple(v[c * k : (c + 1) * k] for v in vals) for c in range(C)]


def _buffers(rows: AnswerRows, n_edits: int) -> list[dict]:
    """Per edit, the per-row results :func:`_scatter` fills."""
    R, amax = len(rows), max(len(a) for a in rows.answers)
    return [
        {
            "greedy": torch.zeros(R, dtype=torch.bool),
            "lp": torch.zeros(R, dtype=torch.float64),
            "tok": torch.full((R, amax), float("nan"), dtype=torch.float64),
            "rank": torch.zeros(R, dtype=torch.long),
            "arg": torch.zeros(R, dtype=torch.long),
        }
        for _ in range(n_edits)
    ]


def _collect(rows: AnswerRows, out: list[dict]) -> list[AnswerScores]:
    n_tok = torch.tensor([len(a) for a in rows.answers])
    return [AnswerScores(o["greedy"], o["lp"], o["tok"], o["rank"], n_tok, o["arg"]) for o in out]


def _scatter(
    o: dict,
    block: Sequence[int],
    answer_pos: Tensor,
    lp: Tensor,
    top: Tensor,
    rank: Tensor,
    arg: Tensor,
) -> None:
    """Write one block's per-position metrics (flattened over ``answer_pos``) per row."""
    n, S = answer_pos.shape
    lp_m = torch.full((n, S), float("nan"), dtype=torch.float64)
    lp_m[answer_pos] = lp
    top_m = torch.ones((n, S), dtype=torch.bool)
    top_m[answer_pos] = top
    rank_m = torch.zeros((n, S), dtype=torch.long)
    rank_m[answer_pos] = rank
    arg_m = torch.zeros((n, S), dtype=torch.long)
    arg_m[answer_pos] = arg
    first = answer_pos.long().argmax(1)  # the first answer position of each row
    idx = torch.tensor(list(block))
    o["greedy"][idx] = top_m.all(1)
    o["lp"][idx] = torch.where(answer_pos, lp_m, 0.0).sum(1)  # a masked gold: -inf
    o["rank"][idx] = rank_m.gather(1, first[:, None])[:, 0]
    o["arg"][idx] = arg_m.gather(1, first[:, None])[:, 0]
    # per-token log-probs, left-aligned
    k = answer_pos.long().cumsum(1) - 1
    tok = torch.full((n, o["tok"].shape[1]), float("nan"), dtype=torch.float64)
    r_idx, s_idx = answer_pos.nonzero(as_tuple=True)
    tok[r_idx, k[r_idx, s_idx]] = lp_m[r_idx, s_idx]
    o["tok"][idx] = tok


def _score_shared(
    model: Any,
    rows: Any,
    edits: Sequence[Any],
    *,
    include_bos: bool,
    batch_size: int,
    max_rows: int,
    chunk: int,
    fits: Callable[[int, int], bool],
    plain: Callable[[Any, list], list],
    progress: bool = False,
) -> list | None:
    """The scorer's shared-prefix path (scope ``all``): the runs of
    :func:`.prefix_groups.prefix_groups` share their prefix per edit, the other rows go to
    ``plain(sub_rows, sub_edits)``. ``None`` when no run pays or an edit differs between the
    rows of a run (per-row sets): then the caller takes its plain path for every row."""
    groups, alone = prefix_groups(rows, max_group=batch_size)
    if not groups:
        return None
    ivs: dict[tuple[int, int], tuple[Any, Any]] = {}
    for gi, grp in enumerate(groups):
        for e, fn in enumerate(edits):
            if fn is None:
                continue
            block = fn(list(grp.rows))
            if not uniform_edit(block, model):
                return None
            ivs[gi, e] = (fn([grp.rows[0]]), block) if block is not None else (None, None)
    out = _buffers(rows, len(edits))
    pad = int(getattr(get_tokenizer(model), "pad_token_id", None) or 0)

    def metrics(h: Tensor, gold: Tensor, first: Tensor) -> tuple[Tensor, ...]:
        return answer_metrics(model, h, gold, first, chunk)

    plan = []
    for gi, grp in enumerate(groups):
        m = len(grp.rows)
        width = max(len(rows.prompts[r]) + len(rows.answers[r]) for r in grp.rows)
        c = max(1, max_rows // m)
        while c > 1 and not fits(c * m, width):
            c = max(1, c // 2)
        plan += [(gi, list(range(s, min(s + c, len(edits))))) for s in range(0, len(edits), c)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc="scoring (shared prefixes)", unit="pass")
    try:
        for gi, chunk_edits in plan:
            grp = groups[gi]
            pairs = [ivs.get((gi, e), (None, None)) for e in chunk_edits]
            answer_pos, per_edit = score_group(model, rows, grp, pairs, include_bos, pad, metrics)
            for e, vals in zip(chunk_edits, per_edit, strict=True):
                _scatter(out[e], grp.rows, answer_pos, *vals)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if alone:
        sub = AnswerRows(
            tuple(rows.prompts[r] for r in alone), tuple(rows.answers[r] for r in alone),
            tuple(rows.labels[r] for r in alone), rows.bos,
        )  # fmt: skip
        sub_edits = [
            None if fn is None else (lambda b, fn=fn: fn([alone[i] for i in b])) for fn in edits
        ]
        idx = torch.tensor(alone)
        for o, sc in zip(out, plain(sub, sub_edits), strict=True):
            o["greedy"][idx], o["lp"][idx] = sc.greedy_match, sc.logprob
            o["rank"][idx], o["arg"][idx] = sc.first_rank, sc.first_token
            o["tok"][idx, : sc.token_logprobs.shape[1]] = sc.token_logprobs
    return _collect(rows, out)
