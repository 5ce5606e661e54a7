"""Knowledge neurons as in Dai et al. (2022), "Knowledge Neurons in Pretrained Transformers".

The recipe: integrated gradients of the answer's **probability** w.r.t. the FFN intermediate
activations at the prediction position, baseline zero, a 20-step **left** Riemann sum (the
authors' code evaluates ``baseline + k/m * (a - baseline)`` for ``k = 0..m-1``; the paper's
formula writes ``k = 1..m``); per prompt the *coarse* knowledge neurons are those whose
attribution exceeds ``t = 0.2 x`` the prompt's maximum attribution (over every attributed layer);
*refined* neurons are the coarse neurons shared by more than a fraction ``p`` of the prompts that
express the same fact. Here the prompts of one fact are the item's parallel prompts, one per
language, so refined neurons are the fact's cross-lingual knowledge neurons.

:class:`KnowledgeStats` accumulates, per category of the sharing analysis, how many coarse
(per language) and refined (per item) neurons fall in it, next to the category's base rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from ..sharing.classification import CATEGORY_NAMES

DAI_PRESET = {
    "ig_target": "prob",
    "ig_method": "riemann_left",
    "ig_steps": 20,
    "ig_baseline": "zero",
}
DAI_FRACTION = 0.2
DAI_SHARE = 0.7


def _check_fraction(name: str, v: float) -> None:
    if not isinstance(v, int | float) or not 0 <= v < 1:
        raise MultiNeuronError(f"{name} must be in [0, 1), got {v!r}")


def coarse_neurons(
    ig: Float[Tensor, "*prompt layer d_mlp"], fraction: float = DAI_FRACTION
) -> Bool[Tensor, "*prompt layer d_mlp"]:
    """Neurons whose attribution exceeds ``fraction`` x the prompt's maximum attribution over
    all its layers and neurons (none where that maximum is not positive)."""
    _check_fraction("fraction", fraction)
    peak = ig.flatten(-2).amax(-1)[..., None, None]
    return (ig > fraction * peak) & (peak > 0)


def refine(
    coarse: Bool[Tensor, "prompt layer d_mlp"], share: float = DAI_SHARE
) -> Bool[Tensor, "layer d_mlp"]:
    """Coarse neurons shared by more than ``share`` of the prompts."""
    _check_fraction("share", share)
    return coarse.sum(0) > share * coarse.shape[0]


@dataclass(frozen=True)
class KnowledgeNeurons:
    """One fact's knowledge neurons: IG scores, coarse sets per prompt, the refined set."""

    layers: tuple[int, ...]
    scores: Float[Tensor, "prompt layer d_mlp"]
    coarse: Bool[Tensor, "prompt layer d_mlp"]
    refined: Bool[Tensor, "layer d_mlp"]

    def refined_list(self) -> list[tuple[int, int]]:
        """``(layer, neuron)`` pairs of the refined set."""
        idx = self.refined.nonzero().tolist()
        return [(self.layers[i], n) for i, n in idx]


def knowledge_neurons(
    model: Any,
    prompts: Sequence[str],
    answer_tokens: Sequence[int],
    layers: Sequence[int],
    *,
    fraction: float = DAI_FRACTION,
    share: float = DAI_SHARE,
    steps: int = DAI_PRESET["ig_steps"],
) -> KnowledgeNeurons:
    """Dai et al.'s recipe for one fact expressed by ``prompts`` (each with its answer's first
    token): IG of the probability with a left Riemann sum over ``layers``, coarse neurons at
    ``fraction`` x max, refined over prompts at ``share``."""
    from .scores import integrated_gradients

    if not prompts or len(prompts) != len(answer_tokens):
        raise MultiNeuronError(
            f"{len(prompts)} prompts and {len(answer_tokens)} answer tokens; expected the same "
            "non-zero number"
        )
    scores = torch.stack(
        [
            torch.stack(
                [
                    integrated_gradients(
                        model,
                        p,
                        int(t),
                        x,
                        steps=steps,
                        target=DAI_PRESET["ig_target"],
                        method=DAI_PRESET["ig_method"],
                    ).attributions
                    for x in layers
                ]
            )
            for p, t in zip(prompts, answer_tokens, strict=True)
        ]
    )
    coarse = coarse_neurons(scores, fraction)
    return KnowledgeNeurons(tuple(layers), scores, coarse, refine(coarse, share))


@dataclass
class KnowledgeStats:
    """Streaming counts of coarse and refined knowledge neurons per sharing category."""

    languages: tuple[str, ...]
    layers: tuple[int, ...]
    fraction: float = DAI_FRACTION
    share: float = DAI_SHARE
    n_items: int = 0
    coarse_counts: Int[Tensor, "lang layer 4"] | None = None
    refined_counts: Int[Tensor, "layer 4"] | None = None
    neuron_counts: Int[Tensor, "layer 4"] | None = None

    def __post_init__(self) -> None:
        self.languages, self.layers = tuple(self.languages), tuple(self.layers)
        _check_fraction("fraction", self.fraction)
        _check_fraction("share", self.share)
        L = len(self.layers)
        for name, shape in (
            ("coarse_counts", (len(self.languages), L, 4)),
            ("refined_counts", (L, 4)),
            ("neuron_counts", (L, 4)),
        ):
            v = getattr(self, name)
            if v is None:
                setattr(self, name, torch.zeros(shape, dtype=torch.int64))
            elif tuple(v.shape) != shape:
                raise MultiNeuronError(f"{name} has shape {tuple(v.shape)}; expected {shape}")

    def update(
        self, ig: Float[Tensor, "item lang layer d_mlp"], codes: Int[Tensor, "item layer d_mlp"]
    ) -> None:
        """Add a batch of IG scores (every language of each item) and the items' codes."""
        n_it, N, L, n = ig.shape
        if (len(self.languages), len(self.layers)) != (N, L) or codes.shape != (n_it, L, n):
            raise MultiNeuronError(
                f"IG {tuple(ig.shape)} / codes {tuple(codes.shape)} do not match "
                f"{len(self.languages)} languages x {len(self.layers)} layers"
            )
        coarse = coarse_neurons(ig.detach().cpu(), self.fraction)
        refined = coarse.sum(1) > self.share * N  # [item, layer, d_mlp]
        onehot = torch.nn.functional.one_hot(codes.cpu().long(), 4)  # [item, layer, n, 4]
        self.coarse_counts += torch.einsum("ijln,ilnc->jlc", coarse.long(), onehot)
        self.refined_counts += torch.einsum("iln,ilnc->lc", refined.long(), onehot)
        self.neuron_counts += onehot.sum((0, 2))
        self.n_items += n_it

    def check_compatible(self, other: KnowledgeStats, verb: str = "merge") -> None:
        for attr in ("languages", "layers", "fraction", "share"):
            if getattr(self, attr) != getattr(other, attr):
                raise MultiNeuronError(
                    f"cannot {verb} knowledge-neuron statistics of different {attr}: "
                    f"{getattr(self, attr)!r} vs {getattr(other, attr)!r}"
                )

    def merge(self, other: KnowledgeStats) -> KnowledgeStats:
        self.check_compatible(other)
        return KnowledgeStats(
            self.languages,
            self.layers,
            self.fraction,
            self.share,
            self.n_items + other.n_items,
            self.coarse_counts + other.coarse_counts,
            self.refined_counts + other.refined_counts,
            self.neuron_counts + other.neuron_counts,
        )

    def equals(self, other: KnowledgeStats) -> bool:
        return self.state().keys() == other.state().keys() and all(
            torch.equal(a, b) if isinstance(a, Tensor) else a == b
            for a, b in zip(self.state().values(), other.state().values(), strict=True)
        )

    def state(self) -> dict:
        return {
            "languages": list(self.languages),
            "layers": list(self.layers),
            "fraction": self.fraction,
            "share": self.share,
            "n_items": self.n_items,
            "coarse_counts": self.coarse_counts,
            "refined_counts": self.refined_counts,
            "neuron_counts": self.neuron_counts,
        }

    @classmethod
    def from_state(cls, s: dict) -> KnowledgeStats:
        return cls(**{**s, "languages": tuple(s["languages"]), "layers": tuple(s["layers"])})

    def to_frame(self, pooled: bool = False) -> pd.DataFrame:
        """Refined neurons per category and layer (``pooled``: summed over layers), with the
        category's base rate and the enrichment (share of refined neurons / base rate)."""
        ref, cnt = self.refined_counts.double(), self.neuron_counts.double()
        layers: list = list(self.layers)
        if pooled:
            ref, cnt, layers = ref.sum(0, keepdim=True), cnt.sum(0, keepdim=True), ["all"]
        base = cnt / cnt.sum(-1, keepdim=True).clamp_min(1)
        rows = []
        for j, layer in enumerate(layers):
            tot = float(ref[j].sum())
            for c, name in enumerate(CATEGORY_NAMES):
                share = float(ref[j, c]) / tot if tot else float("nan")
                b = float(base[j, c])
                rows.append(
                    {
                        "layer": layer,
                        "category": name,
                        "refined_neurons": int(ref[j, c]),
                        "per_item": float(ref[j, c]) / max(1, self.n_items),
                        "share": share,
                        "base_rate": b,
                        "enrichment": share / b if b > 0 and tot else float("nan"),
                    }
                )
        return pd.DataFrame(rows)
