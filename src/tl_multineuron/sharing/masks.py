"""Low-level neuron masks: top-K per layer (a count or a fraction of the layer)."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..errors import MultiNeuronError


def resolve_k(k: int | float, d_mlp: int) -> int:
    """K as a count (int) or a fraction of d_mlp (float in (0, 1])."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise MultiNeuronError(f"K must be a count or a fraction, got {k!r}")
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise MultiNeuronError(f"K as a fraction must be in (0, 1], got {k}")
        return max(1, int(round(k * d_mlp)))
    if not 1 <= k <= d_mlp:
        raise MultiNeuronError(f"K={k} must be between 1 and d_mlp={d_mlp}")
    return k


def topk_mask(
    scores: Float[Tensor, "*batch layer d_mlp"], k: int | float
) -> Bool[Tensor, "*batch layer d_mlp"]:
    """The top-K neurons per layer by score (highest first)."""
    kk = resolve_k(k, scores.shape[-1])
    idx = scores.topk(kk, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)
