"""Where each row's real tokens are, for hooks that run inside a padded forward pass.

The library's passes declare their batch with :func:`running_batch`: ``record`` right-pads
(the pads follow every real token, so no real token sees them), cached generation left-pads.
A :class:`~tl_multineuron.experiments.interventions.NeuronHook` whose positions are ``"last"`` or
``"all"`` reads the declaration, so ``with apply(model, deactivate(S)): record(model, batch)``
edits each row's own last token, not a pad. Outside a declared pass (a user's own
``run_with_hooks``) the hook keeps TransformerLens' convention: ``"last"`` is index ``-1``.

A pass that stops early (``record`` stops after the last layer it needs) also says which layer
it reached, so :func:`~tl_multineuron.experiments.interventions.apply` does not call a hook on a
later layer "never fired".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from ..errors import MultiNeuronError

PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class BatchPositions:
    """Real lengths of each row of the running batch and the side its pads are on."""

    lengths: Int[Tensor, " batch"]
    width: int
    padding: str = "right"

    def __post_init__(self) -> None:
        if self.padding not in PADDING_SIDES:
            raise MultiNeuronError(f"padding {self.padding!r}; expected one of {PADDING_SIDES}")

    def real(self, width: int, rows: tuple[int, int] | None = None) -> Tensor:
        """Bool ``[batch, width]``: the real (non-pad) positions of each row."""
        lengths = self.lengths if rows is None else self.lengths[rows[0] : rows[1]]
        pos = torch.arange(width, device=lengths.device)[None, :]
        if self.padding == "right":
            return pos < lengths[:, None]
        return pos >= width - lengths[:, None]

    def last(self, width: int, rows: tuple[int, int] | None = None) -> Tensor:
        """Bool ``[batch, width]``: each row's last real position."""
        lengths = self.lengths if rows is None else self.lengths[rows[0] : rows[1]]
        pos = torch.arange(width, device=lengths.device)[None, :]
        if self.padding == "right":
            return pos == lengths[:, None] - 1
        return (pos == width - 1).expand(len(lengths), width)


_CURRENT: ContextVar[BatchPositions | None] = ContextVar("tlmn_batch", default=None)
_STOPS: ContextVar[list[int] | None] = ContextVar("tlmn_stops", default=None)


@contextlib.contextmanager
def running_batch(lengths: Tensor, width: int, padding: str = "right") -> Iterator[BatchPositions]:
    """Declare the padded batch (real ``lengths``, padded ``width``) a pass runs on."""
    bp = BatchPositions(lengths.detach().cpu().long(), int(width), padding)
    token = _CURRENT.set(bp)
    try:
        yield bp
    finally:
        _CURRENT.reset(token)


def current_batch() -> BatchPositions | None:
    """The batch declared by the innermost :func:`running_batch`, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def watching_stops() -> Iterator[list[int]]:
    """Collect the last layer of every pass that stopped early inside the block."""
    stops: list[int] = []
    token = _STOPS.set(stops)
    try:
        yield stops
    finally:
        _STOPS.reset(token)


def note_stop(last_layer: int) -> None:
    """Called by a pass that stops after ``last_layer`` (the rest of the model never ran)."""
    stops = _STOPS.get()
    if stops is not None:
        stops.append(int(last_layer))


def pad_tokens(ids: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[Tensor, Tensor]:
    """``[batch, pos]`` tokens padded with ``pad`` (on the left or right) and the boolean mask of
    real positions."""
    width = max(len(r) for r in ids)
    tokens = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for i, row in enumerate(ids):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        tokens[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = True
    return tokens, mask
