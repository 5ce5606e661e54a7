"""Memory-efficient attention for passes whose hooks never look inside attention.

TransformerLens' ``TransformerBridge`` re-implements attention so that ``hook_attn_scores`` and
``hook_pattern`` can fire; that materializes ``[batch, head, pos, pos]`` float scores several
times per layer, so memory grows with the square of the prompt length. Recording MLP neurons
needs none of it. :func:`efficient_attention` temporarily routes every attention component of a
HF-backed bridge through the HF module's own forward with PyTorch's
``scaled_dot_product_attention`` (``attn_implementation="sdpa"``); MLP activations agree with the
eager path to float rounding (tested on the embedded model, categories identical).

It falls back to eager (and says so through :func:`attention_implementation`) where it cannot
apply: a native TransformerLens model, a model without HF attention modules, a model whose
attention SDPA cannot compute (an attention-logit soft-cap, as Gemma 2 checkpoints carry), or a
pass in which a hook is registered on an attention-internal hook point (patterns, scores,
rotated q/k), which the HF forward would not fire.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from ..errors import MultiNeuronError
from .tl_compat import bridge_attention_modules, hf_config, model_label

ATTENTION_MODES = ("auto", "eager", "sdpa")
# hook points that only the bridge's re-implemented attention fires
_INTERNAL = ("hook_attn_scores", "hook_pattern", "hook_rot_q", "hook_rot_k")
# the implementation of the efficient_attention block each model (by id) is inside, if any
_ACTIVE: dict[int, str] = {}


def _hf_config(model: Any) -> Any:
    cfg = hf_config(model)
    return cfg if cfg is not None and hasattr(cfg, "_attn_implementation") else None


def _hf_attention(bridge: Any) -> Any:
    orig = bridge._modules.get("_original_component")
    cfg = getattr(orig, "config", None)
    return orig if cfg is not None and hasattr(cfg, "_attn_implementation") else None


def _internal_hooks_in_use(bridges: list[Any]) -> bool:
    for b in bridges:
        for name in _INTERNAL:
            hp = b._modules.get(name)
            if hp is not None and (hp._forward_hooks or hp._forward_pre_hooks):
                return True
    return False


def sdpa_unsupported(model: Any) -> str | None:
    """Why the model's own attention cannot run as SDPA (``None`` where it can): a soft-cap on
    the attention logits (``attn_logit_softcapping``, Gemma 2) or sink logits (GPT-OSS) act
    between ``q k^T`` and the softmax, where ``scaled_dot_product_attention`` has no place for
    them (measured: GPT-OSS routing weights off by 2e-3 under SDPA)."""
    cfg = _hf_config(model)
    cfg = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    cap = getattr(cfg, "attn_logit_softcapping", None) if cfg is not None else None
    if cap:
        return f"its attention logits are soft-capped (attn_logit_softcapping={cap})"
    for b in bridge_attention_modules(model):
        hf_attn = _hf_attention(b)
        if hf_attn is not None and getattr(hf_attn, "sinks", None) is not None:
            # GPT-OSS: a learned sink logit per head joins the softmax; SDPA drops it
            return "its attention has sink logits (GPT-OSS), which SDPA leaves out"
    return None


def sdpa_available(model: Any) -> bool:
    """Whether :func:`efficient_attention` can switch ``model`` to SDPA."""
    bridges = bridge_attention_modules(model)
    return (
        bool(bridges)
        and _hf_config(model) is not None
        and all(_hf_attention(b) is not None for b in bridges)
        and sdpa_unsupported(model) is None
    )


def _check_mode(mode: str) -> None:
    if mode not in ATTENTION_MODES:
        raise MultiNeuronError(f"attention {mode!r}; expected one of {ATTENTION_MODES}")


def attention_implementation(model: Any, mode: str = "auto") -> str:
    """``"sdpa"`` or ``"eager"``: what a pass under ``efficient_attention(model, mode)`` runs."""
    _check_mode(mode)
    if mode == "eager" or not sdpa_available(model):
        if mode == "sdpa":
            why = sdpa_unsupported(model) if _hf_config(model) is not None else None
            raise MultiNeuronError(
                f"attention 'sdpa' is not available for {model_label(model)}: "
                + (
                    f"{why}; use attention='eager' (or 'auto', which picks it)"
                    if why
                    else "no HF attention modules (native TransformerLens models run eager "
                    "attention)"
                )
            )
        return "eager"
    if _internal_hooks_in_use(bridge_attention_modules(model)):
        if mode == "sdpa":
            raise MultiNeuronError(
                "attention 'sdpa' was asked for, but a hook is registered on an attention "
                f"pattern/score hook point ({', '.join(_INTERNAL)}), which SDPA never computes"
            )
        return "eager"
    return "sdpa"


def _sdpa_forward(bridge: Any, hf_attn: Any):
    forward = type(hf_attn).forward
    # transformers >= 5.24 names the KV cache ``cache`` (the bridge reads ``past_key_values``,
    # see tl_compat.align_cache_kwarg): hand it back under the name the HF module takes
    takes_cache = "cache" in inspect.signature(forward).parameters

    def run(*args: Any, **kwargs: Any) -> Any:
        if "hidden_states" in kwargs:
            hidden = kwargs.pop("hidden_states")
        else:
            hidden, args = args[0], args[1:]
        if takes_cache and "past_key_values" in kwargs and "cache" not in kwargs:
            kwargs["cache"] = kwargs.pop("past_key_values")
        out, weights = forward(hf_attn, bridge.hook_in(hidden), *args, **kwargs)
        return bridge.hook_out(out), weights

    return run


@contextlib.contextmanager
def efficient_attention(model: Any, mode: str = "auto") -> Iterator[str]:
    """Run attention through SDPA inside the block (where possible); yields the implementation
    used, ``"sdpa"`` or ``"eager"``. Everything is restored on exit, also after an exception.
    Re-entrant: inside another such block on the same model, the outer block's implementation
    stays and is yielded (an inner ``"sdpa"`` under an outer eager block is an error)."""
    outer = _ACTIVE.get(id(model))
    if outer is not None:
        _check_mode(mode)
        if mode == "sdpa" and outer == "eager":
            raise MultiNeuronError(
                "attention 'sdpa' was asked for inside a block that runs eager attention"
            )
        yield outer
        return
    impl = attention_implementation(model, mode)
    cfg = _hf_config(model) if impl == "sdpa" else None
    old = cfg._attn_implementation if cfg is not None else None
    patched: list[Any] = []
    _ACTIVE[id(model)] = impl
    try:
        if cfg is not None:
            for b in bridge_attention_modules(model):
                # object.__setattr__: the bridge forwards plain attribute writes to the HF module
                object.__setattr__(b, "forward", _sdpa_forward(b, _hf_attention(b)))
                patched.append(b)
            cfg._attn_implementation = "sdpa"
        yield impl
    finally:
        _ACTIVE.pop(id(model), None)
        if cfg is not None:
            cfg._attn_implementation = old
        for b in patched:
            object.__delattr__(b, "forward")
