"""The norms between an MLP neuron and the logits, read from the model as loaded.

A neuron's write ``a_i * W_out[i]`` reaches the residual stream through the post-MLP norm where
the architecture has one (Gemma 2/3: ``post_feedforward_layernorm``, TransformerLens name
``blocks.{l}.ln2_post``, weight used as ``1 + w``), and the logits through the final norm.
Following the usual direct-logit-attribution convention each norm's scale (RMS, or standard
deviation for a LayerNorm) is taken from the clean run at that position and held fixed, so a
norm acts on a component as a linear map: centre (LayerNorm only), divide by the scale,
multiply by the gain. Biases do not depend on any neuron and are left out.

Each norm module is *probed*, not trusted by class name: it is called on fixed inputs and must
behave as the identity, an RMSNorm or a LayerNorm of its input to 1e-4; the gain it applies
(``w`` or ``1 + w``, or one after folding) is what it actually multiplies by. A module that is
none of these is refused by name rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import MultiNeuronError

_BRIDGED_NORMS = ("ln1", "ln1_post", "ln2", "ln2_post")


@dataclass(frozen=True)
class NormSpec:
    """One norm as a linear map with a per-position scale: ``centre?(x) / scale(x) * gain``."""

    kind: str  # "none" | "rms" | "ln"
    gain: Float[Tensor, " d_model"] | None
    eps: float
    where: str

    def scale(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch"]:
        """The scale the norm divides ``x`` by (1 for ``none``)."""
        if self.kind == "none":
            return torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
        xx = x.double()
        if self.kind == "ln":
            xx = xx - xx.mean(-1, keepdim=True)
        return (xx.pow(2).mean(-1) + self.eps).sqrt().to(x.dtype)

    def apply_linear(self, v: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        """Centre (LayerNorm) and multiply by the gain: the norm without its scale."""
        if self.kind == "ln":
            v = v - v.mean(-1, keepdim=True)
        return v if self.gain is None else v * self.gain.to(v.device, v.dtype)

    def adjoint(self, u: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        """The read-out vector ``u`` seen through the norm: ``v . adjoint(u) == apply_linear(v)
        . u`` (gain, then centring for a LayerNorm)."""
        if self.gain is not None:
            u = u * self.gain.to(u.device, u.dtype)
        return u - u.mean(-1, keepdim=True) if self.kind == "ln" else u

    def describe(self) -> str:
        if self.kind == "none":
            return f"{self.where}: none"
        g = self.gain
        rng = f", gain {float(g.min()):.3g}..{float(g.max()):.3g}" if g is not None else ""
        return f"{self.where}: {'RMSNorm' if self.kind == 'rms' else 'LayerNorm'}{rng}"


@dataclass(frozen=True)
class NormPath:
    """Every norm between layer ``l``'s neurons and the logits.

    post_mlp: one :class:`NormSpec` per layer when the architecture normalises the MLP output
        before adding it to the residual stream (else ``None``).
    final: the final norm before the unembedding.
    softcap: the final logit soft-cap (scores are direct effects on the logit before it).
    processing: weight processing detected on the model (folded norms, centred weights).
    """

    post_mlp: tuple[NormSpec, ...] | None
    final: NormSpec
    softcap: float | None
    processing: tuple[str, ...]

    @property
    def trivial(self) -> bool:
        """No norm in the path: the scores reduce to the plain formulas."""
        return self.post_mlp is None and self.final.kind == "none"

    def to_meta(self) -> dict:
        return {
            "post_mlp_norm": None if self.post_mlp is None else self.post_mlp[0].kind,
            "final_norm": self.final.kind,
            "logit_softcap": self.softcap,
            "weight_processing": list(self.processing),
            "score_convention": (
                "direct effects through every norm in the path, each norm's scale taken from "
                "the clean run at the position and held fixed"
            ),
        }


def _eps(module: Any, default: float) -> float:
    for m in (module, getattr(module, "_original_component", None)):
        for name in ("eps", "variance_epsilon", "epsilon"):
            v = getattr(m, name, None)
            if isinstance(v, int | float):
                return float(v)
    return default


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5 * float(b.abs().max())))


@torch.no_grad()
def probe_norm(module: Any, d_model: int, where: str, default_eps: float = 1e-5) -> NormSpec:
    """Classify ``module`` as identity, RMSNorm or LayerNorm by calling it, and read its gain."""
    try:
        p = next(module.parameters())
        dtype, device = p.dtype, p.device
    except (StopIteration, AttributeError):
        dtype, device = torch.float32, torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 1, d_model, generator=g) * 3 + 0.5).to(device, dtype)
    try:
        y = module(x)
    except Exception as e:
        raise MultiNeuronError(f"cannot call the norm at {where} to read its layout: {e}") from e
    if not isinstance(y, Tensor) or y.shape != x.shape:
        raise MultiNeuronError(
            f"the norm at {where} returned {type(y).__name__} "
            f"{tuple(getattr(y, 'shape', ()))}; expected a tensor shaped like its input"
        )
    if _close(y, x):
        return NormSpec("none", None, 0.0, where)
    eps = _eps(module, default_eps)
    ones = torch.ones(1, 1, d_model, device=device, dtype=dtype)
    gain = (module(ones) * (1 + eps) ** 0.5)[0, 0].double()
    rms = NormSpec("rms", gain, eps, where)
    if _close(rms.apply_linear(x.double()) / rms.scale(x.double())[..., None], y):
        return NormSpec("rms", gain.float(), eps, where)
    bias = module(torch.zeros_like(ones))[0, 0].double()
    z = torch.tensor([(-1.0) ** i * (1 + i % 3) for i in range(d_model)], dtype=torch.float64)
    zc = z - z.mean()
    ln_scale = (zc.pow(2).mean() + eps).sqrt()
    if bool((zc.abs() > 1e-6).all()):
        gain = (module(z.to(device, dtype)[None, None])[0, 0].double() - bias) * ln_scale / zc
        ln = NormSpec("ln", gain, eps, where)
        if _close(ln.apply_linear(x.double()) / ln.scale(x.double())[..., None] + bias, y):
            return NormSpec("ln", gain.float(), eps, where)
    orig = getattr(module, "_original_component", module)
    raise MultiNeuronError(
        f"the scorer does not know the norm at {where} ({type(orig).__name__}): its output is "
        "neither its input, an RMSNorm nor a LayerNorm of its input, so the direct effect of a "
        "neuron through it cannot be computed; refusing to guess"
    )


def _unbridged_norms(model: Any) -> list[str]:
    """Norm modules of an HF decoder layer that the bridge does not expose as ln1/ln2(_post):
    a layout the scorer does not know."""
    out = []
    for li, block in enumerate(getattr(model, "blocks", [])):
        orig = getattr(block, "_original_component", None)
        if orig is None:
            continue
        bridged = [getattr(block, n, None) for n in _BRIDGED_NORMS]
        known = {id(c) for c in bridged if c is not None}
        known |= {id(getattr(c, "_original_component", None)) for c in bridged if c is not None}
        for name, child in orig.named_children():
            if "norm" in type(child).__name__.lower() and id(child) not in known:
                out.append(f"blocks.{li}: {name} ({type(child).__name__})")
        if li == 0 and out:
            break
    return out


def detect_processing(model: Any) -> tuple[str, ...]:
    """Weight processing done to the model (TransformerLens' folding / centring), if any."""
    found = []
    if getattr(model, "compatibility_mode", False):
        found.append("TransformerBridge compatibility mode (folded norms, centred weights)")
    norm_type = getattr(getattr(model, "cfg", None), "normalization_type", None)
    if norm_type in ("LNPre", "RMSPre"):
        found.append(
            f"fold_ln (normalization_type {norm_type}: norm weights folded into the next layer)"
        )
    try:
        W_out = model.W_out.detach().double()
        if bool((W_out.mean(-1).abs() <= 1e-7 * W_out.abs().amax(-1).clamp_min(1e-30)).all()):
            found.append("center_writing_weights (every W_out row has zero mean)")
        W_U = model.W_U.detach()
        if W_U.shape[-1] > 1 and bool(
            (W_U.double().mean(-1).abs() <= 1e-7 * W_U.abs().amax().double()).all()
        ):
            found.append("center_unembed (W_U has zero mean over the vocabulary)")
    except Exception:  # noqa: BLE001 - weights are read and checked elsewhere
        pass
    return tuple(found)


def norm_path(model: Any) -> NormPath:
    """The norms between every layer's MLP neurons and the logits of ``model``."""
    cfg = model.cfg
    d_model = int(cfg.d_model)
    eps = float(getattr(cfg, "eps", 1e-5) or 1e-5)
    unknown = _unbridged_norms(model)
    if unknown:
        raise MultiNeuronError(
            f"the scorer does not know this model's norm layout: {unknown} is a norm that "
            "TransformerLens does not expose as ln1/ln1_post/ln2/ln2_post, so where it sits "
            "between the MLP and the logits is unknown; refusing to guess"
        )
    blocks = getattr(model, "blocks", None)
    post = None
    if blocks is not None and len(blocks) and hasattr(blocks[0], "ln2_post"):
        post = tuple(
            probe_norm(b.ln2_post, d_model, f"blocks.{i}.ln2_post", eps)
            for i, b in enumerate(blocks)
        )
    ln_final = getattr(model, "ln_final", None)
    if ln_final is None:
        final = NormSpec("none", None, 0.0, "ln_final")
    else:
        final = probe_norm(ln_final, d_model, "ln_final", eps)
    cap = getattr(cfg, "output_logits_soft_cap", None)
    softcap = float(cap) if isinstance(cap, int | float) and cap > 0 else None
    return NormPath(post, final, softcap, detect_processing(model))
