"""What a model's forward can do, probed once per model: whether it returns a HF KV cache
that a later call continues exactly (the scorer's prefix cache)."""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from .devices import model_device
from .tl_compat import align_cache_kwarg, hf_model, is_bridge, quiet_cache_rename
from .versions import stack_text

T = TypeVar("T")


def once_per_model(table: weakref.WeakKeyDictionary, model: Any, probe: Callable[[Any], T]) -> T:
    """``probe(model)``, kept in ``table`` for the model's lifetime (models that cannot be
    weakly referenced are probed every time)."""
    try:
        known = table.get(model)
    except TypeError:
        known = None
    if known is None:
        known = probe(model)
        with contextlib.suppress(TypeError):
            table[model] = known
    return known


_CACHE_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prefix_cache_status(model: Any) -> tuple[bool, str]:
    """Whether ``model(..., return_type='logits_and_cache', use_cache=True)`` returns a HF
    cache that a later call continues, and if not, why (checked once per model on a 3-token
    input: the cache must hold the prefix and the continuation must equal a full pass)."""
    return once_per_model(_CACHE_OK, model, _status)


def _status(model: Any) -> tuple[bool, str]:
    if is_bridge(model):
        return _probe_prefix_cache(model)
    # HookedTransformer: TL's own cache, not a HF one
    return (False, f"the forward of a {type(model).__name__} returns no HF cache")


def _probe_prefix_cache(model: Any) -> tuple[bool, str]:
    """Run a bridge's cached forward on a 3-token input (see :func:`prefix_cache_status`)."""
    align_cache_kwarg(model)
    dev = model_device(model)
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    toks = torch.tensor([[bos or 0, 5, 6]], device=dev)
    try:
        with torch.inference_mode(), quiet_cache_rename():
            out = model(toks[:, :2], return_type="logits_and_cache", use_cache=True)
            cache = out[1] if isinstance(out, tuple) else None
            if cache is None or not hasattr(cache, "reorder_cache"):
                return (False, f"the forward of this {type(model).__name__} returns no HF cache")
            if hasattr(cache, "get_seq_length") and cache.get_seq_length() != 2:
                return (
                    False,
                    f"the cache holds {cache.get_seq_length()} positions after a 2-token "
                    "prefix: the attention layers do not extend it",
                )
            step = model(toks[:, 2:], past_key_values=cache)
            full = model(toks)
    except (TypeError, ValueError, RuntimeError, NotImplementedError, AttributeError) as e:
        return (False, f"the cached forward fails: {type(e).__name__}: {e}")
    diff = float((step[0, -1] - full[0, -1]).abs().max())
    ok = bool(torch.allclose(step[0, -1], full[0, -1], atol=1e-3, rtol=1e-3))
    return (ok, "" if ok else f"a cached continuation differs by {diff:.3g} logits")


def supports_prefix_cache(model: Any) -> bool:
    """Whether the one-pass scorer can run a prompt prefix once and continue it
    (:func:`prefix_cache_status` says why not)."""
    return prefix_cache_status(model)[0]


def warn_full_pass(model: Any, rows: Any, reason: str) -> None:
    """A model that wraps a HF model was built for the prefix cache: running without it is
    slow, and says so, with the cause and the expected slowdown on these rows."""
    from transformers import PreTrainedModel

    if not isinstance(hf_model(model), PreTrainedModel):
        return  # a native model or a HookedTransformer: full passes are its only path
    full = sum(len(p) + len(a) - 1 for p, a in zip(rows.prompts, rows.answers, strict=True))
    cached = sum(len(a) for a in rows.answers)
    versions = stack_text()
    warnings.warn(
        f"one-pass scoring runs without its prefix cache ({reason}; {versions}): every edit "
        f"recomputes whole prompts, {full / cached:.1f}x the positions of the cached path on "
        f"these {len(rows)} rows. Install the tested versions (scripts/bootstrap.sh, "
        "src/tl_multineuron/requirements) to get it back.",
        RuntimeWarning,
        stacklevel=3,
    )
