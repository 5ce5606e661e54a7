"""What a run cannot avoid, in FLOPs and in seconds: its floor.

A token through the decoder costs at least its weight GEMMs (``2 x`` the attention and MLP
weights a token meets; experts: only the ``experts_per_token`` it is routed to), and a scored
position at least its unembedding (``2 x d_model x d_vocab``: the log-likelihood of a position
needs its logits over the whole vocabulary). Attention's score products, norms and activations
are left out, so the floor is a lower bound. :func:`gemm_rate` measures the rate that turns
FLOPs into seconds on the model's own device and dtype, in the run that reports against it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..backends.devices import model_device
from .prefix_groups import prefix_groups


@dataclass(frozen=True)
class ModelFlops:
    """forward: FLOPs per token through the decoder's weight GEMMs; unembed: per position
    unembedded against the whole vocabulary."""

    forward: float
    unembed: float

    def tokens(self, n_forward: float | int, n_unembedded: float | int = 0) -> float:
        return n_forward * self.forward + n_unembedded * self.unembed


def model_flops(model: Any) -> ModelFlops:
    """The per-token FLOPs of ``model`` from its config (query, key, value and output
    projections; gated MLPs three matrices, plain ones two; mixture-of-experts the routed
    experts only)."""
    c = model.cfg
    kv = getattr(c, "n_key_value_heads", None) or c.n_heads
    attn = c.d_model * c.d_head * (2 * c.n_heads + 2 * kv)
    mlp = c.d_model * c.d_mlp * (3 if getattr(c, "gated_mlp", False) else 2)
    if getattr(c, "num_experts", None):
        mlp *= c.experts_per_token or 1
    return ModelFlops(2.0 * c.n_layers * (attn + mlp), 2.0 * c.d_model * c.d_vocab)


def gemm_rate(model: Any, rows: int = 512, cols: int = 32768, repeat: int = 3) -> float:
    """FLOP/s of an unembedding-shaped GEMM (``rows x d_model`` by ``d_model x cols``) on the
    model's device and dtype: the best of ``repeat`` after a warm-up."""
    device = model_device(model)
    dtype = getattr(model.cfg, "dtype", torch.float32)
    a = torch.randn(rows, model.cfg.d_model, device=device, dtype=dtype)
    b = torch.randn(model.cfg.d_model, min(cols, model.cfg.d_vocab), device=device, dtype=dtype)
    best = float("inf")
    for k in range(repeat + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        (a @ b).sum().item()
        if k:  # the first is a warm-up
            best = min(best, time.perf_counter() - t)
    return 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / best


def scored_positions(rows: Any, batch_size: int = 64) -> tuple[int, int]:
    """Positions one scope-``all`` condition computes over ``rows`` (an ``AnswerRows``):
    ``(forward, unembedded)``, with rows that share a prefix computing it once
    (:mod:`.prefix_groups`, as the scorer groups them)."""
    n_in = [len(p) + len(a) - 1 for p, a in zip(rows.prompts, rows.answers, strict=True)]
    first = [len(p) - 1 for p in rows.prompts]  # the input position of the first scored one
    groups, alone = prefix_groups(rows, max_group=batch_size)
    forward = sum(n_in[r] for r in alone)
    unembedded = sum(n_in[r] - first[r] for r in alone)
    for g in groups:
        forward += g.shared + sum(n_in[r] - g.shared for r in g.rows)
        unembedded += max(0, g.shared - min(first[r] for r in g.rows))
        unembedded += sum(n_in[r] - max(g.shared, first[r]) for r in g.rows)
    return forward, unembedded


@dataclass
class CostLedger:
    """A run's phases: the seconds each took beside the FLOPs it cannot avoid (tokens through
    the decoder, positions unembedded) and their floor at ``rate`` (FLOP/s, measured in the same
    run by :func:`gemm_rate`)."""

    rate: float
    flops: ModelFlops
    phases: list[dict] = field(default_factory=list)

    def floor(self, n_forward: float | int, n_unembedded: float | int = 0) -> float:
        """Seconds of ``n_forward`` tokens and ``n_unembedded`` positions at the rate."""
        return self.flops.tokens(n_forward, n_unembedded) / self.rate

    def add(
        self, phase: str, seconds: float, n_forward: float | int, n_unembedded: float | int = 0
    ) -> None:
        self.phases.append({"phase": phase, "seconds": seconds, "forward_tokens": n_forward,
                            "unembedded": n_unembedded})  # fmt: skip

    def frame(self) -> pd.DataFrame:
        """One row per phase and a ``total``: seconds, tokens, GFLOP, floor (s) and ratio."""
        df = pd.DataFrame(self.phases, columns=["phase", "seconds", "forward_tokens",
                                                "unembedded"])  # fmt: skip
        if len(df):
            total = df[["seconds", "forward_tokens", "unembedded"]].sum()
            df = pd.concat([df, pd.DataFrame([{"phase": "total", **total}])], ignore_index=True)
        fl = df["forward_tokens"] * self.flops.forward + df["unembedded"] * self.flops.unembed
        df["gflop"] = fl / 1e9
        df["floor_s"] = fl / self.rate
        df["ratio"] = df["seconds"] / df["floor_s"]
        df["gemm_gflops"] = self.rate / 1e9
        return df


def minutes(seconds: float) -> str:
    """``"12 min"`` from 90 s up, else ``"45 s"``."""
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
