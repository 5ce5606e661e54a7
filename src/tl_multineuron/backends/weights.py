"""Per-model weight quantities for attribution, read once from the unprocessed model.

TransformerLens' compatibility mode folds and centres weights, which changes ``W_out`` row
norms and ``W_U``; these are read from the model as loaded (no processing), and a test checks
them against the raw HF weights. Processing found on a user's model is named in
``norms.processing`` (and so in every attribution result's metadata).

With the norms in the path (:mod:`tl_multineuron.backends.norms`), a neuron's write to the residual
stream is ``a_i * W_write[l, i] / s_post`` with ``W_write = gain_post * centre?(W_out)`` and
``s_post`` the post-MLP norm's scale at the position, and its direct effect on the logit of
``t`` is that write dotted with ``u_t / s_final``, ``u_t`` the unembedding column seen through
the final norm. Without norms, ``W_write == W_out`` and ``u_t == W_U[:, t]``.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from .experts import check_neuron_site
from .logits import logit_slope, mlp_residual_scales
from .norms import NormPath, norm_path


@dataclass(frozen=True)
class ModelWeights:
    """``W_out`` [layer, d_mlp, d_model], ``W_U`` [d_model, vocab], ``W_out`` row norms, the
    input embedding when the model ties it to the unembedding, and (when read from a model)
    the norms in the path with the rows as they reach the residual stream (``W_write``)."""

    W_out: Float[Tensor, "layer d_mlp d_model"]
    W_U: Float[Tensor, "d_model vocab"]
    out_norms: Float[Tensor, "layer d_mlp"]
    W_E: Float[Tensor, "vocab d_model"] | None
    tied: bool
    norms: NormPath | None = None
    W_write: Float[Tensor, "layer d_mlp d_model"] | None = None
    b_out: Float[Tensor, "layer d_model"] | None = None
    W_write_norms: Float[Tensor, "layer d_mlp"] | None = None  # filled from W_write
    #: the output-logit transform's linear factor (Granite 1/logits_scaling, Cohere logit_scale)
    logit_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.W_write is not None and self.W_write_norms is None:
            object.__setattr__(self, "W_write_norms", self.W_write.norm(dim=-1))

    @property
    def write(self) -> Float[Tensor, "layer d_mlp d_model"]:
        """Neuron rows as they reach the residual stream, before the post-MLP norm's scale."""
        return self.W_out if self.W_write is None else self.W_write

    @property
    def write_norms(self) -> Float[Tensor, "layer d_mlp"]:
        return self.out_norms if self.W_write_norms is None else self.W_write_norms

    @property
    def has_post_norm(self) -> bool:
        return self.norms is not None and self.norms.post_mlp is not None

    @property
    def has_final_norm(self) -> bool:
        return self.norms is not None and self.norms.final.kind != "none"

    def post_scale(
        self, acts: Float[Tensor, "*batch layer d_mlp"], layers: list[int] | None = None
    ) -> Float[Tensor, "*batch layer"]:
        """The post-MLP norm's scale per position and layer, from the layers' own neuron
        activations (``h = a @ W_out + b_out``, the norm's input); ones without such a norm."""
        if not self.has_post_norm:
            return torch.ones(acts.shape[:-1], dtype=acts.dtype, device=acts.device)
        idx = list(range(self.W_out.shape[0])) if layers is None else list(layers)
        # in the weights' dtype (no float64 copy of W_out); the scale itself in float64
        W = self.W_out[idx].to(acts.device)
        h = torch.einsum("...ln,lnd->...ld", acts.to(W.dtype), W).double()
        if self.b_out is not None:
            h = h + self.b_out[idx].to(h.device, h.dtype)
        specs = [self.norms.post_mlp[x] for x in idx]
        out = torch.stack([s.scale(h[..., j, :]) for j, s in enumerate(specs)], dim=-1)
        return out.to(acts.dtype)

    def answer_directions(
        self, tokens: Int[Tensor, " batch"], use_embedding: bool = False
    ) -> Float[Tensor, "batch d_model"]:
        """``W_U[:, t]`` per token (or the tied input embedding ``W_E[t]``)."""
        if use_embedding:
            if not self.tied or self.W_E is None:
                raise MultiNeuronError(
                    "use_embedding=True needs a model whose input embedding is tied to the "
                    "unembedding; this model's W_E and W_U differ"
                )
            return self.W_E[tokens.to(self.W_E.device)]
        return self.W_U[:, tokens.to(self.W_U.device)].T

    def read_directions(
        self, tokens: Int[Tensor, " batch"], use_embedding: bool = False
    ) -> Float[Tensor, "batch d_model"]:
        """The answer directions seen through the final norm's gain (and centring), before
        its scale: ``v . read_directions(t) / s_final`` is ``v``'s direct effect on the logit."""
        u = self.answer_directions(tokens, use_embedding)
        if self.logit_scale != 1.0:
            u = u * self.logit_scale
        return self.norms.final.adjoint(u) if self.has_final_norm else u


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_weights(model: Any) -> ModelWeights:
    """The model's attribution weights (computed once per model object)."""
    try:
        cached = _CACHE.get(model)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    check_neuron_site(model, "mlp.hook_post")  # a MoE block has no neuron rows to read
    try:
        W_out = model.W_out.detach()
    except Exception as e:
        raise MultiNeuronError(f"cannot read W_out from the model: {e}") from e
    try:
        W_U = model.W_U.detach()
    except Exception as e:
        raise MultiNeuronError(f"cannot read the unembedding W_U from the model: {e}") from e
    if W_U.ndim != 2 or W_U.shape[0] != W_out.shape[-1]:
        raise MultiNeuronError(
            f"unembedding W_U has shape {tuple(W_U.shape)}; expected [d_model={W_out.shape[-1]}, "
            "vocab]"
        )
    try:
        W_E = model.W_E.detach()
    except Exception:
        W_E = None
    tied = W_E is not None and W_E.shape == W_U.T.shape and torch.equal(W_E, W_U.T)
    norms = norm_path(model)
    W_write = None
    if norms.post_mlp is not None:
        W_write = torch.stack([s.apply_linear(W_out[i]) for i, s in enumerate(norms.post_mlp)])
    scales = mlp_residual_scales(model)
    if len(scales) == W_out.shape[0] and bool((scales != 1).any()):  # Granite
        W_write = (W_out if W_write is None else W_write) * scales.to(W_out)[:, None, None]
    try:
        b_out = model.b_out.detach()
    except Exception:
        b_out = None
    w = ModelWeights(
        W_out,
        W_U,
        W_out.norm(dim=-1),
        W_E,
        bool(tied),
        norms,
        W_write,
        b_out,
        logit_scale=logit_slope(model),
    )
    with contextlib.suppress(TypeError):  # models that cannot be weakly referenced
        _CACHE[model] = w
    return w
