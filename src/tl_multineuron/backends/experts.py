"""Mixture-of-experts blocks: which units exist there, and refusing the ones that do not.

TransformerLens wraps a sparse MoE block (Mixtral, Qwen-MoE, OLMoE, GPT-OSS, ...) in one
``MoEBridge``: ``blocks.{l}.mlp.hook_post`` is the *block's output in the residual space*
(``d_model`` wide), not any expert's neurons, and no hook reads an expert's hidden units. A
neuron site there would report hidden-state dimensions as "neurons" -- silently so where the
expert width equals ``d_model`` (GPT-OSS). So:

* neuron sites (``mlp.hook_post``, ``mlp.hook_pre``, ``gate``) on a MoE layer are refused by
  :func:`check_neuron_site`, naming the sites that do exist;
* **experts are units** (:data:`EXPERT_SITE`): TL's router hook
  ``blocks.{l}.mlp.hook_expert_weights`` carries every token's routing weight per expert
  (``[tokens, n_experts]``, 0 for an expert the token is not routed to). An expert is *active*
  for a prompt at the threshold 0 exactly when the token is routed to it, so all-shared /
  specific / non-activated experts come from the same statistics and categories as neurons.
  Deactivating an expert sets its routing weight to 0 (its output is dropped for that token,
  the other experts' weights are kept, nothing is renormalised); amplifying scales the weight;
* the **shared expert's neurons** where a family has one (Qwen-MoE:
  ``mlp.shared_expert.hook_post``, the input of the shared expert's down-projection) are an
  ordinary neuron site (:data:`SHARED_EXPERT_SITE`).

Per-expert neurons are not offered: TL exposes no hook for them, so they cannot be recorded
exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import MultiNeuronError
from .tl_compat import model_label, text_config

#: experts as units: the router's per-expert routing weights (0 = not routed)
EXPERT_SITE = "mlp.hook_expert_weights"
#: the shared expert's neurons (Qwen-MoE): the input of its down-projection
SHARED_EXPERT_SITE = "mlp.shared_expert.hook_post"
#: per-block hooks that mean a dense MLP's neurons
NEURON_SITE_HOOKS = ("mlp.hook_post", "mlp.hook_pre", "mlp.hook_pre_linear")
_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


#: TL's MoE components: the bridge's (4.x) and HookedTransformer's (3.x)
_MOE_CLASSES = ("MoEBridge", "MoE", "GptOssMoE")


def _is_moe(mlp: Any) -> bool:
    return any(c.__name__ in _MOE_CLASSES for c in type(mlp).__mro__)


def _is_bridged_moe(mlp: Any) -> bool:
    return any(c.__name__ == "MoEBridge" for c in type(mlp).__mro__)


def moe_layers(model: Any) -> list[int]:
    """The blocks whose MLP is a mixture of experts (TL's ``MoEBridge``, or a
    HookedTransformer's ``MoE``)."""
    blocks = getattr(model, "blocks", None) or []
    return [i for i, b in enumerate(blocks) if _is_moe(getattr(b, "mlp", None))]


def is_expert_site(hook: str) -> bool:
    """Whether ``hook`` is the experts-as-units site."""
    return hook == EXPERT_SITE


def is_moe_site(hook: str) -> bool:
    """Whether ``hook`` is a site of MoE blocks (the experts, or a shared expert's neurons):
    it lives on the MoE layers only, and its activations come as ``[batch * pos, units]``
    (HF's MoE blocks run the router and the shared expert on the flattened tokens)."""
    return hook in (EXPERT_SITE, SHARED_EXPERT_SITE)


def has_shared_expert(model: Any) -> bool:
    """Whether the model's MoE blocks carry a shared expert with a neuron hook."""
    names = getattr(model, "hook_dict", {}) or {}
    return any(f"blocks.{x}.{SHARED_EXPERT_SITE}" in names for x in moe_layers(model))


def n_experts(model: Any) -> int:
    """Routed experts per MoE block, from the model's config."""
    for cfg in (text_config(model), getattr(model, "cfg", None)):
        for key in _EXPERT_COUNT_KEYS:
            v = getattr(cfg, key, None) if cfg is not None else None
            if isinstance(v, int) and v > 0:
                return v
    raise MultiNeuronError(
        f"{model_label(model)}: cannot read how many experts each MoE block routes to "
        f"(none of {_EXPERT_COUNT_KEYS} in its config)"
    )


def shared_expert_width(model: Any, layer: int) -> int:
    """Neurons of the shared expert of ``layer`` (the in-features of its down-projection)."""
    try:
        shared = model.blocks[layer].mlp.shared_expert
        orig = getattr(shared, "original_component", None) or shared
        down = getattr(orig, "down_proj", None)
        return int(getattr(down, "in_features", None) or down.weight.shape[1])
    except (AttributeError, IndexError, TypeError) as e:
        raise MultiNeuronError(
            f"{model_label(model)}: block {layer} has no shared expert with a down-projection "
            f"({e}); the site {SHARED_EXPERT_SITE!r} exists only on families with one (Qwen-MoE)"
        ) from e


def alternatives(model: Any) -> str:
    """The sites that do exist on a MoE model, for error messages."""
    out = f"experts as units: hook={EXPERT_SITE!r} (active = routed)"
    if has_shared_expert(model):
        out += f", or the shared expert's neurons: hook={SHARED_EXPERT_SITE!r}"
    return out


def check_neuron_site(model: Any, hook: str, layers: Sequence[int] | None = None) -> None:
    """Refuse a dense-neuron site on a mixture-of-experts layer (see the module docstring)."""
    if hook not in (*NEURON_SITE_HOOKS, "gate"):
        return
    moe = moe_layers(model)
    if not moe:
        return
    hit = sorted(set(moe) & set(range(model.cfg.n_layers) if layers is None else layers))
    if not hit:
        return
    raise MultiNeuronError(
        f"{model_label(model)}: layers {hit[:8]}{'...' if len(hit) > 8 else ''} are "
        f"mixture-of-experts blocks; TransformerLens exposes no per-neuron hook there "
        f"(blocks.<layer>.mlp.hook_post is the block's output in the residual space, "
        f"d_model={model.cfg.d_model} wide), so the neuron site {hook!r} cannot be read or "
        f"edited. Use {alternatives(model)}."
    )


def check_expert_layers(model: Any, layers: Sequence[int]) -> None:
    """The expert site exists only on MoE layers, and only under the bridge: TL 3.x's
    ``hook_expert_weights`` carries the softmax over *all* experts before the top-k (every
    expert > 0), which would make every expert "active"."""
    blocks = getattr(model, "blocks", None) or []
    unbridged = [x for x in layers if x < len(blocks) and not _is_bridged_moe(blocks[x].mlp)]
    if unbridged and set(unbridged) <= set(moe_layers(model)):
        raise MultiNeuronError(
            f"{model_label(model)}: the expert site {EXPERT_SITE!r} needs TransformerLens 4.x's "
            "bridge, whose router hook carries routing weights (0 = not routed); TL 3.x's "
            "carries the softmax before the top-k, in which every expert is > 0"
        )
    dense = sorted(set(layers) - set(moe_layers(model)))
    if dense:
        raise MultiNeuronError(
            f"{model_label(model)}: layers {dense[:8]} have no experts; the site "
            f"{EXPERT_SITE!r} exists on the MoE layers {moe_layers(model)[:8] or 'none'}"
        )
