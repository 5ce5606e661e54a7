"""Devices: which exist here, resolving a requested one, and where a model's parameters are.

Imports nothing from the package but its errors (``models`` and ``placement`` both use it)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import MultiNeuronError


def available_devices() -> list[str]:
    """The devices this process can use, e.g. ``['cpu', 'cuda:0']``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():  # pragma: no cover - no Apple GPU here
        out.append("mps")
    return out


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` after checking it exists and is usable here; ``None``
    stays ``None`` (TransformerLens' default). Anything else is an error naming what exists."""
    if device is None:
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MultiNeuronError(
            f"device {device!r} is not a device name; available here: {available_devices()}"
        ) from e
    if d.type == "cpu":
        return d
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise MultiNeuronError(
                f"device {device!r} was asked for but CUDA is not usable here (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda}); available: "
                f"{available_devices()}"
            )
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise MultiNeuronError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s); "
                f"available: {available_devices()}"
            )
        return d
    backend = getattr(torch.backends, d.type, None) or getattr(torch, d.type, None)
    usable = getattr(backend, "is_available", None)
    if usable is None or not usable():
        raise MultiNeuronError(
            f"device {device!r} is not usable here; available: {available_devices()}"
        )
    return d  # pragma: no cover - no such device here


def check_placement(model: Any, device: torch.device | None) -> torch.device:
    """The one device holding the model's parameters; an error if they are spread over several
    or are not on the requested ``device``."""
    try:
        found = {p.device for p in model.parameters()}
    except AttributeError:
        found = set()
    if len(found) > 1:
        raise MultiNeuronError(
            f"the model's parameters are spread over {sorted(map(str, found))}; expected one device"
        )
    actual = next(iter(found)) if found else model_device(model)
    index = device.index if device is not None else None
    if device is not None and device.type == "cuda" and index is None:
        index = torch.cuda.current_device()
    if device is not None and (
        actual.type != device.type or (device.type != "cpu" and actual.index != index)
    ):
        raise MultiNeuronError(
            f"the model was asked for on {str(device)!r} but its parameters are on {str(actual)!r}"
        )
    return actual


def model_device(model: Any) -> torch.device:
    """The device of the model's parameters."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device(getattr(model.cfg, "device", None) or "cpu")
