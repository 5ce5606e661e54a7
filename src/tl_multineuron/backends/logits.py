"""What stands between the unembedding and a model's output logits, and between an MLP's output
and the residual stream: the model's own transforms, read from TransformerLens.

* **Output-logit transform.** Some families scale the unembedded logits (Granite divides by
  ``logits_scaling``, Cohere multiplies by ``logit_scale``) or soft-cap them (Gemma 2). A
  ``TransformerBridge``'s forward applies its adapter's ``apply_output_logits_transform``, but
  ``model.unembed(h)`` does not: everything here that unembeds a hidden state (the one-pass
  scorer) goes through :func:`output_logits`. On a ``HookedTransformer`` the transform is the
  config's ``output_logits_soft_cap``.
* **Its slope.** Direct effects (effective scores) are linear in the hidden state; they carry
  the transform's linear factor (:func:`logit_slope`, probed at 0, where a soft-cap has slope 1:
  scores are direct effects on the logit before the cap). A transform that is not linear near 0
  is refused rather than guessed at.
* **Residual multiplier.** Granite adds each sublayer's output times ``residual_multiplier``;
  TL's ``ScaledResidualBlockBridge`` declares it (:func:`mlp_residual_scales`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import MultiNeuronError
from .tl_compat import is_bridge, model_label


def logit_transform(model: Any) -> Callable[[Tensor], Tensor] | None:
    """The model's transform from unembedded to output logits (``None``: the identity)."""
    if is_bridge(model):
        fn = getattr(getattr(model, "adapter", None), "apply_output_logits_transform", None)
        if callable(fn):
            return fn
        return None
    cap = getattr(getattr(model, "cfg", None), "output_logits_soft_cap", None)
    if isinstance(cap, int | float) and cap > 0:
        c = float(cap)
        return lambda z: torch.tanh(z / c) * c
    return None


def output_width(model: Any) -> int:
    """How many tokens the model can output: the width of ``W_U`` (else the config's
    ``d_vocab_out``, else ``d_vocab``)."""
    W = getattr(model, "W_U", None)
    if isinstance(W, Tensor) and W.ndim == 2:
        return int(W.shape[1])
    vocab = int(getattr(model.cfg, "d_vocab_out", -1) or -1)
    return vocab if vocab > 0 else int(model.cfg.d_vocab)


def output_logits(model: Any, h: Float[Tensor, "batch pos d_model"]) -> Tensor:
    """The model's output logits for final hidden states ``h`` (the input of ``unembed``):
    ``unembed`` followed by the model's own output transform, as its forward computes them."""
    z = model.unembed(h)
    fn = logit_transform(model)
    return z if fn is None else fn(z)


def logit_slope(model: Any) -> float:
    """The linear factor of the output transform at 0 (1.0 for none or a soft-cap): what a
    direct effect on the unembedded logit is multiplied by to be one on the output logit. A
    transform that is not linear near 0 is an error naming the model."""
    fn = logit_transform(model)
    if fn is None:
        return 1.0
    z = torch.tensor([[[1e-3, -2e-3, 4e-3]]], dtype=torch.float64)
    try:
        y1, y2 = fn(z.clone()).double(), fn(2 * z).double()
    except Exception as e:  # noqa: BLE001 - any failure means we cannot read the transform
        raise MultiNeuronError(
            f"cannot read the output-logit transform of {model_label(model)}: {e}"
        ) from e
    slope = y1 / z
    if not (
        torch.allclose(slope, slope[..., :1].expand_as(slope), rtol=1e-5)
        and torch.allclose(y2, 2 * y1, rtol=1e-5)
    ):
        raise MultiNeuronError(
            f"the output-logit transform of {model_label(model)} is not a scale near 0 "
            f"(f(z)/z = {slope.flatten().tolist()}): direct effects on its logits cannot be "
            "computed; refusing to guess"
        )
    return float(slope.flatten()[0])


def mlp_residual_scales(model: Any) -> Float[Tensor, " layer"]:
    """Per layer, the factor by which the block multiplies its MLP's output before adding it
    to the residual stream (Granite's ``residual_multiplier``; 1 elsewhere)."""
    out = []
    for block in getattr(model, "blocks", []):
        s = getattr(block, "residual_contribution_scale", 1.0)
        if getattr(block, "scaled_mlp_submodule", "mlp") is None:
            s = 1.0
        out.append(float(s))
    return torch.tensor(out, dtype=torch.float32)
