"""Neuron importance: contribution score, effective score and integrated gradients.

* contribution: the norm of what a neuron adds to the residual stream,
  ``|a_i| * ||W_write[l, i]|| / s_post`` (``W_write = gain_post * W_out[l, i]`` and ``s_post``
  the post-MLP norm's scale at the position, where the architecture has that norm; otherwise
  the paper's ``|a_i| * ||W_out[l, i]||``);
* effective: its direct effect on the logit of the answer's *first token* ``t`` (the first
  token of the gold answer as it continues the prompt), through every norm in the path:
  ``a_i * (W_write[l, i] . (gain_final * W_U[:, t])) / (s_post * s_final)``; without norms the
  paper's ``a_i * (W_out[l, i] . W_U[:, t])``. Norm scales come from the clean run and are held
  fixed (:mod:`tl_multineuron.backends.norms`); for models that tie embeddings, ``W_E[t]`` may
  stand for ``W_U[:, t]`` (as the paper did on BLOOM);
* integrated gradients on the activations at the last prompt position (Dai et al.'s
  knowledge-neuron recipe): target the probability, log-probability or logit of ``t``,
  baseline zero (or a mean activation), ``steps`` points batched into one forward/backward
  pass per prompt and layer, all neurons of the layer at once; every result carries its
  completeness gap (:mod:`tl_multineuron.attribution.knowledge` holds the full Dai et al. preset).

Scores use the model's unprocessed weights (:mod:`tl_multineuron.backends.weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..backends.devices import model_device
from ..backends.logits import output_width
from ..backends.models import check_model
from ..backends.weights import ModelWeights
from ..errors import MultiNeuronError
from ..sharing.recording import answer_first_token, encode, last_position_unembed_hooks

IG_METHODS = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)
IG_TARGETS = ("logprob", "logit", "prob")


def _layer_index(weights: ModelWeights, layers: Sequence[int] | None) -> list[int]:
    return list(range(weights.W_out.shape[0])) if layers is None else list(layers)


def contribution_scores(
    acts: Float[Tensor, "*batch layer d_mlp"],
    weights: ModelWeights,
    layers: Sequence[int] | None = None,
    post_scale: Float[Tensor, "*batch layer"] | None = None,
) -> Float[Tensor, "*batch layer d_mlp"]:
    """The norm of each neuron's write to the residual stream: ``|a| * ||W_write row||``,
    divided by the post-MLP norm's scale where there is one (``post_scale``; by default read
    from ``acts``, which must then hold every neuron of each layer)."""
    idx = _layer_index(weights, layers)
    out = acts.abs() * weights.write_norms[idx].to(acts.device, acts.dtype)
    if weights.has_post_norm:
        s = weights.post_scale(acts, idx) if post_scale is None else post_scale
        out = out / s.to(out.device, out.dtype)[..., None]
    return out


def effective_scores(
    acts: Float[Tensor, "batch layer d_mlp"],
    answer_tokens: Int[Tensor, " batch"],
    weights: ModelWeights,
    layers: Sequence[int] | None = None,
    use_embedding: bool = False,
    post_scale: Float[Tensor, "batch layer"] | None = None,
    final_scale: Float[Tensor, " batch"] | None = None,
) -> Float[Tensor, "batch layer d_mlp"]:
    """Each neuron's direct effect on the answer token's logit: ``a * (W_write row . u_t)``
    with ``u_t`` the unembedding column (or tied embedding) seen through the final norm's
    gain, divided by the post-MLP and final norms' scales. ``final_scale`` (the final norm's
    scale at the position, :meth:`~tl_multineuron.backends.norms.NormSpec.scale` of the last
    residual) is required when the model has a final norm. One ``[layer, d_mlp]`` projection
    per prompt; no d_mlp x vocab product."""
    idx = _layer_index(weights, layers)
    W = weights.write[idx]
    u = weights.read_directions(answer_tokens, use_embedding).to(W.dtype)  # [b, d_model]
    proj = torch.einsum("lnd,bd->bln", W, u.to(W.device)).to(acts.device, acts.dtype)
    if weights.has_post_norm:
        s = weights.post_scale(acts, idx) if post_scale is None else post_scale
        proj = proj / s.to(proj.device, proj.dtype)[..., None]
    if weights.has_final_norm:
        if final_scale is None:
            raise MultiNeuronError(
                f"this model has a final norm ({weights.norms.final.describe()}): the direct "
                "effect needs its scale at each position (final_scale, e.g. "
                "weights.norms.final.scale(last_residual)); attribute() records it"
            )
        if final_scale.shape != (acts.shape[0],):
            raise MultiNeuronError(
                f"final_scale has shape {tuple(final_scale.shape)}; expected ({acts.shape[0]},)"
            )
        proj = proj / final_scale.to(proj.device, proj.dtype)[:, None, None]
    return acts * proj


def answer_token_ids(
    model: Any, prompts: Sequence[str], answers: Sequence[str], labels: Sequence[str]
) -> Int[Tensor, " batch"]:
    """First token of each answer as it continues its prompt; a clear error when an answer
    tokenizes to nothing."""
    out = [
        answer_first_token(model, p, a, lab)
        for p, a, lab in zip(prompts, answers, labels, strict=True)
    ]
    return torch.tensor(out, dtype=torch.long)


# -- integrated gradients ------------------------------------------------------------------
def ig_alphas(steps: int, method: str = "gausslegendre") -> tuple[Tensor, Tensor]:
    """Interpolation points in [0, 1] and quadrature weights (summing to 1)."""
    if not isinstance(steps, int) or steps < 1:
        raise MultiNeuronError(f"steps must be an int >= 1, got {steps!r}")
    if method not in IG_METHODS:
        raise MultiNeuronError(f"IG method {method!r}; expected one of {IG_METHODS}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return torch.tensor((x + 1) / 2), torch.tensor(w / 2)
    k = torch.arange(steps, dtype=torch.float64)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise MultiNeuronError("riemann_trapezoid needs steps >= 2")
        a = k / (steps - 1)
        w = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (steps - 1)
        return a, w
    shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (k + shift) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


@dataclass(frozen=True)
class IGResult:
    """IG attributions of one prompt at one layer, with the completeness check."""

    attributions: Float[Tensor, " d_mlp"]
    f_input: float
    f_baseline: float
    layer: int
    target: str
    method: str
    steps: int

    @property
    def completeness_gap(self) -> float:
        """``sum(attributions) - (f(input) - f(baseline))``."""
        return float(self.attributions.sum()) - (self.f_input - self.f_baseline)

    @property
    def relative_gap(self) -> float:
        return abs(self.completeness_gap) / max(abs(self.f_input - self.f_baseline), 1e-12)


def _target(logits: Tensor, token: int, target: str) -> Tensor:
    if target == "logit":
        return logits[:, token]
    if target == "prob":
        return torch.softmax(logits.float(), dim=-1)[:, token].to(logits.dtype)
    return torch.log_softmax(logits.float(), dim=-1)[:, token].to(logits.dtype)


def integrated_gradients(
    model: Any,
    prompt: str,
    answer_token: int,
    layer: int,
    *,
    steps: int = 20,
    baseline: Float[Tensor, " d_mlp"] | None = None,
    target: str = "logprob",
    method: str = "gausslegendre",
    hook: str = "mlp.hook_post",
) -> IGResult:
    """IG of ``target`` w.r.t. the activations of every neuron of ``layer`` at the last
    prompt position. The ``steps`` interpolation points, the input and the baseline run as
    one batch: one forward and one backward pass."""
    if target not in IG_TARGETS:
        raise MultiNeuronError(f"IG target {target!r}; expected one of {IG_TARGETS}")
    if not 0 <= layer < model.cfg.n_layers:
        raise MultiNeuronError(
            f"layer {layer} does not exist: the model has {model.cfg.n_layers} layers"
        )
    check_model(model, [f"blocks.{layer}.{hook}"])
    vocab = output_width(model)
    if not 0 <= int(answer_token) < vocab:
        raise MultiNeuronError(
            f"answer token {answer_token} is outside the vocabulary (0..{vocab - 1}): no "
            f"{target} target for it"
        )
    alphas, wts = ig_alphas(steps, method)
    device = model_device(model)
    ids = encode(model, prompt)
    rows = steps + 2  # interpolation points, then input (alpha=1) and baseline (alpha=0)
    tokens = torch.tensor([ids] * rows, device=device)
    last = len(ids) - 1
    d_mlp = model.cfg.d_mlp
    base = torch.zeros(d_mlp, device=device) if baseline is None else baseline.to(device)
    if base.shape != (d_mlp,):
        raise MultiNeuronError(f"IG baseline has shape {tuple(base.shape)}; expected ({d_mlp},)")
    all_alpha = torch.cat([alphas, torch.tensor([1.0, 0.0], dtype=torch.float64)])
    state: dict[str, Tensor] = {}

    def patch(act: Tensor, hook: Any) -> Tensor:
        a = act[0, last].detach()
        al = all_alpha.to(act.device, act.dtype)[:, None]
        scaled = (base.to(act.dtype) + al * (a - base.to(act.dtype))).requires_grad_(True)
        state["a"], state["scaled"] = a, scaled
        act = act.clone()
        act[:, last] = scaled
        return act

    with (
        torch.enable_grad(),
        model.hooks(
            fwd_hooks=[(f"blocks.{layer}.{hook}", patch), *last_position_unembed_hooks(model)]
        ),
    ):
        logits = model(tokens)[:, -1]
        f = _target(logits, answer_token, target)
        (grads,) = torch.autograd.grad(f[:steps].sum(), state["scaled"])
    g = grads[:steps].double()
    avg = (wts.to(g.device)[:, None] * g).sum(0)
    attr = ((state["a"] - base).double() * avg).float().detach().cpu()
    f = f.detach()
    return IGResult(attr, float(f[steps]), float(f[steps + 1]), layer, target, method, steps)
