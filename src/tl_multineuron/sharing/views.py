"""circuitsvis views rendered with circuitsvis's locally bundled JavaScript (no network).

A :class:`View` is plain data (a circuitsvis React element name and its props), built by pure
functions from tensors and labels; :func:`render_views` writes them into HTML with the
circuitsvis bundle inlined once (its default string output loads the bundle from a CDN).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import torch
from jaxtyping import Float
from torch import Tensor

from ..backends.devices import model_device
from ..backends.models import check_model
from ..backends.sites import site_hook, site_transforms
from ..errors import MultiNeuronError
from ..files import atomic_write
from .recording import encode, get_tokenizer


@dataclass(frozen=True)
class View:
    """One circuitsvis widget: its React element name, props and a caption."""

    element: str
    props: dict
    title: str = ""
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "element": self.element,
            "props": self.props,
            "title": self.title,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> View:
        return cls(d["element"], d["props"], d.get("title", ""), d.get("meta", {}))


def neuron_activation_view(
    tokens_by_language: Mapping[str, Sequence[str]],
    activations_by_language: Mapping[str, Float[Tensor, "pos layer neuron"]],
    layer_labels: Sequence[str],
    neuron_labels: Sequence[str],
    title: str = "",
) -> View:
    """Token-level activations of chosen neurons across the parallel prompts of an item: one
    row per language (its first token is the language tag), drop-downs for layer and neuron."""
    langs = list(tokens_by_language)
    if set(langs) != set(activations_by_language):
        raise MultiNeuronError("tokens and activations must cover the same languages")
    tokens, acts = [], []
    for x in langs:
        a = activations_by_language[x]
        toks = list(tokens_by_language[x])
        if a.ndim != 3 or a.shape[0] != len(toks):
            raise MultiNeuronError(
                f"language {x!r}: activations {tuple(a.shape)} for {len(toks)} tokens; expected "
                "[pos, layer, neuron]"
            )
        if a.shape[1] != len(layer_labels) or a.shape[2] != len(neuron_labels):
            raise MultiNeuronError(
                f"language {x!r}: {a.shape[1]} layers x {a.shape[2]} neurons but "
                f"{len(layer_labels)} layer and {len(neuron_labels)} neuron labels"
            )
        tag = torch.zeros(1, a.shape[1], a.shape[2])
        tokens.append([f"[{x}] "] + toks)
        acts.append(torch.cat([tag, a.float()]).tolist())
    props = {
        "tokens": tokens,
        "activations": acts,
        "firstDimensionName": "Layer",
        "secondDimensionName": "Neuron",
        "firstDimensionLabels": list(layer_labels),
        "secondDimensionLabels": list(neuron_labels),
    }
    return View("TextNeuronActivations", props, title, {"languages": langs})


def colored_tokens_view(
    tokens: Sequence[str], values: Float[Tensor, "pos k"], labels: Sequence[str], title: str = ""
) -> View:
    """One prompt's tokens coloured by K values (e.g. K neurons), switchable."""
    if values.ndim != 2 or values.shape[0] != len(tokens) or values.shape[1] != len(labels):
        raise MultiNeuronError(
            f"values {tuple(values.shape)} do not match {len(tokens)} tokens x {len(labels)} labels"
        )
    return View(
        "ColoredTokensMulti",
        {"tokens": list(tokens), "values": values.tolist(), "labels": list(labels)},
        title,
    )


def _bundle() -> str:
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise MultiNeuronError(f"circuitsvis's local JavaScript bundle is missing: {path}")
    return path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")


def render_views(views: Sequence[View]) -> str:
    """An HTML fragment: the circuitsvis bundle inlined once, then every view."""
    parts = [f"<script>{_bundle()}</script>"]
    for v in views:
        uid = "cv-" + uuid4().hex[:12]
        props = json.dumps(v.props).replace("</", "<\\/")
        parts.append(
            f'<figure class="cv"><figcaption>{html.escape(v.title)}</figcaption>'
            f'<div id="{uid}" class="cv-widget"></div></figure>'
            f"<script>CircuitsVis.render({json.dumps(uid)}, CircuitsVis.{v.element}, "
            f"{props});</script>"
        )
    return "\n".join(parts)


def views_page(views: Sequence[View], title: str = "tl_multineuron views") -> str:
    """A self-contained HTML page of views."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title></head><body><h1>{html.escape(title)}</h1>{render_views(views)}"
        "</body></html>"
    )


def save_views(views: Sequence[View], path: str | Path) -> None:
    atomic_write(
        path,
        lambda tmp: Path(tmp).write_text(
            json.dumps([v.to_dict() for v in views], ensure_ascii=False), encoding="utf-8"
        ),
    )


def load_views(path: str | Path) -> list[View]:
    return [View.from_dict(d) for d in json.loads(Path(path).read_text(encoding="utf-8"))]


def token_activations(
    model: Any,
    prompts: Sequence[str],
    neurons: dict[int, Sequence[int]],
    hook: str = "mlp.hook_post",
) -> tuple[list[list[str]], list[Float[Tensor, "pos layer neuron"]]]:
    """Per-token activations of chosen neurons (``{layer: [neuron, ...]}``, the same count
    per layer) for each prompt: string tokens and ``[pos, layer, neuron]`` tensors (for
    circuitsvis views)."""
    if not neurons:
        raise MultiNeuronError("no neurons chosen")
    counts = {len(v) for v in neurons.values()}
    if len(counts) != 1 or 0 in counts:
        raise MultiNeuronError("choose the same non-zero number of neurons in every layer")
    names = [f"blocks.{x}.{site_hook(hook)}" for x in neurons]
    check_model(model, names)
    fns = site_transforms(model, hook, list(neurons)) or [lambda t: t] * len(names)
    tok = get_tokenizer(model)
    words, acts = [], []
    for p in prompts:
        ids = encode(model, p)
        with torch.inference_mode():
            _, cache = model.run_with_cache(
                torch.tensor([ids], device=model_device(model)),
                names_filter=lambda n: n in names,
            )
        # one prompt: [1, pos, units], or [pos, units] where a MoE block flattens its tokens
        a = torch.stack(
            [
                f(cache[n] if cache[n].ndim == 2 else cache[n][0])[:, list(idx)]
                for f, n, idx in zip(fns, names, neurons.values(), strict=True)
            ],
            dim=1,
        )
        words.append([tok.decode([i]) for i in ids])
        acts.append(a.float().cpu())
    return words, acts
