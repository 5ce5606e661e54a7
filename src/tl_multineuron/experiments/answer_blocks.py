"""The scorer's blocks of rows and the inputs of one block's answer pass.

Rows are scored in blocks (sorted by answer then prompt length). With the prefix cache (scope
``last``), a block's prompts minus their last token run once and every edit runs only the
suffix (the last prompt token and the answer positions) against their KV cache. Rows whose
prompts share a prefix (few-shot demonstrations; :func:`.prefix_groups.prefix_groups` on the
prompts) form blocks of their own, and that prefix runs once for all of them
(:func:`.prefix_groups.continue_prompts`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..backends.devices import model_device
from ..backends.tl_compat import quiet_cache_rename
from ..sharing.prompt_prefix import PromptPrefixes
from ..sharing.recording import get_tokenizer, last_position_unembed_hooks, pad_tokens
from .prefix_groups import continue_prompts, prefix_groups

#: The prefixes a block's rows continue and the index of each row's prefix.
Shared = tuple[PromptPrefixes, Tensor]


@dataclass
class AnswerPass:
    """One forward's inputs for a block of rows, before tiling over edits."""

    tokens: Tensor  # [n, S]
    edit_pos: Tensor  # [n, S] where edits apply
    answer_pos: Tensor  # [n, S] positions whose next token is an answer token
    gold: Tensor  # [n, S] the answer token predicted at each answer position
    kwargs: dict  # attention_mask / position_ids (tiled later)
    cache: Any = None
    reach: int = 0  # the cache's span: a suffix's first position id, or more where it has gaps


def block_pass(
    model: Any,
    rows: Any,
    block: Sequence[int],
    scope: str,
    bos: bool,
    cached: bool,
    prefix: Shared | None = None,
) -> AnswerPass:
    """The inputs of one block's answer pass; ``cached``: the prompts minus their last token
    run here once, their KV cache kept for every edit (scope ``last``); ``prefix``: the block's
    ``prefix``: ``(prefixes, index)``, row ``i``'s prompt starts with prefix ``index[i]``, so
    only the remainders run (:func:`.prefix_groups.continue_prompts`)."""
    pad = int(getattr(get_tokenizer(model), "pad_token_id", None) or 0)
    dev = model_device(model)
    P = [rows.prompts[r] for r in block]
    A = [rows.answers[r] for r in block]
    if cached:
        S = max(len(a) for a in A)
        kept = continue_prompts(model, *prefix, P, S, pad) if prefix is not None else None
        if kept is not None:
            cache, pmask = kept
        else:  # the prompt minus its last token, left-padded (no gaps before the suffix)
            ptoks, pmask = pad_tokens([p[:-1] for p in P], pad, left=True)
            ppos = (pmask.long().cumsum(-1) - 1).clamp_min(0)
            with (
                torch.inference_mode(),
                quiet_cache_rename(),
                model.hooks(fwd_hooks=last_position_unembed_hooks(model, rows="one")),
            ):
                _, cache = model(
                    ptoks.to(dev),
                    attention_mask=pmask.long().to(dev),
                    position_ids=ppos.to(dev),
                    return_type="logits_and_cache",
                    use_cache=True,
                )
        seqs = [(p[-1], *a[:-1]) for p, a in zip(P, A, strict=True)]
        toks, smask = pad_tokens(seqs, pad, left=False)
        S = toks.shape[1]
        starts = torch.tensor([len(p) - 1 for p in P])
        pos_ids = starts[:, None] + torch.arange(S)[None]
        n_ans = torch.tensor([len(a) for a in A])
        answer_pos = torch.arange(S)[None] < n_ans[:, None]
        gold = torch.zeros_like(toks)
        for i, a in enumerate(A):
            gold[i, : len(a)] = torch.tensor(a)
        kwargs = {
            "attention_mask": torch.cat([pmask, smask], 1).long(),
            "position_ids": pos_ids,
        }
        reach = max(int(starts.max()), pmask.shape[1])  # a shared prefix's cache has gaps
        return AnswerPass(toks, answer_pos, answer_pos, gold, kwargs, cache, reach)
    seqs = [(*p, *a[:-1]) for p, a in zip(P, A, strict=True)]
    toks, real = pad_tokens(seqs, pad, left=False)
    S = toks.shape[1]
    ar = torch.arange(S)[None]
    first = torch.tensor([len(p) - 1 for p in P])[:, None]
    answer_pos = real & (ar >= first)
    gold = torch.zeros_like(toks)
    for i, (p, a) in enumerate(zip(P, A, strict=True)):
        gold[i, len(p) - 1 : len(p) - 1 + len(a)] = torch.tensor(a)
    if scope == "last":
        edit_pos = answer_pos
    else:
        edit_pos = real.clone()
        if not bos:
            skip = torch.tensor([rows.starts_with_bos(r) for r in block])
            edit_pos[:, 0] &= ~skip
    return AnswerPass(toks, edit_pos, answer_pos, gold, {})


def plan_blocks(
    rows: Any,
    batch_size: int,
    fits: Callable[[int, int], bool] | None = None,
    subset: Sequence[int] | None = None,
) -> list[list[int]]:
    """The scorer's blocks of rows (of ``subset``, default all): sorted by answer then prompt
    length (less padding), a new block when one holds ``batch_size`` rows, when the answer length
    changes (no padding among the answer positions) or when ``fits(n_rows, width)`` says the
    next row would not fit."""
    width = [len(p) + len(a) for p, a in zip(rows.prompts, rows.answers, strict=True)]
    order = sorted(
        range(len(rows)) if subset is None else subset,
        key=lambda r: (len(rows.answers[r]), len(rows.prompts[r])),
    )
    blocks: list[list[int]] = []
    for r in order:
        if (
            not blocks
            or len(blocks[-1]) == batch_size
            or (len(rows.answers[r]) != len(rows.answers[blocks[-1][0]]))
            or (
                fits is not None
                and not fits(len(blocks[-1]) + 1, max(width[x] for x in (*blocks[-1], r)))
            )
        ):
            blocks.append([])
        blocks[-1].append(r)
    return blocks


def shared_blocks(
    model: Any, rows: Any, batch_size: int, cached: bool, fits: Callable[[int, int], bool]
) -> list[tuple[list[int], Callable[[], Shared | None]]]:
    """The blocks of the scope-``last`` path, each with the shared prompt prefix its rows
    continue (a function: a prefix runs once, when its first block runs).

    Rows whose prompts share a prefix (:func:`.prefix_groups.prefix_groups` on the prompts) and
    have the same answer length form blocks of their own when they are at least half a block
    (``batch_size / 2`` rows); every other row goes to plain blocks. A block never mixes
    prefixes: its cache would be as wide as the longest prefix plus the longest remainder, and
    every condition's suffix pass reads the whole cache (the main job's nli conditions took
    275 s so at 02d4901, 234.5 s with whole prompts at 0c3633f). Nor are small runs given
    blocks of their own: on the main job's multi-token tasks a block per prefix and answer
    length makes 35-59 blocks instead of 8-13 and 1.7-2.2x the passes per condition set (facts'
    and qa's conditions took 270 s and 492 s at 82ca9c2, 164 s and 341 s at 0c3633f); with
    this rule those tasks keep the plain blocks exactly."""

    def none() -> None:
        return None

    if not cached:
        return [(b, none) for b in plan_blocks(rows, batch_size, fits)]
    groups, alone = prefix_groups(rows, max_group=len(rows), prompts_only=True)
    runs: list[tuple[list[int], tuple[int, ...]]] = []
    for g in groups:  # a block holds one answer length: split each group by it
        by_length: dict[int, list[int]] = {}
        for r in g.rows:
            by_length.setdefault(len(rows.answers[r]), []).append(r)
        for part in by_length.values():
            if 2 * len(part) >= batch_size:
                runs.append((part, rows.prompts[g.rows[0]][: g.shared]))
            else:  # too few rows for blocks of their own: plain blocks, with other rows
                alone = [*alone, *part]
    out = [(b, none) for b in plan_blocks(rows, batch_size, fits, alone)] if alone else []
    for part, tokens in runs:  # the cache is no wider than the block's prompts
        once = functools.cache(lambda t=tokens: PromptPrefixes.compute(model, [t], "eager"))
        for b in plan_blocks(rows, batch_size, fits, part):
            index = torch.zeros(len(b), dtype=torch.long)
            out.append((b, lambda once=once, index=index: (once(), index)))
    return out
