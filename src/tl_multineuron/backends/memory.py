"""Memory before it is spent: a forward pass's peak working memory, estimated from the model
config and the batch shape, checked against what the device has, and batches split to fit.

The estimate counts activations only (the weights are already resident), for a pass that stops
before the unembedding (as recording does) unless ``logits=True``. Per token: the residual
stream, q/k/v, rotary tables and the MLP hidden states; per (token, token) pair and row: the
attention scores the implementation materializes. Eager attention (TransformerLens' bridge
re-implementation: scores, masked scores, softmax) keeps about 2.5 live float32 copies of
``[head, pos, pos]`` plus HF's float masks; SDPA keeps no scores but larger per-token buffers
(about 8 query-sized copies) and, when a mask is needed (sliding-window layers longer than the
window, padded batches), about 4 bytes per pair. The constants are calibrated against the peak
RSS of a fresh process on the embedded Gemma 3 270M at 2k and 8k tokens
(``benchmarks/bench_long_prompts.py`` prints estimate / measured peak for each size);
``tests/test_gemma.py`` holds eager at 2k and 4k tokens within 25%.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import MultiNeuronError
from .tl_compat import eager_score_bytes, sliding_window

EAGER_MASK_BYTES = 8  # HF's float masks (full + sliding), per (query, key) pair
SDPA_MASK_BYTES = 4  # per (query, key) pair when a mask is needed (bool mask, float form)
SDPA_Q_COPIES = 8  # SDPA's own per-token buffers, in units of n_heads * d_head
DEFAULT_FRACTION = 0.8  # of the device's free memory a pass may plan to use


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak working memory of one forward pass (bytes)."""

    n_prompts: int
    n_tokens: int
    attention: str
    linear: int
    quadratic: int

    @property
    def total(self) -> int:
        return self.linear + self.quadratic

    def __str__(self) -> str:
        return format_bytes(self.total)


def format_bytes(n: int | float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}


def parse_memory(text: str | int | float) -> int:
    """Bytes from ``"4GiB"``, ``"4G"`` (binary), ``"4GB"`` (decimal), ``"512MiB"`` or a number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise MultiNeuronError(
                f"memory size {text!r}: expected a number with an optional unit "
                "(B, KiB, MiB, GiB, TiB, or KB/MB/GB/TB; K/M/G/T mean KiB/MiB/GiB/TiB)"
            )
        value, unit = float(m.group(1)), m.group(2).lower()
    out = int(value * _UNITS[unit])
    if out <= 0 or value != value:
        raise MultiNeuronError(f"memory size {text!r} must be positive")
    return out


def _element_size(model: Any) -> int:
    try:
        return next(model.parameters()).element_size()
    except (StopIteration, AttributeError):
        return 4


def estimate_forward(
    model: Any, n_prompts: int, n_tokens: int, attention: str = "eager", logits: bool = False
) -> MemoryEstimate:
    """Estimated peak activation memory of one pass over ``n_prompts`` padded to ``n_tokens``."""
    c = model.cfg
    n_heads = int(getattr(c, "n_heads", 1) or 1)
    n_kv = int(getattr(c, "n_key_value_heads", None) or n_heads)
    d_head = int(getattr(c, "d_head", 0) or c.d_model // n_heads)
    s = _element_size(model)
    per_token = 3 * c.d_mlp + 2 * c.d_model + (n_heads + 2 * n_kv) * d_head + 2 * d_head
    if logits:
        per_token += 2 * c.d_vocab
    linear = n_prompts * n_tokens * per_token * s
    pairs = n_prompts * n_tokens * n_tokens
    if attention == "eager":
        quadratic = pairs * (eager_score_bytes(model) * n_heads + EAGER_MASK_BYTES)
    elif attention == "sdpa":
        linear += n_prompts * n_tokens * SDPA_Q_COPIES * n_heads * d_head * s
        window = sliding_window(model)
        masked = (window is not None and n_tokens > window) or n_prompts > 1
        quadratic = pairs * SDPA_MASK_BYTES if masked else 0
    else:
        raise MultiNeuronError(f"attention {attention!r}; expected 'eager' or 'sdpa'")
    return MemoryEstimate(n_prompts, n_tokens, attention, int(linear), int(quadratic))


def available_memory(device: torch.device | str) -> int:
    """Free memory on ``device`` now (bytes): CUDA's free memory, or the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":  # pragma: no cover - no Apple GPU here
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def memory_budget(device: torch.device | str, max_memory: int | str | None = None) -> int:
    """What one pass may use: ``max_memory`` if given (capped by what is free), else 80% of
    the device's free memory."""
    free = int(available_memory(device) * DEFAULT_FRACTION)
    if max_memory is None:
        return free
    return min(parse_memory(max_memory), free)


def plan_chunks(
    lengths: Sequence[int],
    estimate: Callable[[int, int], MemoryEstimate],
    budget: int,
    labels: Sequence[str],
    remedy: str = "shorten the prompt, use a device with more memory, or (eager) run with "
    "--attention sdpa",
) -> list[tuple[int, int]]:
    """Split prompts (in order) into contiguous ``[start, stop)`` chunks whose padded pass fits
    ``budget``. A prompt that does not fit on its own is an error naming it, before anything
    runs."""
    for lab, n in zip(labels, lengths, strict=True):
        est = estimate(1, n)
        if est.total > budget:
            raise MultiNeuronError(
                f"{lab}: the prompt is {n} tokens; one forward pass over it needs an estimated "
                f"{est} ({est.attention} attention) but the budget is {format_bytes(budget)} "
                f"(80% of the device's free memory, or --max-memory): {remedy}"
            )
    chunks: list[tuple[int, int]] = []
    start = 0
    while start < len(lengths):
        stop, width = start + 1, lengths[start]
        while stop < len(lengths):
            w = max(width, lengths[stop])
            if estimate(stop + 1 - start, w).total > budget:
                break
            stop, width = stop + 1, w
        chunks.append((start, stop))
        start = stop
    return chunks
