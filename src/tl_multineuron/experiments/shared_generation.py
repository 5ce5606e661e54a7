"""Greedy generation whose prompts share a few-shot prefix: the prefix runs once per call.

Without hooks on the model, a batch's prompts minus their last token are what a KV-cached
generation computes before its first step. Where prompts share a prefix
(:func:`.prefix_groups.prefix_groups` on the prompts, one run per few-shot language in the
built-in tasks), every prefix runs once per call (:class:`PromptPrefixes`), a batch's rows run
only their remainders (:func:`.prefix_groups.continue_prompts`, the cache compacted to the
left-padded layout a whole prompt gives), and then the greedy steps run from the last prompt
token, one position per step, as a cached ``generate`` runs them.

Used by :func:`.evaluation.generate_greedy` only where it is exact (:func:`shared_status`): the
model's forward returns a HF cache (not HookedTransformer, not TL-native models), no hook is
attached and none is given per batch (a hook attached during generation edits the whole prompt,
shared part included, so with hooks the whole prompts run), the ``tl`` backend, and the span
with its gaps inside every sliding window (else that batch runs whole prompts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from ..backends.devices import model_device
from ..backends.tl_compat import quiet_cache_rename
from ..sharing.prompt_prefix import PromptPrefixes, prefix_status
from ..sharing.recording import last_position_unembed_hooks
from .prefix_groups import continue_prompts, prefix_groups


class _Prompts:
    """Token ids of prompts, in the shape :func:`.prefix_groups.prefix_groups` reads."""

    def __init__(self, prompts: Sequence[Sequence[int]]) -> None:
        self.prompts = [tuple(p) for p in prompts]
        self.answers = [() for _ in prompts]

    def __len__(self) -> int:
        return len(self.prompts)


def shared_status(model: Any, backend: str, per_batch_hooks: bool) -> tuple[bool, str]:
    """Whether :func:`.evaluation.generate_greedy` may compute shared prompt prefixes once,
    and if not, why."""
    if backend != "tl":
        return (False, f"backend {backend!r} runs HF's own generate over whole prompts")
    if per_batch_hooks:
        return (False, "hooks given per batch would have to act on the shared prefix too")
    return prefix_status(model)


def batch_prefixes(
    model: Any, ids: Sequence[Sequence[int]]
) -> Callable[[int, int], tuple[PromptPrefixes, Tensor] | None]:
    """For prompts ``ids``, a function of a batch ``(start, stop)``: the prefixes its rows
    continue and each row's index (``-1``: none), or ``None`` where no row of the batch has a
    shared prefix. The prefixes run once, when the first batch that needs them asks."""
    groups, _ = prefix_groups(_Prompts(ids), max_group=len(ids), prompts_only=True)
    index = torch.full((len(ids),), -1, dtype=torch.long)
    for gi, g in enumerate(groups):
        index[list(g.rows)] = gi
    tokens = [ids[g.rows[0]][: g.shared] for g in groups]
    once = functools.cache(lambda: PromptPrefixes.compute(model, tokens, "auto"))

    def at(start: int, stop: int) -> tuple[PromptPrefixes, Tensor] | None:
        sub = index[start:stop]
        return None if not groups or bool((sub < 0).all()) else (once(), sub)

    return at


def stop_tokens(model: Any) -> tuple[list[int], int | None]:
    """The tokens that end a row and the token that fills a row after its end, as
    TransformerLens' ``generate(stop_at_eos=True)`` takes them: ``cfg.eos_token_id`` (one id
    or several, e.g. a chat model's end of turn) or else the tokenizer's EOS; the filler is
    the tokenizer's EOS where there is one."""
    tok_eos = getattr(getattr(model, "tokenizer", None), "eos_token_id", None)
    ids = getattr(model.cfg, "eos_token_id", None)
    if ids is None:
        ids = tok_eos
    if ids is None:
        return [], None
    if isinstance(ids, int):
        return [ids], ids
    ids = [int(i) for i in ids]
    return ids, tok_eos if tok_eos is not None else ids[0]


def greedy_from_prefixes(
    model: Any,
    prefixes: PromptPrefixes,
    index: Int[Tensor, " batch"],
    ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad: int,
) -> Int[Tensor, "batch new"] | None:
    """Greedy continuations of ``ids`` (row ``i`` starting with prefix ``index[i]``): the
    remainders continue the prefixes, then ``max_new_tokens`` steps from each prompt's last
    token, a row ending at a stop token and filled after it, all stopping once every row has
    ended (:func:`stop_tokens`, as TransformerLens' ``generate`` does). ``None`` where the
    continued cache would not be exact (a sliding window): the caller runs whole prompts."""
    kept = continue_prompts(model, prefixes, index, ids, max_new_tokens + 1, pad)
    if kept is None:
        return None
    cache, pmask = kept
    dev = model_device(model)
    B = len(ids)
    mask = pmask.long().to(dev)
    toks = torch.tensor([[p[-1]] for p in ids], device=dev)
    pos = torch.tensor([[len(p) - 1] for p in ids], device=dev)
    stop, fill = stop_tokens(model)
    stop_t = torch.tensor(stop, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    out = []
    one = torch.ones(B, 1, dtype=torch.long, device=dev)
    with (
        torch.inference_mode(),
        quiet_cache_rename(),
        model.hooks(fwd_hooks=last_position_unembed_hooks(model)),
    ):
        for _ in range(max_new_tokens):
            mask = torch.cat([mask, one], 1)
            logits = model(toks, past_key_values=cache, attention_mask=mask, position_ids=pos)
            nxt = logits[:, -1].argmax(-1)
            if stop:
                nxt = torch.where(done, torch.full_like(nxt, fill), nxt)
                done |= torch.isin(nxt, stop_t)
            out.append(nxt)
            if stop and bool(done.all()):
                break
            toks, pos = nxt[:, None], pos + 1
    return torch.stack(out, 1).cpu()
