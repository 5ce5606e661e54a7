"""Interventions on MLP neurons as values that produce TransformerLens hooks.

An :class:`Intervention` (zero, mean-ablate, scale, set, add, or shift toward a language's mean
activation; on a mixture-of-experts site, the experts' routing weights) on a
:class:`~tl_multineuron.experiments.neuron_sets.NeuronSet` -- or on per-row masks
``[batch, layer, d_mlp]`` for one padded batch -- yields ``(hook_name, NeuronHook)`` pairs for
TL's own ``run_with_hooks`` / ``hooks()`` / ``generate``. Positions: ``"last"`` (index -1 of
what the hook sees: the last prompt token of a left-padded batch, and during KV-cached
generation the new token at every step), ``"all"``, or explicit indices (applied when the
hook sees the whole sequence, i.e. not on cached generation steps). Inside the library's own
passes (``record``, generation), which declare their padding
(:mod:`~tl_multineuron.backends.batch_positions`), ``"last"`` and ``"all"`` mean each row's own
last / real positions whatever the padding side. :func:`apply` is a context manager that
removes the hooks even on an exception and checks that they fired. :class:`ResidualAdd` is the
same kind of value for a residual-stream steering vector.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..backends.batch_positions import current_batch, watching_stops
from ..backends.experts import is_moe_site
from ..backends.sites import NEURON_EDIT_HOOK
from ..errors import MultiNeuronError
from .neuron_sets import NeuronSet, check_unit_shape

OPS = ("zero", "scale", "set", "add", "mean", "toward")


def _check_positions(
    positions: str | Sequence[int] | Tensor,
) -> str | tuple[int, ...] | Tensor:
    if isinstance(positions, Tensor):
        if positions.dtype != torch.bool or positions.ndim != 2:
            raise MultiNeuronError(
                f"positions tensor of {positions.dtype} {tuple(positions.shape)}; expected a "
                "bool [batch, pos] mask of the positions to change"
            )
        return positions
    if isinstance(positions, str):
        if positions not in ("last", "all"):
            raise MultiNeuronError(f"positions {positions!r}; expected 'last', 'all' or indices")
        return positions
    pos = tuple(int(p) for p in positions)
    if not pos:
        raise MultiNeuronError("positions: an empty list of indices")
    return pos


@dataclass(frozen=True)
class NeuronHook:
    """The hook function of one layer: ``__call__(activation, hook)`` returns the modified
    activation. ``mask`` is ``[d_mlp]`` or per row ``[batch, d_mlp]``; ``value`` is a scalar
    or a ``[d_mlp]`` / ``[batch, d_mlp]`` tensor. ``positions`` may be a bool ``[batch, pos]``
    mask taken from the batch (each row's real positions). ``rows = (start, stop)`` restricts
    the hook to that block of the batch (several conditions sharing one batch); ``batch``
    above then means the block."""

    layer: int
    mask: Tensor
    op: str
    value: float | Tensor = 0.0
    strength: float = 1.0
    positions: str | tuple[int, ...] | Tensor = "last"
    rows: tuple[int, int] | None = None
    fired: list = field(default_factory=list, compare=False, repr=False)
    #: ``[batch, pos]`` of the pass, set by a :class:`BatchShape` probe where the site's
    #: activations come flattened over tokens (an MoE router's ``[batch * pos, experts]``)
    shape: list = field(default_factory=list, compare=False, repr=False)

    def __call__(
        self, act: Float[Tensor, "batch pos d_mlp"] | Float[Tensor, "token unit"], hook: Any
    ) -> Tensor:
        if act.ndim == 2:  # routing weights, one row per token
            if len(self.shape) != 2 or self.shape[0] * self.shape[1] != act.shape[0]:
                raise MultiNeuronError(
                    f"layer {self.layer}: token-flattened activations {tuple(act.shape)} but "
                    f"the pass's [batch, pos] is unknown ({self.shape}); use the hooks of "
                    "Intervention.fwd_hooks, which read it from the block's input"
                )
            return self(act.view(*self.shape, act.shape[-1]), hook).view(act.shape)
        if self.rows is None:
            return self.edit(act)
        s, e = self.rows
        if not 0 <= s < e <= act.shape[0]:
            raise MultiNeuronError(
                f"layer {self.layer}: rows {self.rows} outside a batch of {act.shape[0]}"
            )
        out = act.clone()
        out[s:e] = self.edit(act[s:e])
        return out

    def _position_mask(self, B: int, S: int, device: torch.device) -> Tensor:
        """Bool ``[B or 1, S, 1]``: where the edit applies."""
        declared = current_batch()
        if isinstance(self.positions, str) and declared is not None and declared.width == S:
            rows = self.rows or (0, len(declared.lengths))
            if rows[1] - rows[0] != B or rows[1] > len(declared.lengths):
                raise MultiNeuronError(
                    f"layer {self.layer}: the running batch has {len(declared.lengths)} rows "
                    f"but this hook sees {B} (rows {self.rows})"
                )
            real = declared.last if self.positions == "last" else declared.real
            return real(S, rows).to(device)[..., None]
        if isinstance(self.positions, Tensor):
            if tuple(self.positions.shape) != (B, S):
                raise MultiNeuronError(
                    f"layer {self.layer}: position mask of shape {tuple(self.positions.shape)} "
                    f"for activations of shape ({B}, {S}, d_mlp)"
                )
            return self.positions.to(device)[..., None]
        if self.positions == "all":
            return torch.ones(1, S, 1, dtype=torch.bool, device=device)
        pos = torch.zeros(1, S, 1, dtype=torch.bool, device=device)
        if self.positions == "last":
            pos[:, -1] = True
            return pos
        idx = [p for p in self.positions if -S <= p < S]
        if S == 1 and len(idx) < len(self.positions):
            idx = []  # a cached generation step: explicit prompt positions are past
        pos[:, idx] = True
        return pos

    def edit(self, act: Tensor) -> Tensor:
        """The edited activations of the rows ``act`` holds (``rows`` ignored)."""
        B, S, D = act.shape
        m = self.mask.to(act.device)
        if m.shape[-1] != D or (m.ndim == 2 and m.shape[0] != B):
            raise MultiNeuronError(
                f"layer {self.layer}: neuron mask of shape {tuple(m.shape)} for activations "
                f"of shape {tuple(act.shape)}"
            )
        m = m.view(1, 1, D) if m.ndim == 1 else m.view(B, 1, D)
        pos = self._position_mask(B, S, act.device)
        v = self.value
        if isinstance(v, Tensor):
            v = v.to(act.device, act.dtype)
            v = v.view(1, 1, D) if v.ndim == 1 else v.view(B, 1, D)
        if self.op == "zero":
            new = torch.zeros_like(act)
        elif self.op == "scale":
            new = act * v
        elif self.op in ("set", "mean"):
            new = torch.zeros_like(act) + v
        elif self.op == "add":
            new = act + v
        else:  # toward
            new = act + self.strength * (v - act)
        self.fired.append(S)
        return torch.where(m & pos, new, act)


@dataclass(frozen=True)
class BatchShape:
    """Reads ``[batch, pos]`` from a MoE block's input (``mlp.hook_in``) for the
    :class:`NeuronHook` of the same block, whose routing weights come flattened over tokens."""

    layer: int
    target: NeuronHook
    fired: list = field(default_factory=list, compare=False, repr=False)

    def __call__(self, act: Tensor, hook: Any) -> None:
        self.target.shape[:] = list(act.shape[:2])
        self.fired.append(act.shape[1])
        return None


@dataclass(frozen=True)
class Intervention:
    """What to do to which neurons, where.

    neurons: a NeuronSet, or per-row masks ``[batch, layer, d_mlp]`` for one padded batch.
    op: ``zero`` (deactivate), ``scale`` (``value`` = alpha; amplify when > 1), ``set``
        (constant), ``add`` (constant or ``[layer, d_mlp]`` tensor), ``mean`` (set to
        ``value`` = mean activations ``[layer, d_mlp]``), ``toward`` (``a + strength *
        (value - a)``, e.g. a language's mean activation).
    hook: the per-block hook edited; default: the NeuronSet's site (``mlp.hook_post`` for
        MLP neurons, ``…hook_sae_acts_post`` for SAE features), ``mlp.hook_post`` for masks.
    layers: the block of each mask row; default: the NeuronSet's, or every block.
    """

    neurons: NeuronSet | Tensor
    op: str = "zero"
    value: float | Tensor = 0.0
    positions: str | Sequence[int] | Tensor = "last"
    strength: float = 1.0
    hook: str | None = None
    allow_empty: bool = False
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise MultiNeuronError(f"intervention op {self.op!r}; expected one of {OPS}")
        object.__setattr__(self, "positions", _check_positions(self.positions))
        if isinstance(self.value, Tensor):
            if not torch.isfinite(self.value).all():
                raise MultiNeuronError(f"{self.op} intervention: value tensor is not finite")
        elif not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise MultiNeuronError(f"{self.op} intervention: value {self.value!r} is not finite")
        if not math.isfinite(self.strength):
            raise MultiNeuronError(f"strength {self.strength!r} is not finite")
        if self.op in ("mean", "toward") and not isinstance(self.value, Tensor):
            raise MultiNeuronError(f"op {self.op!r} needs value= a [layer, d_mlp] tensor")
        if not isinstance(self.neurons, NeuronSet):
            m = self.neurons
            if not isinstance(m, Tensor) or m.dtype != torch.bool or m.ndim != 3:
                raise MultiNeuronError(
                    "neurons must be a NeuronSet or a bool [batch, layer, d_mlp] tensor"
                )

    def _mask(self) -> Tensor:
        return self.neurons.mask if isinstance(self.neurons, NeuronSet) else self.neurons

    def _site(self) -> tuple[str, tuple[int, ...] | None]:
        is_set = isinstance(self.neurons, NeuronSet)
        hook = self.hook or (self.neurons.site if is_set else NEURON_EDIT_HOOK)
        layers = (
            self.layers if self.layers is not None else (self.neurons.layers if is_set else None)
        )
        return hook, layers

    def fwd_hooks(self, model: Any) -> list[tuple[str, NeuronHook | BatchShape]]:
        """``(hook_name, hook_fn)`` pairs for TL (``run_with_hooks``, ``hooks()``)."""
        mask = self._mask()
        hook, layers = self._site()
        name = self.neurons.name if isinstance(self.neurons, NeuronSet) else "per-row masks"
        blocks = check_unit_shape(model, hook, layers, tuple(mask.shape), name)
        n, d = mask.shape[-2:]
        if not self.allow_empty and not mask.any():
            raise MultiNeuronError(
                f"{self.op} intervention on an empty neuron set would do nothing; pass "
                "allow_empty=True if that is intended"
            )
        per_row = mask.ndim == 3
        rows = mask.any(0).any(-1) if per_row else mask.any(-1)
        hooks = []
        for r in rows.nonzero().flatten().tolist():
            v = self.value
            if isinstance(v, Tensor) and v.ndim >= 2:
                if v.shape[-2:] != (n, d):
                    raise MultiNeuronError(
                        f"value tensor of shape {tuple(v.shape)}; expected [layer={n}, "
                        f"d_mlp={d}] (or [batch, layer, d_mlp])"
                    )
                v = v[..., r, :]
            m = mask[:, r] if per_row else mask[r]
            nh = NeuronHook(blocks[r], m, self.op, v, self.strength, self.positions)
            if is_moe_site(hook):  # flattened over tokens: the shape from the input
                hooks.append((f"blocks.{blocks[r]}.mlp.hook_in", BatchShape(blocks[r], nh)))
            hooks.append((f"blocks.{blocks[r]}.{hook}", nh))
        return hooks

    def __add__(self, other: Intervention | Composite) -> Composite:
        return Composite((self,)) + other


@dataclass(frozen=True)
class Composite:
    """Several interventions applied in order (TL runs hooks on one point in order)."""

    parts: tuple[Intervention, ...]

    def fwd_hooks(self, model: Any) -> list[tuple[str, NeuronHook | BatchShape]]:
        return [h for p in self.parts for h in p.fwd_hooks(model)]

    def __add__(self, other: Intervention | Composite) -> Composite:
        more = other.parts if isinstance(other, Composite) else (other,)
        return Composite(self.parts + more)


def deactivate(
    neurons: NeuronSet | Tensor, positions: str | Sequence[int] = "last"
) -> Intervention:
    """Set the neurons' activations to zero."""
    return Intervention(neurons, "zero", 0.0, positions)


def amplify(
    neurons: NeuronSet | Tensor, alpha: float, positions: str | Sequence[int] = "last"
) -> Intervention:
    """Multiply the neurons' activations by ``alpha`` (> 1 strengthens)."""
    return Intervention(neurons, "scale", float(alpha), positions)


def mean_ablate(
    neurons: NeuronSet | Tensor,
    means: Float[Tensor, "layer d_mlp"],
    positions: str | Sequence[int] = "last",
) -> Intervention:
    """Replace the neurons' activations by reference means (e.g. ``stats.mean_activation()``
    averaged over languages)."""
    return Intervention(neurons, "mean", means, positions)


def steer_toward(
    neurons: NeuronSet | Tensor,
    target_means: Float[Tensor, "layer d_mlp"],
    strength: float = 1.0,
    positions: str | Sequence[int] = "last",
) -> Intervention:
    """Shift activations toward a language's mean activation: ``a + strength * (mu - a)``."""
    return Intervention(neurons, "toward", target_means, positions, strength)


@runtime_checkable
class Edit(Protocol):
    """Anything that yields TL hook pairs whose functions have ``layer`` and ``fired``
    (:class:`Intervention`, :class:`Composite`, a residual steering vector)."""

    def fwd_hooks(self, model: Any) -> list: ...


@contextmanager
def apply(model: Any, *interventions: Edit) -> Iterator[None]:
    """Apply interventions (or any :class:`Edit`) inside ``with``: hooks are removed on exit
    (even on an exception), and an error is raised if any of them never fired."""
    hooks = [h for iv in interventions for h in iv.fwd_hooks(model)]
    for _, fn in hooks:
        fn.fired.clear()
    with watching_stops() as stops, model.hooks(fwd_hooks=hooks):
        yield
    # a hook past the layer where a truncated pass (``record``) stopped had nothing to edit
    silent = [name for name, fn in hooks if not fn.fired and not (stops and fn.layer > min(stops))]
    if silent:
        raise MultiNeuronError(f"intervention hooks never fired: {silent}")


@dataclass(frozen=True)
class ResidualHook:
    """Adds ``strength * vector`` to the residual stream at every position it sees."""

    layer: int
    vector: Tensor
    strength: float
    fired: list = field(default_factory=list, compare=False, repr=False)

    def __call__(self, act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        if act.shape[-1] != self.vector.shape[-1]:
            raise MultiNeuronError(
                f"layer {self.layer}: a steering vector of width {self.vector.shape[-1]} for a "
                f"residual stream of width {act.shape[-1]}"
            )
        self.fired.append(act.shape[1])
        return act + self.strength * self.vector.to(act.device, act.dtype)


@dataclass(frozen=True)
class ResidualAdd:
    """A residual-stream steering vector as a value for TL hooks (like an Intervention)."""

    layer: int
    vector: Float[Tensor, " d_model"]
    strength: float = 1.0

    def fwd_hooks(self, model: Any) -> list[tuple[str, ResidualHook]]:
        if not 0 <= self.layer < model.cfg.n_layers:
            raise MultiNeuronError(
                f"residual steering layer {self.layer}: the model has {model.cfg.n_layers} layers"
            )
        return [
            (
                f"blocks.{self.layer}.hook_resid_post",
                ResidualHook(self.layer, self.vector, float(self.strength)),
            )
        ]
