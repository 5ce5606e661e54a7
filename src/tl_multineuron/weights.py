"""Per-model weight quantities for attribution, read once from the unprocessed model.

TransformerLens' compatibility mode folds and centres weights, which changes ``W_out`` row
norms and ``W_U``; these are read from the model as loaded (no processing), and a test checks
them against the raw HF weights.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .errors import MultiNeuronError


@dataclass(frozen=True)
class ModelWeights:
    """``W_out`` [layer, d_mlp, d_model], ``W_U`` [d_model, vocab], ``W_out`` row norms, and
    the input embedding when the model ties it to the unembedding."""

    W_out: Float[Tensor, "layer d_mlp d_model"]
    W_U: Float[Tensor, "d_model vocab"]
    out_norms: Float[Tensor, "layer d_mlp"]
    W_E: Float[Tensor, "vocab d_model"] | None
    tied: bool

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


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_weights(model: Any) -> ModelWeights:
    """The model's attribution weights (computed once per model object)."""
    try:
        cached = _CACHE.get(model)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
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
    w = ModelWeights(W_out, W_U, W_out.norm(dim=-1), W_E, bool(tied))
    with contextlib.suppress(TypeError):  # models that cannot be weakly referenced
        _CACHE[model] = w
    return w
