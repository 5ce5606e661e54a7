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
from ..errors import MultiNeuronError
from .interventions import BatchShape

#: Positions a run of rows must share for the shared path (shorter prefixes save less than the
#: extra pass costs).
MIN_SHARED = 8


@dataclass(frozen=True)
class PrefixGroup:
    """Rows (indices into the scored rows) whose first ``shared`` positions are identical."""

    rows: tuple[int, ...]
    shared: int


def _sequences(rows: Any) -> tuple[list[tuple[int, ...]], list[int]]:
    """Each row's input tokens (prompt + answer minus its last token) and its first scored
    position."""
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
    rows: Any, min_shared: int = MIN_SHARED, max_group: int = 64
) -> tuple[list[PrefixGroup], list[int]]:
    """Runs of rows that share at least ``min_shared`` positions (at most ``max_group`` rows
    each), and the rows in none (see the module docstring)."""
    seqs, firsts = _sequences(rows)
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
    fuse: Callable[..., list],
    bind: Callable[..., list],
    hidden: Callable[[], Any],
) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
    """A group's shared part in one pass and its rows' remainders in another, for ``C =
    len(ivs)`` edits (``(edit for one row, edit for the group's rows)``, ``None`` = no edit);
    the shared part's scored positions are unembedded once per edit, not once per row.

    Returns the group's ``[m, W]`` mask of scored positions (W = the longest row's input) and
    per edit ``metrics``' outputs (log-prob, argmax is gold, rank, argmax) at those positions
    in row-major order, as the scorer's blocks give them. ``fuse`` / ``bind`` / ``hidden``:
    the scorer's hook fusion, edit binding and final-hidden-state capture."""
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
            hooks += bind(one, model, (c, c + 1), pos.to(dev))
    cap = hidden()
    with (
        torch.inference_mode(),
        quiet_cache_rename(),
        model.hooks(fwd_hooks=[*fuse(hooks, pos.to(dev), C), ("unembed.hook_in", cap)]),
    ):
        _, cache = model(
            prefix.repeat(C, 1).to(dev),
            attention_mask=torch.ones(C, s, dtype=torch.long, device=dev),
            return_type="logits_and_cache",
            use_cache=True,
        )
    check_fired(hooks, cap)
    h_pre = cap.h  # [C, s, d]
    S = max(len(seqs[r]) for r in g) - s
    toks = torch.full((m, S), pad, dtype=torch.long)
    real = torch.zeros(m, S, dtype=torch.bool)
    W = s + S
    answer_pos = torch.zeros(m, W, dtype=torch.bool)
    gold = torch.zeros(m, W, dtype=torch.long)
    for i, r in enumerate(g):
        n = len(seqs[r])
        toks[i, : n - s] = torch.tensor(seqs[r][s:])
        real[i, : n - s] = True
        answer_pos[i, firsts[r] : n] = True
        gold[i, firsts[r] : n] = torch.tensor(rows.answers[r])
    first = answer_pos & (answer_pos.long().cumsum(1) == 1)
    cache.reorder_cache(torch.arange(C, device=dev).repeat_interleave(m))
    hooks = []
    for c, (_, block) in enumerate(ivs):
        if block is not None:
            hooks += bind(block, model, (c * m, (c + 1) * m), real.to(dev))
    cap = hidden()
    mask = torch.cat([torch.ones(m, s, dtype=torch.long), real.long()], 1)
    with (
        torch.inference_mode(),
        quiet_cache_rename(),
        model.hooks(fwd_hooks=[*fuse(hooks, real.to(dev), C), ("unembed.hook_in", cap)]),
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
    pre = (
        metrics(
            h_pre[:, shared_cols.to(hd)].reshape(-1, h_pre.shape[-1]),
            gold[0, :s][shared_cols].repeat(C).to(hd),
            first[0, :s][shared_cols].repeat(C).to(hd),
        )
        if k_pre
        else None
    )
    h_suf = cap.h.reshape(C, m, S, -1)[:, own.to(cap.h.device)]  # [C, q, d]
    suf = metrics(
        h_suf.reshape(-1, h_suf.shape[-1]),
        gold[:, s:][own].repeat(C).to(hd),
        first[:, s:][own].repeat(C).to(hd),
    )
    per_edit = []
    for c in range(C):
        vals = []
        for j, b in enumerate(suf):
            full = torch.zeros((m, W), dtype=b.dtype)
            if pre is not None:
                full[:, :s][:, shared_cols] = pre[j][c * k_pre : (c + 1) * k_pre]
            full[:, s:][own] = b[c * k_own : (c + 1) * k_own]
            vals.append(full[answer_pos])
        per_edit.append(tuple(vals))
    return answer_pos, per_edit


def check_fired(hooks: list, cap: Any) -> None:
    """Every edit hook of a pass fired and the final hidden states were captured."""
    silent = [name for name, h in hooks if not h.fired]
    if silent or cap.h is None:
        raise MultiNeuronError(f"hooks never fired while scoring: {silent or 'unembed'}")
