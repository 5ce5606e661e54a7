"""Edits that share one prompt-prefix KV cache without copying it.

The scorer's cached path runs every prompt minus its last token once and then, per edit, only
the suffix (the last prompt token and the answer positions). Tiled as ``C x n`` rows, ``C``
edits need ``C`` copies of the prefix cache, and attention reads every copy: on a CPU that
pass is memory-bound (nli's one-position suffixes: ~10x their FLOPs). Folded, the ``C``
suffixes of a row become ``C x S`` positions of that one row: each attends to the row's
prefix and to the earlier positions of its own suffix only (a block-diagonal additive 4D mask)
at the same position ids, so every edit's logits are those of a pass of its own, while the
prefix is read once. The pass extends its cache, so each pass takes one copy of the prefix cache
(``n`` rows, not ``C x n``).

A model folds when a probe (once per model) finds a folded pass equal to tiled passes, and a
block folds when no query can reach past a sliding attention window (a custom mask replaces
the model's own window). The scorer folds only one-position suffixes (1-token answers), where
folding was measured to win; longer suffixes are tiled.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..backends.cache_probes import once_per_model
from ..backends.devices import model_device
from ..backends.tl_compat import quiet_cache_rename
from ..sharing.recording import get_tokenizer

_FOLD_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fold_mask(
    attention_mask: Int[Tensor, "n k"], S: int, C: int, dtype: torch.dtype
) -> Float[Tensor, "n 1 q kk"]:
    """The additive mask of ``C`` folded suffixes of length ``S``: ``attention_mask`` is the
    tiled pass's 2D mask ``[n, P + S]`` (prefix, then suffix); query ``c * S + s`` sees the
    real prefix positions and the real positions ``c * S + s'``, ``s' <= s``."""
    n, K = attention_mask.shape
    P = K - S
    prefix, suffix = attention_mask[:, :P].bool(), attention_mask[:, P:].bool()
    c = torch.arange(C, device=attention_mask.device).repeat_interleave(S)
    s = torch.arange(S, device=attention_mask.device).repeat(C)
    own = (c[:, None] == c[None, :]) & (s[None, :] <= s[:, None])  # [C*S, C*S]
    own = own[None] & suffix.repeat(1, C)[:, None, :]
    allow = torch.cat([prefix[:, None, :].expand(n, C * S, P), own], -1)
    out = torch.zeros(allow.shape, dtype=dtype, device=attention_mask.device)
    return out.masked_fill_(~allow, torch.finfo(dtype).min)[:, None]


def folds(model: Any) -> bool:
    """Whether ``model`` runs folded suffixes exactly (probed once per model: a 2-token prefix
    and two 2-token suffixes, folded vs tiled, logits within 1e-4 of each other)."""
    return once_per_model(_FOLD_OK, model, _probe)


def _probe(model: Any) -> bool:
    dev = model_device(model)
    bos = get_tokenizer(model).bos_token_id or 0
    prefix = torch.tensor([[bos, 5]], device=dev)
    suffix = torch.tensor([[7, 8], [9, 10]], device=dev)  # two edits' suffixes (here: tokens)
    ones = torch.ones(1, 4, dtype=torch.long, device=dev)
    pos = torch.tensor([[2, 3]], device=dev)
    dtype = getattr(model.cfg, "dtype", torch.float32)
    try:
        with torch.inference_mode(), quiet_cache_rename():
            _, cache = model(prefix, return_type="logits_and_cache", use_cache=True)
            tiled = []
            for k in range(2):
                kv = copy.deepcopy(cache)
                tiled.append(model(suffix[k : k + 1], attention_mask=ones, position_ids=pos,
                                   past_key_values=kv)[0])  # fmt: skip
            folded = model(
                suffix.reshape(1, 4),
                attention_mask=fold_mask(ones, 2, 2, dtype),
                position_ids=pos.repeat(1, 2),
                past_key_values=cache,
            )[0]
    except (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError):
        return False
    want = torch.cat(tiled, 0)
    return bool(torch.allclose(folded.float(), want.float(), atol=1e-4, rtol=1e-4))
