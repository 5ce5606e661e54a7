"""The scorer's edits as hooks: bound to a block of a batch's rows and to the pass's edit
positions, fused into one hook per site, and the capture of the final hidden states that the
scorer unembeds itself."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import MultiNeuronError
from ..sharing.prompt_prefix import keep_one_position
from .interventions import BatchShape


def bind_rows(iv: Any, model: Any, rows: tuple[int, int], pos: Tensor) -> list[tuple[str, Any]]:
    """The edit's TL hooks, restricted to a block of the batch and to ``pos``."""
    return [
        (name, dataclasses.replace(h, rows=rows, positions=pos, fired=[]))
        for name, h in iv.fwd_hooks(model)
        if not isinstance(h, BatchShape)  # the scorer knows its batch's shape
    ]


class SiteEdits:
    """Every edit of one pass at one hook site, as one hook.

    ``parts`` are the edits' :class:`~tl_multineuron.experiments.interventions.NeuronHook` s, each
    bound to its block of rows and to the pass's edit positions ``pos`` ``[n, S]`` (tiled over
    the ``C`` blocks, or folded into positions, see :mod:`.shared_prefix`). Deactivation and
    scaling are multiplicative: one factor per (row, unit) for the whole batch, applied in one
    product (rows without an edit keep factor 1). Other ops edit their block of one copy of the
    activations, in order."""

    def __init__(self, parts: list, pos: Tensor, C: int, folded: bool = False) -> None:
        self.parts = parts
        self.layer = parts[0].layer
        self.C, self.n, self.folded = C, pos.shape[0], folded
        # tiled: [C*n, S, 1]; folded (edit c at positions c*S .. (c+1)*S): [n, C*S, 1]
        self.pos = (pos.repeat(1, C) if folded else pos.repeat(C, 1))[..., None]
        self.everywhere = bool(pos.all())
        self.mult = all(
            h.op in ("zero", "scale") and not isinstance(h.value, Tensor) for h in parts
        )

    def __call__(
        self, act: Float[Tensor, "batch pos d_mlp"] | Float[Tensor, "token unit"], hook: Any
    ) -> Tensor:
        if act.ndim == 2:  # an MoE router's routing weights, one row per token
            B, S = self.pos.shape[:2]
            return self(act.view(B, S, act.shape[-1]), hook).reshape(act.shape)
        B, S, D = act.shape
        if tuple(self.pos.shape[:2]) != (B, S):
            raise MultiNeuronError(
                f"layer {self.layer}: edits bound to a batch of {tuple(self.pos.shape[:2])} "
                f"(rows, positions) see activations of shape {tuple(act.shape)}"
            )
        if self.folded:  # [n, C*S, D] -> [C*n, S, D] views: edit c is block c of rows
            return self._folded(act)
        if not self.mult:
            out = act.clone()
            for h in self.parts:
                s, e = h.rows
                out[s:e] = h.edit(out[s:e])
            return out
        f = self._factors(B, D, act)
        edited = act * f[:, None, :]
        return edited if self.everywhere else torch.where(self.pos.to(act.device), edited, act)

    def _factors(self, B: int, D: int, act: Tensor) -> Tensor:
        """``[B, D]``: one multiplicative factor per (row of the tiled batch, unit)."""
        f = torch.ones(B, D, dtype=act.dtype, device=act.device)
        for h in self.parts:
            s, e = h.rows
            m = h.mask.to(act.device)
            if m.shape[-1] != D or (m.ndim == 2 and m.shape[0] != e - s):
                raise MultiNeuronError(
                    f"layer {h.layer}: neuron mask of shape {tuple(m.shape)} for rows {h.rows} "
                    f"of activations of shape {tuple(act.shape)}"
                )
            v = 0.0 if h.op == "zero" else float(h.value)
            f[s:e] = torch.where(m, f[s:e] * v, f[s:e])
            h.fired.append(act.shape[1])
        return f

    def _folded(self, act: Tensor) -> Tensor:
        n, C, D = self.n, self.C, act.shape[-1]
        S = act.shape[1] // C
        if self.mult:
            f = self._factors(C * n, D, act).view(C, n, 1, D).transpose(0, 1)
            edited = (act.view(n, C, S, D) * f).view(n, C * S, D)
            return edited if self.everywhere else torch.where(self.pos.to(act.device), edited, act)
        out = act.clone()
        blocks = out.view(n, C, S, D)
        for h in self.parts:
            c = h.rows[0] // n
            blocks[:, c] = h.edit(blocks[:, c])
        return out


def fuse_edits(
    hooks: list[tuple[str, Any]], pos: Tensor, C: int, folded: bool = False
) -> list[tuple[str, Any]]:
    """One :class:`SiteEdits` per hook site (TL runs a site's hooks in order; the parts
    keep that order)."""
    by_site: dict[str, list] = {}
    for name, h in hooks:
        by_site.setdefault(name, []).append(h)
    return [(name, SiteEdits(parts, pos, C, folded)) for name, parts in by_site.items()]


class Hidden:
    """Hook on ``unembed.hook_in``: keep the final hidden states, let the model unembed only
    one position of one row (the answer positions are unembedded by the scorer;
    a pass of 1-token answers would otherwise unembed every row twice)."""

    def __init__(self) -> None:
        self.h: Tensor | None = None

    def __call__(self, x: Tensor, hook: Any) -> Tensor:
        self.h = x
        return keep_one_position(x)


def check_fired(hooks: list, cap: Any) -> None:
    """Every edit hook of a pass fired and the final hidden states were captured."""
    silent = [name for name, h in hooks if not h.fired]
    if silent or cap.h is None:
        raise MultiNeuronError(f"hooks never fired while scoring: {silent or 'unembed'}")
