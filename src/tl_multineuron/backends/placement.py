"""Models larger than one device: HF/accelerate ``device_map`` dispatch under the bridge.

A device map is what accelerate takes: ``"auto"`` / ``"balanced"`` / ``"sequential"``, a dict
``{module name: device}`` (devices as ``"cuda:1"``, ``1``, ``"cpu"``), or, the short form
:func:`layer_device_map` builds, a list of devices over which the decoder layers are split
evenly in order (embeddings on the first, the final norm on the last). Each block then runs on
its device; recording reduces activations where the layer lives and moves only the reduced
``[batch, d_mlp]`` rows (:func:`~tl_multineuron.sharing.recording.record_with`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import MultiNeuronError
from .devices import available_devices, resolve_device

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DeviceMap = str | dict[str, Any] | Sequence[str]


def parse_device_map(text: str) -> DeviceMap:
    """The CLI's ``--device-map``: a strategy, a JSON object, or comma-separated devices."""
    text = text.strip()
    if text in STRATEGIES:
        return text
    if text.startswith("{"):
        try:
            out = json.loads(text)
        except ValueError as e:
            raise MultiNeuronError(f"--device-map {text!r}: not valid JSON ({e})") from e
        return out
    devices = [x.strip() for x in text.split(",") if x.strip()]
    if not devices:
        raise MultiNeuronError(
            f"--device-map {text!r}: expected {'/'.join(STRATEGIES)}, a JSON object "
            "{module: device} or comma-separated devices, e.g. cuda:0,cuda:1"
        )
    return devices


def _device(value: Any, where: str) -> str:
    """A map value as a device name, after checking it exists here."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MultiNeuronError(f"device map {where}: {value!r} is not a device")
    name = f"cuda:{value}" if isinstance(value, int) else value
    if name in ("disk", "meta"):
        raise MultiNeuronError(
            f"device map {where}: {name!r} offload is not supported (recording hooks must see "
            f"every layer run); devices here: {available_devices()}"
        )
    try:
        return str(resolve_device(name))
    except MultiNeuronError as e:
        raise MultiNeuronError(f"device map {where}: {e}") from e


def decoder_layers(hf: Any) -> str:
    """The dotted name of the HF model's decoder-layer list (``model.layers``,
    ``transformer.h``, ...): the ``ModuleList`` with one entry per hidden layer."""
    n = getattr(hf.config, "num_hidden_layers", None) or getattr(hf.config, "n_layer", None)
    found = [
        name
        for name, mod in hf.named_modules()
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n
    ]
    if not found:
        raise MultiNeuronError(
            f"cannot find the {n} decoder layers of {type(hf).__name__}; give a device map "
            "{module: device} instead"
        )
    return min(found, key=len)


def layer_device_map(hf: Any, devices: Sequence[str]) -> dict[str, str]:
    """``{module: device}`` splitting the decoder layers evenly over ``devices`` in order;
    modules before the layers on the first device, the final norm and head on the last."""
    devs = [_device(d, f"entry {i}") for i, d in enumerate(devices)]
    path = decoder_layers(hf)
    n = len(hf.get_submodule(path))
    if len(devs) > n:
        raise MultiNeuronError(f"{len(devs)} devices for {n} layers: some would hold no layer")
    out: dict[str, str] = {}
    depth = path.count(".") + 1
    params = list(hf.named_parameters(remove_duplicate=False))  # tied weights too
    first_layer = next(i for i, (name, _) in enumerate(params) if name.startswith(path + "."))
    placed: dict[int, str] = {}  # a tied weight goes where its first occurrence went
    for i, (name, param) in enumerate(params):
        parts = name.split(".")
        if name.startswith(path + "."):
            key = ".".join(parts[: depth + 1])
            dev = devs[int(parts[depth]) * len(devs) // n]
        else:  # before the layers: embeddings; after them: final norm, head
            key = ".".join(parts[:-1]) or name
            dev = devs[0] if i < first_layer else devs[-1]
        dev = placed.setdefault(id(param), dev)
        out.setdefault(key, dev)
    return out


def check_device_map(hf: Any, device_map: dict[str, Any]) -> dict[str, str]:
    """The map with every device checked, every key a module or parameter of ``hf`` and
    every parameter placed; errors name the module and the device."""
    modules = dict(hf.named_modules())
    params = dict(hf.named_parameters(remove_duplicate=False))
    out = {}
    for key, value in device_map.items():
        if key not in modules and key not in params:
            raise MultiNeuronError(
                f"device map names {key!r}, which is not a module of {type(hf).__name__} "
                f"(top-level modules: {[n for n, _ in hf.named_children()]})"
            )
        out[key] = _device(value, f"entry {key!r}")
    for name in params:
        parts = name.split(".")
        if not any(".".join(parts[:i]) in out for i in range(len(parts) + 1)):
            raise MultiNeuronError(f"device map places no module holding parameter {name!r}")
    check_whole_layers(hf, out)
    return out


def check_whole_layers(hf: Any, device_map: dict[str, str]) -> None:
    """A decoder layer lives on one device: its MLP hooks, norms and the edits made there
    assume it (a layer split over devices is refused, naming it and the fix)."""
    prefix = decoder_layers(hf) + "."
    per_layer: dict[str, set[str]] = {}
    for key, dev in device_map.items():
        if key.startswith(prefix):
            layer = prefix + key[len(prefix) :].split(".")[0]
            per_layer.setdefault(layer, set()).add(dev)
            # the layer's own entry, if any, covers the parts not named
            if layer in device_map:
                per_layer[layer].add(device_map[layer])
    split = {k: sorted(v) for k, v in per_layer.items() if len(v) > 1}
    if split:
        layer, devs = next(iter(split.items()))
        raise MultiNeuronError(
            f"device map splits decoder layer {layer!r} of {type(hf).__name__} over {devs}: a "
            "layer's MLP neurons, its norms and the edits on them must sit on one device; "
            "place whole layers (e.g. --device-map cuda:0,cuda:1 splits the layers evenly)"
        )


def dispatch(hf: Any, device_map: DeviceMap, dtype: torch.dtype) -> Any:
    """``hf`` dispatched over the devices of ``device_map`` (accelerate)."""
    try:
        from accelerate import dispatch_model, infer_auto_device_map
        from accelerate.utils import get_balanced_memory
    except ImportError as e:  # pragma: no cover - accelerate is a dependency
        raise MultiNeuronError("device maps need accelerate (pip install accelerate)") from e
    if isinstance(device_map, str):
        if device_map not in STRATEGIES:
            raise MultiNeuronError(f"device map {device_map!r}: expected one of {STRATEGIES}")
        no_split = list(getattr(hf, "_no_split_modules", None) or [])
        mem = None
        if device_map != "sequential":
            mem = get_balanced_memory(
                hf,
                dtype=dtype,
                no_split_module_classes=no_split,
                low_zero=device_map == "balanced_low_0",
            )
        dm = infer_auto_device_map(hf, max_memory=mem, no_split_module_classes=no_split)
        dm = {k: _device(v, f"entry {k!r}") for k, v in dm.items()}
    elif isinstance(device_map, dict):
        dm = check_device_map(hf, device_map)
    else:
        dm = layer_device_map(hf, list(device_map))
    return dispatch_model(hf, device_map=dm)
