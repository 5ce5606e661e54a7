"""Rows that share a token prefix, scored with edits at every position (scope ``all``).

Few-shot prompts repeat their demonstrations in every item, and the specificity matrix scores
every token of such texts under every edit. When the edit of a pass is the same for every row
(one neuron set, not a set per row), rows that begin with the same tokens compute those tokens
identically: per edit, the shared part runs **once** (its KV cache kept, its own scored tokens
unembedded once), then every row runs only its remainder against that cache.

The rule (:func:`prefix_groups`): rows are sorted by their tokens and taken in runs that share
at least ``min_shared`` positions (default :data:`MIN_SHARED`); a row joins the current run
unless keeping the run's longer common prefix saves more positions than adding the row. The
shared part is the common prefix minus its last token (every row keeps at least one position of
its own, where it predicts its own next token); where the rows' first scored positions differ,
it stops before the earliest, so its scored positions are the same for every row. A row in no
run, a single row, or rows that share nothing take the plain path.

Exactness: the remainder attends to the cached keys and values of the shared part at the same
position ids, as the full pass would (a sliding window is applied by the model's own cache,
checked against full passes in the tests); the edits act on the shared part as on the full
pass's (BOS only with ``include_bos``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..backends.devices import model_device
from ..backends.tl_compat import quiet_cache_rename
from ..sharing.prompt_prefix import (
    MIN_SHARED,
    PromptPrefixes,
    compact_cache,
    keep_one_position,
    within_window,
)
from ..sharing.recording import pad_tokens
from .interventions import BatchShape
from .site_edits import Hidden, bind_rows, check_fired, fuse_edits


@dataclass(frozen=True)
class PrefixGroup:
    """Rows (indices into the scored rows) whose first ``shared`` positions are identical."""

    rows: tuple[int, ...]
    shared: int


def _sequences(rows: Any, prompts_only: bool = False) -> tuple[list[tuple[int, ...]], list[int]]:
    """Each row's input tokens (prompt + answer minus its last token; ``prompts_only``: the
    prompt) and its first scored position."""
    if prompts_only:
        return [tuple(p) for p in rows.prompts], [len(p) - 1 for p in rows.prompts]
    seqs = [(*p, *a[:-1]) for p, a in zip(rows.prompts, rows.answers, strict=True)]
    return seqs, [len(p) - 1 for p in rows.prompts]


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _shared(length: int, firsts: list[int]) -> int:
    """The shared positions of a run whose common prefix is ``length`` tokens long."""
    s = length - 1
    if len(set(firsts)) > 1:
        s = min(s, min(firsts))
    return max(0, s)


def prefix_groups(
    rows: Any, min_shared: int = MIN_SHARED, max_group: int = 64, prompts_only: bool = False
) -> tuple[list[PrefixGroup], list[int]]:
    """Runs of rows that share at least ``min_shared`` positions (at most ``max_group`` rows
    each), and the rows in none (see the module docstring). ``prompts_only``: the rows' prompts
    alone (the scope-``last`` prompt pass: the shared part then ends before every prompt's last
    token)."""
    seqs, firsts = _sequences(rows, prompts_only)
    order = sorted(range(len(seqs)), key=lambda r: seqs[r])
    groups: list[PrefixGroup] = []
    alone: list[int] = []

    def close(run: list[int], length: int) -> None:
        s = _shared(length, [firsts[r] for r in run])
        if len(run) > 1 and s >= min_shared:
            groups.append(PrefixGroup(tuple(run), s))
        else:
            alone.extend(run)

    run: list[int] = []
    length = 0
    for r in order:
        if not run:
            run, length = [r], len(seqs[r])
            continue
        new = min(length, _common(seqs[run[0]], seqs[r]))
        s_new = _shared(new, [firsts[x] for x in (*run, r)])
        s_old = _shared(length, [firsts[x] for x in run]) if len(run) > 1 else 0
        pays = len(run) * s_new >= (len(run) - 1) * s_old  # joining saves at least as much
        if len(run) < max_group and s_new >= min_shared and pays:
            run.append(r)
            length = new
        else:
            close(run, length)
            run, length = [r], len(seqs[r])
    if run:
        close(run, length)
    return groups, sorted(alone)


def continue_prompts(
    model: Any,
    prefixes: PromptPrefixes,
    index: Tensor,
    prompts: Sequence[Sequence[int]],
    suffix: int,
    pad: int,
) -> tuple[Any, Tensor] | None:
    """The KV cache of ``prompts`` minus their last token, prompt ``i`` starting with prefix
    ``index[i]`` (``-1``: none; scope ``last``), and its 0/1 mask, laid out as the plain
    left-padded prompt pass lays them out: a copy of the prefixes' cache, a row each, extended
    by one pass over the rows' remainders (right-padded; the pads of shorter prefixes are masked
    gaps), then compacted (:func:`~tl_multineuron.sharing.prompt_prefix.compact_cache`), so the
    suffix passes read no wider a cache than whole prompts give. ``None`` where that is not
    exact (the span with its gaps, ``suffix`` positions included, reaches a sliding window) or
    the cache cannot be compacted: the caller runs whole prompts."""
    cut = torch.where(index >= 0, prefixes.lengths[index.clamp_min(0).cpu()], 0).tolist()
    own = [list(p[c:-1]) for p, c in zip(prompts, cut, strict=True)]
    R = max(len(r) for r in own)
    if not within_window(model, prefixes.width + R + suffix):
        return None
    toks, real = pad_tokens(own, pad)
    kw = prefixes.inputs(index, real.bool())
    if R:
        with (
            torch.inference_mode(),
            quiet_cache_rename(),
            model.hooks(fwd_hooks=[("unembed.hook_in", keep_one_position)]),
        ):
            model(toks.to(model_device(model)), **kw)
    # row i's real positions: its prefix [0, cut_i), then its remainder [width, width + own_i)
    n = torch.tensor([c + len(r) for c, r in zip(cut, own, strict=True)])
    W = int(n.max())
    k = torch.arange(W)[None] - (W - n)[:, None]  # the row's own position, < 0 on left pads
    c = torch.tensor(cut)[:, None]
    source = torch.where(k < c, k, prefixes.width + k - c).clamp_min(0)
    if not compact_cache(kw["past_key_values"], source):
        return None
    return kw["past_key_values"], k >= 0


def uniform_edit(iv: Any, model: Any) -> bool:
    """Whether an edit does the same to every row: its masks are one ``[d_mlp]`` (or per row
    and all equal) and its values are not per row."""
    if iv is None:
        return True
    for _, h in iv.fwd_hooks(model):
        if isinstance(h, BatchShape):
            continue
        m = h.mask
        if m.ndim == 2 and not bool((m == m[:1]).all()):
            return False
        if isinstance(h.value, Tensor) and h.value.ndim > 1:
            return False
    return True


def score_group(
    model: Any,
    rows: Any,
    group: PrefixGroup,
    ivs: Sequence[tuple[Any, Any]],
    include_bos: bool,
    pad: int,
    metrics: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, ...]],
) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
    """A group's shared part in one pass and its rows' remainders in another, for ``C =
    len(ivs)`` edits (``(edit for one row, edit for the group's rows)``, ``None`` = no edit);
    the shared part's scored positions are unembedded once per edit, not once per row, in the
    same ``metrics`` call (one unembedding GEMM) as the remainders'.

    Returns the group's ``[m, W]`` mask of scored positions (W = the longest row's input) and
    per edit ``metrics``' outputs (log-prob, argmax is gold, rank, argmax) at those positions
    in row-major order, as the scorer's blocks give them."""
    dev = model_device(model)
    seqs, firsts = _sequences(rows)
    g = list(group.rows)
    m, C, s = len(g), len(ivs), group.shared
    prefix = torch.tensor([seqs[g[0]][:s]], dtype=torch.long)
    pos = torch.ones(1, s, dtype=torch.bool)
    if not include_bos and rows.starts_with_bos(g[0]):
        pos[0, 0] = False
    hooks: list = []
    for c, (one, _) in enumerate(ivs):
        if one is not None:
            hooks += bind_rows(one, model, (c, c + 1), pos.to(dev))
    cap = Hidden()
    with (
        torch.inference_mode(),
        quiet_cache_rename(),
        model.hooks(fwd_hooks=[*fuse_edits(hooks, pos.to(dev), C), ("unembed.hook_in", cap)]),
    ):
        _, cache = model(
            prefix.repeat(C, 1).to(dev),
            attention_mask=torch.ones(C, s, dtype=torch.long, device=dev),
            return_type="logits_and_cache",
            use_cache=True,
        )
    check_fired(hooks, cap)
    h_pre = cap.h  # [C, s, d]
    toks, real = pad_tokens([seqs[r][s:] for r in g], pad)
    S = toks.shape[1]
    W = s + S
    answer_pos = torch.zeros(m, W, dtype=torch.bool)
    gold = torch.zeros(m, W, dtype=torch.long)
    for i, r in enumerate(g):
        answer_pos[i, firsts[r] : len(seqs[r])] = True
        gold[i, firsts[r] : len(seqs[r])] = torch.tensor(rows.answers[r])
    first = answer_pos & (answer_pos.long().cumsum(1) == 1)
    cache.reorder_cache(torch.arange(C, device=dev).repeat_interleave(m))
    hooks = []
    for c, (_, block) in enumerate(ivs):
        if block is not None:
            hooks += bind_rows(block, model, (c * m, (c + 1) * m), real.to(dev))
    cap = Hidden()
    mask = torch.cat([torch.ones(m, s, dtype=torch.long), real.long()], 1)
    with (
        torch.inference_mode(),
        quiet_cache_rename(),
        model.hooks(fwd_hooks=[*fuse_edits(hooks, real.to(dev), C), ("unembed.hook_in", cap)]),
    ):
        model(
            toks.repeat(C, 1).to(dev),
            attention_mask=mask.repeat(C, 1).to(dev),
            position_ids=(s + torch.arange(S))[None].repeat(C * m, 1).to(dev),
            past_key_values=cache,
        )
    check_fired(hooks, cap)
    # the shared part's scored columns (the same in every row), then each row's own
    shared_cols = answer_pos[0, :s]
    own = answer_pos[:, s:]
    hd = h_pre.device
    k_pre, k_own = int(shared_cols.sum()), int(own.sum())
    h_suf = cap.h.reshape(C, m, S, -1)[:, own.to(cap.h.device)]  # [C, q, d]
    vals = metrics(  # every edit's shared, then its own positions, in one unembedding
        torch.cat([h_pre[:, shared_cols.to(hd)], h_suf.to(hd)], 1).reshape(-1, h_pre.shape[-1]),
        torch.cat([gold[0, :s][shared_cols], gold[:, s:][own]]).repeat(C).to(hd),
        torch.cat([first[0, :s][shared_cols], first[:, s:][own]]).repeat(C).to(hd),
    )
    per_edit = []
    k = k_pre + k_own
    for c in range(C):
        out = []
        for b in vals:
            full = torch.zeros((m, W), dtype=b.dtype)
            full[:, :s][:, shared_cols] = b[c * k : c * k + k_pre]
            full[:, s:][own] = b[c * k + k_pre : (c + 1) * k]
            out.append(full[answer_pos])
        per_edit.append(tuple(out))
    return answer_pos, per_edit
