"""The scorer's per-position metrics over the whole vocabulary, one vocabulary block at a time.

For final hidden states and gold tokens: the gold's log-probability, whether it is the argmax,
(where asked) its rank -- how many tokens score strictly higher -- and the argmax token. The
full path unembeds a chunk of positions against every token at once and then reads the
``[positions, d_vocab]`` logits three more times (max, exp, sum): on a 262k vocabulary that is
a gigabyte per 1,024 positions, written and re-read from memory. Where the model's unembedding
is a plain linear map (:func:`linear_unembedding`) the logits are made and consumed one block
of the vocabulary at a time, small enough to stay in cache: a running max and argmax, a running
sum of exponentials rescaled as the max grows (the log-sum-exp), and the gold's logit gathered
from the block that holds it. The same values up to float rounding of the sum; on the
embedded Gemma 3 a scorer call was 1.10-1.17x faster
(``benchmarks/bench_scorer_conditions.py --compare metrics``) and the main job's facts
conditions 1.40x (docs/experiments.md).

Ranks stay exact: a token is compared against the gold's logit as the unembedding produced
it, which is known only once its block has run. Each block counts the tokens above the gold's
logit computed directly (a dot product) by more than that dot product's error bound, and keeps
the few within the bound; those are compared against the exact gold logit at the end.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..backends.logits import logit_slope, logit_transform, output_logits
from ..errors import MultiNeuronError

#: vocabulary columns per block: ``rows x BLOCK`` float32 logits stay in a CPU's L3 cache
BLOCK = 8192
#: positions per block of rows
ROWS = 512

_LINEAR: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _unembed_hooked(model: Any) -> bool:
    """Whether a hook is attached to the unembedding (the full path honours it)."""
    u = getattr(model, "unembed", None)
    if u is None:
        return True
    return any(
        getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None)
        for m in u.modules()
    )


def linear_unembedding(model: Any) -> tuple[Tensor, Tensor | None] | None:
    """``(W_U [d_model, d_vocab], b_U [d_vocab] or None)`` where ``model.unembed(h)`` is
    ``h @ W_U + b_U`` (probed once per model on random states; ``b_U`` ``None`` where it is
    all zeros), in float32 or float64, with no hook on the unembedding, an output transform
    that is a scale or soft-cap and float32 matmuls at precision 'highest' (no TF32 or
    bfloat16 inputs: the rank band assumes IEEE GEMMs); else ``None``: the scorer then
    unembeds through ``model.unembed``, the whole vocabulary at once (:func:`metrics_path`
    says which and why)."""
    return None if _why_full(model) else _unembedding_weights(model)


def _unembedding_weights(model: Any) -> tuple[Tensor, Tensor | None]:
    W, b = model.W_U, getattr(model, "b_U", None)
    if isinstance(b, Tensor) and not bool(b.any()):
        b = None
    return W, b


def _why_full(model: Any) -> str:
    """Why the metrics must take the whole-vocabulary path ('' where the blocked path holds)."""
    if _unembed_hooked(model):
        return "a hook on the unembedding"
    W, b = getattr(model, "W_U", None), getattr(model, "b_U", None)
    if not isinstance(W, Tensor) or W.ndim != 2 or W.dtype not in (torch.float32, torch.float64):
        return "no float32/float64 W_U"  # half-precision GEMMs may accumulate in half
    precision = torch.get_float32_matmul_precision()
    tf32 = W.is_cuda and bool(getattr(torch.backends.cuda.matmul, "allow_tf32", False))
    if precision != "highest" or tf32:  # inputs rounded to TF32/bfloat16: no bound for ranks
        return f"float32 matmul precision {precision!r}" + (", TF32 allowed" if tf32 else "")
    ok = _LINEAR.get(model)
    if ok is None:
        ok = _probe_linear(model, W, b)
        _LINEAR[model] = ok
    if not ok:
        return "the unembedding is not h @ W_U + b_U"
    try:
        logit_slope(model)
    except MultiNeuronError:  # a transform that is not a scale near 0: no bound on it
        return "an output transform that is not a scale or soft-cap"
    return ""


def _probe_linear(model: Any, W: Tensor, b: Tensor | None) -> bool:
    """Whether ``model.unembed(h)`` is ``h @ W + b``: exactly (bit for bit) at 0 and at scaled
    basis vectors, where a GEMM is exact (one nonzero term), so a hidden bias or a curve as
    small as one rounding shows; and at random states within a GEMM's rounding bound."""
    d = W.shape[0]
    g = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randperm(d, generator=g)[:8]
    basis = torch.zeros(1 + 3 * len(idx), d, dtype=W.dtype)
    for k, scale in enumerate((1.0, 2.0, -4.0)):  # powers of two: products exact too
        basis[1 + k * len(idx) + torch.arange(len(idx)), idx] = scale
    rand = torch.randn(6, d, generator=g).to(W.dtype)
    h = torch.cat([basis, rand]).to(W.device)
    with torch.inference_mode():
        want = model.unembed(h[None])[0]
        if tuple(want.shape) != (h.shape[0], W.shape[1]):
            return False
        got = h @ W + (0 if b is None else b)
        n = basis.shape[0]
        if not torch.equal(got[:n], want[:n].to(got.dtype)):
            return False
        # random states: each GEMM within d * eps * (|h| @ |W|) of the exact value (x4)
        mag = h[n:].abs() @ W.abs() + (0 if b is None else b.abs())
        tol = 4 * torch.finfo(W.dtype).eps * (d + 2) * mag.double()
        diff = (got[n:].double() - want[n:].double()).abs()
        same_inf = got[n:] == want[n:]  # masked tokens: equal infinities
        return bool((same_inf | (diff <= tol)).all())


def metrics_path(model: Any) -> str:
    """Which path :func:`answer_metrics` takes on ``model`` (recorded in run files):
    ``'vocabulary-blocked'``, or ``'whole-vocabulary (<why>)'``."""
    why = _why_full(model)
    return f"whole-vocabulary ({why})" if why else "vocabulary-blocked"


def answer_metrics(
    model: Any,
    h: Float[Tensor, "p d_model"],
    gold: Int[Tensor, " p"],
    first: Bool[Tensor, " p"],
    chunk: int = 1024,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per position (on the CPU): log-prob of ``gold`` (float64), whether it is the argmax,
    (where ``first``) how many tokens score strictly higher (0 elsewhere), and the argmax
    token, all from the model's own output logits (:func:`~..backends.logits.output_logits`).
    ``chunk``: positions unembedded at once on the full path."""
    lin = linear_unembedding(model)
    if lin is None:
        return _full(model, h, gold, first, chunk)
    # the output transform and its slope (>= 1 widens the rank bound), read once per call
    fn, slope = logit_transform(model), max(1.0, abs(logit_slope(model)))
    out = [_blocked(*lin, fn, slope, h[s : s + ROWS], gold[s : s + ROWS], first[s : s + ROWS])
           for s in range(0, h.shape[0], ROWS)]  # fmt: skip
    return tuple(torch.cat(parts).cpu() for parts in zip(*out, strict=True))  # type: ignore[return-value]


def _full(model: Any, h: Tensor, gold: Tensor, first: Tensor, chunk: int) -> tuple:
    lp, top, rank, args = [], [], [], []
    for s in range(0, h.shape[0], chunk):
        with torch.inference_mode():
            # the model's own output logits: unembedding, then its scale / soft-cap
            z = output_logits(model, h[None, s : s + chunk])[0].float()
            g = gold[s : s + chunk, None]
            zg = z.gather(1, g)
            f = first[s : s + chunk]
            r = torch.zeros(len(g), dtype=torch.long, device=z.device)
            r[f] = (z[f] > zg[f]).sum(-1)
            rank.append(r)
            zmax, arg = z.max(-1, keepdim=True)  # one pass: the argmax and the lse shift
            top.append(arg[:, 0] == g[:, 0])
            args.append(arg[:, 0])
            lse = zmax + z.sub_(zmax).exp_().sum(-1, keepdim=True).log()  # z is ours
            lp.append((zg - lse)[:, 0].double())
    return torch.cat(lp).cpu(), torch.cat(top).cpu(), torch.cat(rank).cpu(), torch.cat(args).cpu()


@torch.inference_mode()
def _blocked(
    W: Tensor,
    b: Tensor | None,
    fn: Callable[[Tensor], Tensor] | None,
    slope: float,
    h: Tensor,
    gold: Tensor,
    first: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    dev, P, V = h.device, h.shape[0], W.shape[1]
    h = h.to(W.dtype)
    gold, first = gold.to(dev), first.to(dev)
    fi = first.nonzero().flatten()
    # the gold logit computed directly, and a bound on how far the GEMM's value can be from it
    # (accumulation over d_model terms, the output's rounding, the transform's slope)
    Wg = W[:, gold[fi]].T.double()
    hf = h[fi].double()
    direct = (hf * Wg).sum(-1) + (0 if b is None else b[gold[fi]].double())
    mag = (hf.abs() * Wg.abs()).sum(-1) + direct.abs()
    eps = torch.finfo(W.dtype).eps
    tol = 4 * eps * (h.shape[1] + 2) * mag * slope
    tol = torch.where(direct.isfinite(), tol, 0.0)  # a masked gold (-inf): exact already
    if fn is not None:  # in the GEMM's dtype, as the block's logits are transformed
        direct = fn(direct.to(W.dtype)).double()
    lo, hi = (direct - tol).float()[:, None], (direct + tol).float()[:, None]
    m = torch.full((P,), -torch.inf, device=dev)
    s = torch.zeros(P, device=dev)
    arg = torch.zeros(P, dtype=torch.long, device=dev)
    zg = torch.full((P,), torch.nan, device=dev)
    above = torch.zeros(len(fi), dtype=torch.long, device=dev)
    near_row, near_val = [], []
    for v in range(0, V, BLOCK):
        w = min(BLOCK, V - v)
        z = h @ W[:, v : v + w]
        if b is not None:
            z += b[v : v + w]
        z = (z if fn is None else fn(z)).float()
        if len(fi):  # ranks: tokens clearly above the gold, and those too close to tell yet
            zf = z[fi]
            above += (zf > hi).sum(-1)
            r, c = ((zf >= lo) & (zf <= hi)).nonzero(as_tuple=True)
            near_row.append(r)
            near_val.append(zf[r, c])
        at = ((gold >= v) & (gold < v + w)).nonzero().flatten()
        zg[at] = z[at, gold[at] - v]
        bm, ba = z.max(-1)
        grew = bm > m
        arg = torch.where(grew, ba + v, arg)
        new = torch.maximum(m, bm)
        shift = torch.where(torch.isneginf(new), 0.0, new)
        s = s * torch.where(torch.isneginf(m), 0.0, (m - shift).exp())
        s += z.sub_(shift[:, None]).exp_().sum(-1)
        m = new
    rank = torch.zeros(P, dtype=torch.long, device=dev)
    if len(fi):
        r, val = torch.cat(near_row), torch.cat(near_val)
        above.index_add_(0, r, (val > zg[fi][r]).long())
        rank[fi] = above
    lse = torch.where(torch.isneginf(m), m, m + s.log())
    lp = zg.double() - lse.double()
    return lp, arg == gold, rank, arg
