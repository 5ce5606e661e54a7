"""The scorer's blocks of rows and the inputs of one block's answer pass.

Rows are scored in blocks (sorted by answer then prompt length). With the prefix cache (scope
``last``), a block's prompts minus their last token run once and every edit runs only the
suffix (the last prompt token and the answer positions) against their KV cache. Where prompts
share a prefix (few-shot demonstrations; :func:`.prefix_groups.prefix_groups` on the
prompts), every such prefix runs once per call and a block's rows run only their remainders
(:func:`.prefix_groups.continue_prompts`), their cache compacted to the plain layout.
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
        reach = max(int(starts.max()), pmask.shape[1])
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
    model: Any,
    rows: Any,
    batch_size: int,
    cached: bool,
    fits: Callable[[int, int], bool],
    attention: str = "auto",
) -> list[tuple[list[int], Callable[[], Shared | None]]]:
    """The blocks of the scope-``last`` path (exactly :func:`plan_blocks`' blocks), each with
    the shared prompt prefixes its rows continue (a function: every prefix runs once, in one
    pass with ``attention``, when the first block that needs one runs).

    Rows whose prompts share a prefix (:func:`.prefix_groups.prefix_groups` on the prompts, one
    run per few-shot language in the built-in tasks) continue it; rows in no run continue none
    (index ``-1``). The blocks are the plain ones, and the continued cache is compacted to the
    plain pass's layout, so every condition's suffix pass costs what it costs with whole
    prompts. Two earlier rules gave prefix groups blocks of their own and were slower where it
    matters: a block mixing prefixes with a gapped cache (its width the longest prefix plus the
    longest remainder; the main job's nli conditions 275 s at 02d4901 against 234.5 s with whole
    prompts at 0c3633f), and a block per prefix and answer length (35-59 blocks instead of
    8-13; facts' and qa's conditions 270 s and 492 s at 82ca9c2 against 164 s and 341 s)."""

    def none() -> None:
        return None

    blocks = plan_blocks(rows, batch_size, fits)
    if not cached:
        return [(b, none) for b in blocks]
    groups, _ = prefix_groups(rows, max_group=len(rows), prompts_only=True)
    if not groups:
        return [(b, none) for b in blocks]
    index = torch.full((len(rows),), -1, dtype=torch.long)
    for gi, g in enumerate(groups):
        index[list(g.rows)] = gi
    tokens = [rows.prompts[g.rows[0]][: g.shared] for g in groups]
    once = functools.cache(lambda: PromptPrefixes.compute(model, tokens, attention))
    out: list[tuple[list[int], Callable[[], Shared | None]]] = []
    for b in blocks:
        at = index[b]
        if bool((at < 0).all()):
            out.append((b, none))
        else:
            out.append((b, lambda at=at: (once(), at)))
    return out
