"""A second device on a one-CPU machine, for tests of code that must put each index and mask
on the device of the activation it indexes.

:class:`SecondDevice` is a ``TorchFunctionMode`` that gives tensors a *virtual* device: the
host (the CPU, where the embeddings and everything the caller builds live) or a second device
(where the model's later blocks live, as with a device map). Tensors on the second device
report ``device`` as :data:`FAKE` (``xpu:1``), every ``.to(FAKE)`` / ``device=FAKE`` puts a result
there, ``.to('cpu')`` brings it back, and an op that mixes a host tensor (other than a 0-dim
scalar, which PyTorch allows) with a second-device tensor raises exactly as PyTorch does on two
real devices. The numbers are computed on the CPU throughout, so results can be compared.

``split(model, first_layer)`` places blocks ``first_layer..`` of a TransformerBridge, the final
norm and the unembedding on the second device (parameters tagged, block inputs moved there, as
accelerate's hooks do).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

FAKE = torch.device("xpu", 1)
_HOST = torch.device("cpu")


class MixedDevices(RuntimeError):
    """An op mixed tensors of the two virtual devices."""


class SecondDevice(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.on_second: dict[int, weakref.ref] = {}  # by id: tensors compare elementwise
        self.ops = 0

    # -- placement ------------------------------------------------------------------------
    def put(self, t: Any) -> Any:
        if isinstance(t, torch.Tensor) and not self.is_second(t):
            key = id(t)
            self.on_second[key] = weakref.ref(t, lambda _, k=key: self.on_second.pop(k, None))
        return t

    def is_second(self, t: Any) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        r = self.on_second.get(id(t))
        return r is not None and r() is t

    @staticmethod
    def _is_fake(d: Any) -> bool:
        try:
            return torch.device(d) == FAKE
        except (TypeError, RuntimeError):
            return False

    # -- the mode ---------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func == torch.Tensor.device.__get__:
            return FAKE if self.is_second(args[0]) else func(*args, **kwargs)
        if func in (torch.Tensor.get_device,):
            return 1 if self.is_second(args[0]) else -1
        to_second = None  # does this call place its result on a device explicitly?
        if "device" in kwargs and kwargs["device"] is not None:
            to_second = self._is_fake(kwargs["device"])
            kwargs["device"] = _HOST
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            new_args = []
            for a in args[1:]:
                if isinstance(a, torch.device | str) and not isinstance(a, torch.dtype):
                    try:
                        d = torch.device(a)
                    except (TypeError, RuntimeError):
                        new_args.append(a)
                        continue
                    to_second = d == FAKE
                    new_args.append(_HOST)
                elif isinstance(a, torch.Tensor):  # .to(other): its device
                    to_second = self.is_second(a)
                    new_args.append(a.dtype)
                else:
                    new_args.append(a)
            if func is torch.Tensor.cpu:
                to_second = False
            args = (args[0], *new_args)
            if func is torch.Tensor.cpu:
                func = torch.Tensor.to
                args = (args[0], _HOST)
        # a deep copy's memo holds other tensors: only the copied one counts
        flat, _ = tree_flatten(args[:1] if func is torch.Tensor.__deepcopy__ else (args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        second = [t for t in tensors if self.is_second(t)]
        if to_second is None and second:
            host = [t for t in tensors if not self.is_second(t) and t.ndim > 0]
            if host:
                raise MixedDevices(
                    f"{getattr(func, '__name__', func)}: tensors on {FAKE} and on the host "
                    f"(shapes {[tuple(t.shape) for t in second][:3]} vs "
                    f"{[tuple(t.shape) for t in host][:3]})"
                )
        self.ops += 1
        out = func(*args, **kwargs)
        moved = func is torch.Tensor.to and to_second is not None
        if moved and out is args[0] and to_second != self.is_second(out):
            out = out.clone()  # a real move copies; the CPU returns the same object
        place = to_second if to_second is not None else bool(second)
        if place:
            tree_map(self.put, out)
        return out

    # -- placing a model ------------------------------------------------------------------------
    def split(self, model: Any, first_layer: int) -> list:
        """Blocks ``first_layer..``, the final norm and the unembedding on the second device
        (an unembedding tied to the input embedding stays with it on the host, as accelerate
        keeps tied weights together); inputs are moved to each module's device, as
        accelerate's hooks do. Returns the hook handles (remove them to undo)."""
        host = {id(p) for p in model.embed.parameters()}
        handles = []
        movers = [*list(model.blocks)[first_layer:]]
        movers += [m for m in (getattr(model, "ln_final", None), model.unembed) if m is not None]
        for m in movers:
            tied = any(id(p) in host for p in m.parameters())
            if not tied:
                for p in m.parameters():
                    self.put(p)
                for b in m.buffers():
                    self.put(b)
            target = _HOST if tied else FAKE

            def pre(mod, args, kwargs, target=target):
                move = lambda t: t.to(target) if isinstance(t, torch.Tensor) else t  # noqa: E731
                return tree_map(move, args), tree_map(move, kwargs)

            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        return handles
