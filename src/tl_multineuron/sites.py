"""Activation sites: which per-block value decides whether a neuron is active.

* ``mlp.hook_post`` (default): the MLP post-activation, the input of ``W_out`` (the paper's
  site; in a gated MLP it is ``act(gate) * up`` and can be negative for a firing neuron);
* ``gate``: ``act(gate pre-activation)`` of a gated MLP, the site the language-neuron
  literature on gated models thresholds (LAPE and its successors). TransformerLens has no hook
  for it, so it is computed from ``mlp.hook_pre`` (the gate pre-activation) with the model's
  own activation function;
* any other per-block hook suffix with a d_mlp-wide activation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from .errors import MultiNeuronError

GATE = "gate"
GATE_PRE_HOOK = "mlp.hook_pre"


def site_hook(hook: str) -> str:
    """The TransformerLens hook suffix a site reads."""
    return GATE_PRE_HOOK if hook == GATE else hook


def site_label(hook: str) -> str:
    """How the site is named in results: ``blocks.{layer}.mlp.hook_post`` or
    ``act(blocks.{layer}.mlp.hook_pre)`` for the gate."""
    return f"act(blocks.{{layer}}.{GATE_PRE_HOOK})" if hook == GATE else f"blocks.{{layer}}.{hook}"


def gate_activation(model: Any, layer: int) -> Callable[[Tensor], Tensor]:
    """The activation function the MLP of ``layer`` applies to its gate pre-activation; an
    error for a non-gated MLP."""
    if not getattr(model.cfg, "gated_mlp", False):
        raise MultiNeuronError(
            "the 'gate' site needs a gated MLP (act(gate) * up); this model's MLP is not gated "
            f"(cfg.gated_mlp={getattr(model.cfg, 'gated_mlp', None)!r}, act_fn "
            f"{getattr(model.cfg, 'act_fn', None)!r}): use --hook mlp.hook_post"
        )
    try:
        mlp = model.blocks[layer].mlp
    except (AttributeError, IndexError, TypeError) as e:
        raise MultiNeuronError(f"cannot reach the MLP of layer {layer}: {e}") from e
    for owner in (getattr(mlp, "_original_component", None), mlp):
        for name in ("act_fn", "act"):
            fn = getattr(owner, name, None)
            if callable(fn):
                return fn
    raise MultiNeuronError(
        f"the MLP of layer {layer} ({type(mlp).__name__}) exposes no activation function "
        "(act_fn / act): the 'gate' site cannot be computed"
    )


def site_transforms(model: Any, hook: str, layers: list[int]) -> list[Callable] | None:
    """Per-layer functions turning the hook's value into the site's value (``None``: as is)."""
    if hook != GATE:
        return None
    return [gate_activation(model, x) for x in layers]
