"""A prompt prefix shared by every prompt of a language, computed once per recording run.

Few-shot prompts repeat their demonstrations in every item: the built-in tasks' prompts hold
6-11x more tokens than their distinct prefixes. A recording pass that reads the last prompt
token (``token="last"``) needs each prompt's own tokens only after the part it shares: the
shared part's keys and values are the same for every item. So, per language, the shared part
runs **once** per :func:`~tl_multineuron.sharing.recording.iter_dataset_with` call (one row,
its HF KV cache kept), and every batch runs only its prompts' remainders against a copy of that
cache expanded to the batch's rows, at the position ids the full prompt gives them.

The rule (:func:`~tl_multineuron.sharing.recording.language_prefixes`): per language, the
longest token prefix that all the dataset's prompts in that language share, cut so that every
prompt keeps at least its last token; used when it is at least :data:`MIN_SHARED` tokens and
the dataset has two or more items. Prompts with no such prefix (zero-shot prompts) take the
plain path unchanged.

All languages' prefixes run in one right-padded pass (:class:`PromptPrefixes`), and a batch's
rows continue each its own language's prefix in one pass: the pads of shorter prefixes are
masked gaps, exact where no sliding window is crossed (:func:`within_window`; else the
plain path).

The shared path is used only where it is exact (:func:`prefix_status`): the model's forward
must return a HF cache that a continuation extends exactly (checked once per model, as the
scorer's prefix cache is; not HookedTransformer, not TL-native models), the recording reads
the last token (``token="all"`` aggregates over the shared positions too), and no hook may be
attached to the model (an edit such as ``apply(model, deactivate(S))`` would have to act on the
shared part as a full pass does; with hooks attached, batches take the plain path). Sliding
windows: see above.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..backends.attention import efficient_attention
from ..backends.batch_positions import pad_tokens
from ..backends.cache_probes import prefix_cache_status
from ..backends.devices import model_device
from ..backends.tl_compat import quiet_cache_rename, sliding_window

#: Tokens a language's prompts must share for the shared path (shorter prefixes save less than
#: the extra pass costs).
MIN_SHARED = 8


def common_length(ids: Sequence[Sequence[int]]) -> int:
    """The length of the longest token prefix that every row of ``ids`` starts with."""
    if not ids:
        return 0
    n = min(len(r) for r in ids)
    if n == 0:
        return 0
    rows = torch.tensor([list(r[:n]) for r in ids], dtype=torch.long)
    same = (rows == rows[:1]).all(0)
    return int(same.long().cumprod(0).sum())


def within_window(model: Any, span: int) -> bool:
    """Whether rows of ``span`` positions (the last query's position id + 1) fit strictly inside
    every sliding attention window of ``model``, so that a custom mask, which replaces the
    window, changes nothing (no window: always)."""
    window = sliding_window(model)
    return window is None or span < window


def attached_hooks(model: Any) -> list[str]:
    """Hook points of ``model`` that have forward or backward hooks attached right now."""
    return [
        name
        for name, hp in getattr(model, "hook_dict", {}).items()
        if getattr(hp, "fwd_hooks", None) or getattr(hp, "bwd_hooks", None)
    ]


def prefix_status(model: Any, token: str = "last") -> tuple[bool, str]:
    """Whether recording passes over ``model`` may compute a shared prompt prefix once, and if
    not, why (the path taken is then the plain one)."""
    if token != "last":
        return (False, f"token mode {token!r} aggregates over the shared positions too")
    ok, why = prefix_cache_status(model)
    if not ok:
        return (False, why)
    hooked = attached_hooks(model)
    if hooked:
        more = f" and {len(hooked) - 3} more" if len(hooked) > 3 else ""
        return (
            False,
            f"hooks are attached to {', '.join(hooked[:3])}{more}: they would have to act on "
            "the shared prefix too",
        )
    return (True, "")


def keep_one_position(x: Tensor, hook: Any = None) -> Tensor:
    """``unembed.hook_in`` hook of a pass whose logits nobody reads (it is run for its KV cache
    or its hidden states): the model unembeds one position of one row."""
    return x[:1, -1:]


@dataclass
class PromptPrefixes:
    """Shared token prefixes (one row each, right-padded to the longest) and their KV cache,
    computed once by :meth:`compute`; rows continue the prefix ``index`` names."""

    lengths: Int[Tensor, " prefix"]
    cache: Any
    device: torch.device

    @property
    def width(self) -> int:
        """The cache's positions (the longest prefix)."""
        return int(self.lengths.max())

    @classmethod
    def compute(
        cls, model: Any, prefixes: Sequence[Sequence[int]], attention: str = "auto"
    ) -> PromptPrefixes:
        """Run the prefixes in one right-padded pass (no hooks but one that unembeds a single
        position) and keep its cache."""
        dev = model_device(model)
        pad = int(getattr(getattr(model, "tokenizer", None), "pad_token_id", None) or 0)
        toks, real = pad_tokens(prefixes, pad)
        width = toks.shape[1]
        lengths = real.sum(1)
        one = [("unembed.hook_in", keep_one_position)]
        with (
            torch.inference_mode(),
            quiet_cache_rename(),
            efficient_attention(model, attention),
            model.hooks(fwd_hooks=one if "unembed.hook_in" in model.hook_dict else []),
        ):
            _, cache = model(
                toks.to(dev),
                attention_mask=real.long().to(dev),
                position_ids=torch.arange(width, device=dev)[None].expand(len(prefixes), width),
                return_type="logits_and_cache",
                use_cache=True,
            )
        return cls(lengths, cache, dev)

    def inputs(self, index: Int[Tensor, " batch"], real: Bool[Tensor, "batch pos"]) -> dict:
        """A forward's ``past_key_values`` (a copy of the cache, row ``index[i]`` for row ``i``),
        ``attention_mask`` (each row's real prefix positions, the pads of shorter prefixes
        masked, then ``real``: the right-padded remainders' real positions) and
        ``position_ids`` (each remainder continues its own prefix). ``index[i] = -1``: row ``i``
        continues no prefix (its prefix positions are all masked, its own start at 0)."""
        n, w = real.shape
        index = index.cpu()
        cut = torch.where(index >= 0, self.lengths[index.clamp_min(0)], 0)[:, None]
        pmask = torch.arange(self.width)[None] < cut
        cache = copy.deepcopy(self.cache)
        cache.reorder_cache(index.clamp_min(0).to(self.device))
        return {
            "past_key_values": cache,
            "attention_mask": torch.cat([pmask.long(), real.long().cpu()], 1).to(self.device),
            "position_ids": (cut + torch.arange(w)[None]).to(self.device),
        }


def compact_cache(cache: Any, source: Int[Tensor, "batch pos"]) -> bool:
    """Rewrite ``cache`` in place so that position ``j`` of row ``i`` holds what position
    ``source[i, j]`` held: a continuation's cache (prefix positions, masked gaps, the row's
    remainder) becomes the cache a plain left-padded pass would have made, as wide as its
    longest row. Keys are stored after their rotary rotation, so they move unchanged. ``False``
    (the cache untouched) where the cache is not HF's dynamic full / sliding-window layers or a
    sliding layer has already dropped positions; the caller then takes the plain path."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    for layer in layers:
        if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer) or not getattr(
            layer, "is_initialized", False
        ):
            return False
        if isinstance(layer, DynamicSlidingWindowLayer) and (
            layer.keys.shape[-2] != layer.cumulative_length
        ):
            return False

    def move(x: Tensor) -> Tensor:
        at = source.to(x.device)[:, None, :, None]
        return x.gather(2, at.expand(x.shape[0], x.shape[1], source.shape[1], x.shape[3]))

    for layer in layers:
        layer.keys, layer.values = move(layer.keys), move(layer.values)
        if isinstance(layer, DynamicSlidingWindowLayer):
            layer.cumulative_length = source.shape[1]
    return True
