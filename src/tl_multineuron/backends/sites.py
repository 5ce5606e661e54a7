"""Activation sites: which per-block value decides whether a neuron is active.

* ``mlp.hook_post`` (default): the MLP post-activation, the input of ``W_out`` (the paper's
  site; in a gated MLP it is ``act(gate) * up`` and can be negative for a firing neuron);
* ``gate``: ``act(gate pre-activation)`` of a gated MLP, the site the language-neuron
  literature on gated models thresholds (LAPE and its successors). TransformerLens has no hook
  for it, so it is computed from ``mlp.hook_pre`` (the gate pre-activation) with the model's
  own activation function;
* an SAE's feature activations (``hook_resid_post.hook_sae_acts_post`` and the like, with
  SAELens' ``HookedSAETransformer`` and an SAE attached, see :mod:`tl_multineuron.backends.saes`):
  the features are the units, ``d_sae`` of them on each layer that has an SAE at that hook point;
* on mixture-of-experts blocks, the experts themselves (``mlp.hook_expert_weights``: a unit is
  an expert, active when the token is routed to it) or a shared expert's neurons
  (``mlp.shared_expert.hook_post``); neuron sites are refused there (see
  :mod:`tl_multineuron.backends.experts`);
* any other per-block hook suffix with a d_mlp-wide activation.

Interventions edit a neuron's output (``mlp.hook_post``) for the MLP sites and the feature
activation (``…hook_sae_acts_post``) for SAE sites (:func:`edit_hook`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..errors import MultiNeuronError
from .experts import (
    SHARED_EXPERT_SITE,
    check_expert_layers,
    is_expert_site,
    is_moe_site,
    moe_layers,
    n_experts,
    shared_expert_width,
)

GATE = "gate"
GATE_PRE_HOOK = "mlp.hook_pre"
NEURON_EDIT_HOOK = "mlp.hook_post"
SAE_FEATURE_HOOKS = ("hook_sae_acts_post", "hook_sae_acts_pre")


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


def is_feature_site(hook: str) -> bool:
    """Whether ``hook`` reads an attached SAE's feature activations."""
    return hook.rsplit(".", 1)[-1] in SAE_FEATURE_HOOKS


def edit_hook(hook: str) -> str:
    """The hook an intervention on the units of site ``hook`` edits."""
    if is_feature_site(hook):
        return f"{hook.rsplit('.', 1)[0]}.hook_sae_acts_post"
    if is_moe_site(hook):
        return hook  # routing weights / the shared expert's neurons, where they are read
    return NEURON_EDIT_HOOK


def has_layer_subset(hook: str) -> bool:
    """Whether the site lives on some layers only (SAE features, experts), so that results
    carry their layers."""
    return is_feature_site(hook) or is_moe_site(hook)


def site_layers(model: Any, hook: str) -> list[int]:
    """The default layers of site ``hook``: those carrying it (SAE sites, MoE blocks), else
    every block."""
    if is_feature_site(hook):
        return feature_site_layers(model, hook)
    if is_moe_site(hook):
        layers = moe_layers(model)
        if not layers:
            raise MultiNeuronError(
                f"site {hook!r} needs mixture-of-experts blocks; this model has none "
                "(use mlp.hook_post for its MLP neurons)"
            )
        return layers
    return list(range(model.cfg.n_layers))


def attached_sae(model: Any, layer: int, hook: str) -> Any:
    """The SAE whose features site ``hook`` reads on ``layer``; an error when none is."""
    point = f"blocks.{layer}.{hook.rsplit('.', 1)[0]}"
    saes = getattr(model, "acts_to_saes", None)
    if saes is None:
        raise MultiNeuronError(
            f"site {hook!r} reads SAE features, but the model ({type(model).__name__}) carries "
            "no SAEs: use SAELens' HookedSAETransformer and attach one "
            "(tl_multineuron.backends.saes.attach_sae)"
        )
    sae = saes.get(point)
    if sae is None:
        raise MultiNeuronError(
            f"no SAE is attached at {point!r}; SAEs are attached at {sorted(saes) or 'none'}"
        )
    return sae


def feature_site_layers(model: Any, hook: str) -> list[int]:
    """The layers whose hook point carries the SAE site ``hook`` (the default layers of a
    feature site)."""
    names = getattr(model, "hook_dict", {}) or {}
    layers = [x for x in range(model.cfg.n_layers) if f"blocks.{x}.{hook}" in names]
    if not layers:
        attached = sorted(getattr(model, "acts_to_saes", None) or {})
        raise MultiNeuronError(
            f"no layer has the SAE site 'blocks.<layer>.{hook}': SAEs are attached at "
            f"{attached or 'none'} (attach one with tl_multineuron.backends.saes.attach_sae)"
        )
    return layers


def site_width(model: Any, hook: str, layers: list[int]) -> int:
    """How many units the site has per layer: ``d_mlp`` for MLP sites, the SAEs' ``d_sae``
    for a feature site (one width for all recorded layers)."""
    if is_expert_site(hook):
        check_expert_layers(model, layers)
        return n_experts(model)
    if hook == SHARED_EXPERT_SITE:
        widths = {x: shared_expert_width(model, x) for x in layers}
    elif not is_feature_site(hook):
        return int(model.cfg.d_mlp)
    else:
        widths = {x: int(attached_sae(model, x, hook).cfg.d_sae) for x in layers}
    if len(set(widths.values())) > 1:
        raise MultiNeuronError(
            f"the SAEs at site {hook!r} have different widths per layer {widths}: record "
            "layers of one width together (layers=...)"
        )
    return next(iter(widths.values()))
