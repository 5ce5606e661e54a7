"""Act-Prob-90p's statistics, as its authors compute them (csalt-research/LangSpecificNeurons;
the first author's copy is soumenkm/LangSpecificNeurons, ``code/activation.py``).

Per language, over batches of that language's text:

1. **threshold** (``mean_p90_act``): for every batch, each neuron's ``q``-quantile (0.9) of its
   values at the batch's positions (``torch.quantile``, linear interpolation, float32), then
   the mean of these per-batch quantiles over the batches: a streaming estimate of the
   language's own 90th percentile, exactly as ``activation.py`` computes it;
2. **relevance** (``act_prob_90p``): for every batch, the share of its positions where the
   neuron's value exceeds the language's threshold, stored in float16 as there, then the mean
   over the batches (a second pass over the same text, as there).

The site is the authors': the output of ``gate_proj`` (the gate's pre-activation) on a gated
MLP and of ``dense_h_to_4h`` (the pre-activation) on a plain one: ``mlp.hook_pre`` in both.

One departure, named in docs/specificity.md: the authors' batches are rows padded to 512
tokens, and their statistics average over every position, padding and BOS included; here only
the text's own tokens count (padding is not text of the language; with 512-token rows of short
sentences it would be most of the positions). On rows without padding or BOS (``window='lape'``
with equal batches) the numbers are the authors' bit for bit (tests/test_act_prob.py ports
both functions).

:class:`ActProbStats` accumulates both passes (mergeable: per-batch sums, counts); the
selection (per language, the top ``round(0.00125 * L * d)`` neurons by relevance) is
:func:`~tl_multineuron.experiments.language_sets.act_prob_select`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..backends.models import check_model
from ..backends.sites import GATE_PRE_HOOK
from ..data.corpus import Corpus
from ..errors import MultiNeuronError
from ..files import atomic_write, read_torch_dict
from .accumulator import check_same_origin, merged_fingerprints
from .token_batches import Window, iter_token_batches, parse_window
from .token_stats import token_meta

FORMAT_VERSION = 1
#: the authors' site: the gate's (or the plain MLP's) pre-activation
ACT_PROB_SITE = GATE_PRE_HOOK
#: torch.quantile's largest input (it refuses more elements)
_QUANTILE_MAX = 2**24


def batch_quantile(acts: Float[Tensor, "token layer neuron"], q: float) -> Tensor:
    """Each (layer, neuron)'s ``q``-quantile over the batch's tokens: ``torch.quantile`` on
    float32 as ``activation.py`` calls it, in column blocks within its size limit (quantiles
    of separate columns do not interact)."""
    n, L, D = acts.shape
    if n > _QUANTILE_MAX:
        raise MultiNeuronError(f"a batch of {n} tokens; at most {_QUANTILE_MAX} per quantile")
    flat = acts.reshape(n, L * D).float()
    step = max(1, _QUANTILE_MAX // n)
    out = torch.cat(
        [torch.quantile(flat[:, s : s + step], q, dim=0) for s in range(0, L * D, step)]
    )
    return out.view(L, D)


@dataclass
class ActProbStats:
    """Both passes of Act-Prob-90p per language (see the module docstring):
    ``quantile_sum`` / ``quantile_batches`` (pass 1), ``thresholds`` (their mean, fixed by
    :meth:`fix_thresholds`), ``share_sum`` / ``share_batches`` (pass 2)."""

    languages: tuple[str, ...]
    n_layers: int
    d_mlp: int
    q: float = 0.9
    site: str = ACT_PROB_SITE
    quantile_sum: Float[Tensor, "lang layer neuron"] | None = None
    quantile_batches: Int[Tensor, " lang"] | None = None
    thresholds: Float[Tensor, "lang layer neuron"] | None = None
    share_sum: Float[Tensor, "lang layer neuron"] | None = None
    share_batches: Int[Tensor, " lang"] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        if not 0 < self.q < 1:
            raise MultiNeuronError(f"act-prob-90p: quantile {self.q}; expected a number in (0, 1)")
        N, L, D = len(self.languages), self.n_layers, self.d_mlp
        for name, shape, dtype in (
            ("quantile_sum", (N, L, D), torch.float32),
            ("share_sum", (N, L, D), torch.float32),
            ("quantile_batches", (N,), torch.long),
            ("share_batches", (N,), torch.long),
        ):
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(shape, dtype=dtype))
            if tuple(getattr(self, name).shape) != shape:
                raise MultiNeuronError(
                    f"act-prob statistics: {name} of shape "
                    f"{tuple(getattr(self, name).shape)}; expected {shape}"
                )
        if self.thresholds is not None and tuple(self.thresholds.shape) != (N, L, D):
            raise MultiNeuronError(f"act-prob thresholds of shape {tuple(self.thresholds.shape)}")

    @property
    def n_items(self) -> int:
        """Batches seen in the current pass (the accumulator protocol's size)."""
        b = self.share_batches if self.thresholds is not None else self.quantile_batches
        return int(b.sum())

    def _index(self, lang: str, acts: Tensor) -> int:
        if lang not in self.languages:
            raise MultiNeuronError(f"language {lang!r} is not among {list(self.languages)}")
        if acts.ndim != 3 or tuple(acts.shape[1:]) != (self.n_layers, self.d_mlp):
            raise MultiNeuronError(
                f"activations of shape {tuple(acts.shape)}; expected [token, "
                f"layer={self.n_layers}, neuron={self.d_mlp}]"
            )
        if acts.shape[0] == 0:
            raise MultiNeuronError(f"language {lang!r}: a batch without tokens")
        return self.languages.index(lang)

    def add_quantiles(self, lang: str, acts: Float[Tensor, "token layer neuron"]) -> None:
        """Pass 1: one batch of ``lang``'s tokens."""
        if self.thresholds is not None:
            raise MultiNeuronError("act-prob: the thresholds are fixed; pass 1 is over")
        i = self._index(lang, acts)
        self.quantile_sum[i] += batch_quantile(acts, self.q)
        self.quantile_batches[i] += 1

    def fix_thresholds(self) -> None:
        """End pass 1: each language's threshold = the mean of its batches' quantiles."""
        empty = self._without_batches(self.quantile_batches)
        if empty:
            raise MultiNeuronError(f"act-prob-90p: no batch of text for language(s) {empty}")
        self.thresholds = self._batch_mean(self.quantile_sum, self.quantile_batches)

    def add_shares(self, lang: str, acts: Float[Tensor, "token layer neuron"]) -> None:
        """Pass 2: one batch's share of tokens above the language's threshold (float16 as
        ``activation.py`` stores it), summed in float32."""
        if self.thresholds is None:
            raise MultiNeuronError("act-prob: pass 2 needs the thresholds (fix_thresholds)")
        i = self._index(lang, acts)
        share = (acts > self.thresholds[i]).to(torch.float16).mean(0)
        self.share_sum[i] += share
        self.share_batches[i] += 1

    def relevance(self) -> Float[Tensor, "lang layer neuron"]:
        """Per language, the mean over its batches of the share above its threshold."""
        empty = self._without_batches(self.share_batches)
        if self.thresholds is None or empty:
            raise MultiNeuronError(
                f"act-prob-90p: relevance needs both passes (no pass-2 batch for {empty})"
            )
        return self._batch_mean(self.share_sum, self.share_batches)

    def _without_batches(self, batches: Tensor) -> list[str]:
        return [x for x, n in zip(self.languages, batches.tolist(), strict=True) if not n]

    @staticmethod
    def _batch_mean(total: Tensor, batches: Tensor) -> Tensor:
        """``total / batches`` per language in ``total``'s dtype (float32), as
        ``activation.py`` divides its float32 sums by the batch count."""
        return total / batches.to(total.dtype)[:, None, None]

    # -- the accumulator protocol -----------------------------------------------------------------
    def check_compatible(self, other: ActProbStats, verb: str = "merge") -> None:
        for attr in ("languages", "n_layers", "d_mlp", "q", "site"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a != b:
                raise MultiNeuronError(
                    f"cannot {verb} act-prob statistics of different {attr}: {a!r} vs {b!r}"
                )
        same_thr = (self.thresholds is None and other.thresholds is None) or (
            self.thresholds is not None
            and other.thresholds is not None
            and torch.equal(self.thresholds, other.thresholds)
        )
        if not same_thr:
            raise MultiNeuronError(
                f"cannot {verb} act-prob statistics of different thresholds "
                "(pass 2 of both must follow the same pass 1)"
            )
        check_same_origin(self.meta, other.meta, "act-prob statistics", verb)

    def merge(self, other: ActProbStats) -> ActProbStats:
        """Sums and counts added (shards of one pass; both with the same thresholds in pass 2)."""
        self.check_compatible(other)
        meta = {**self.meta, "dataset_fingerprints": merged_fingerprints(self.meta, other.meta)}
        meta.pop("dataset_fingerprint", None)
        return ActProbStats(
            self.languages,
            self.n_layers,
            self.d_mlp,
            self.q,
            self.site,
            self.quantile_sum + other.quantile_sum,
            self.quantile_batches + other.quantile_batches,
            self.thresholds,
            self.share_sum + other.share_sum,
            self.share_batches + other.share_batches,
            meta,
        )

    def equals(self, other: ActProbStats) -> bool:
        tensors = ("quantile_sum", "quantile_batches", "share_sum", "share_batches")
        same = all(torch.equal(getattr(self, t), getattr(other, t)) for t in tensors)
        thr = (self.thresholds is None) == (other.thresholds is None) and (
            self.thresholds is None or torch.equal(self.thresholds, other.thresholds)
        )
        return (
            same
            and thr
            and (self.languages, self.n_layers, self.d_mlp, self.q, self.site)
            == (other.languages, other.n_layers, other.d_mlp, other.q, other.site)
        )

    def save(self, path: str | Path) -> None:
        """Lossless, atomic."""
        state = {
            "format_version": FORMAT_VERSION,
            "languages": list(self.languages),
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "q": self.q,
            "site": self.site,
            "quantile_sum": self.quantile_sum,
            "quantile_batches": self.quantile_batches,
            "thresholds": self.thresholds,
            "share_sum": self.share_sum,
            "share_batches": self.share_batches,
            "meta_json": json.dumps(self.meta),
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path) -> ActProbStats:
        s = read_torch_dict(path, "act-prob statistics", version=FORMAT_VERSION)
        return cls(
            tuple(s["languages"]),
            int(s["n_layers"]),
            int(s["d_mlp"]),
            float(s["q"]),
            s["site"],
            s["quantile_sum"],
            s["quantile_batches"],
            s["thresholds"],
            s["share_sum"],
            s["share_batches"],
            json.loads(s["meta_json"]),
        )


def record_act_prob(
    model: Any,
    corpus: Corpus,
    *,
    q: float = 0.9,
    window: Window = None,
    batch_size: int = 8,
    attention: str = "auto",
    progress: bool = False,
) -> ActProbStats:
    """Both of Act-Prob-90p's passes over ``corpus`` (see the module docstring): the same rows
    in the same batches twice, at the authors' site."""
    parse_window(window)
    L, D = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    check_model(model, [f"blocks.{x}.{ACT_PROB_SITE}" for x in range(L)])
    meta = {**token_meta(model, corpus, ACT_PROB_SITE, window, attention), "batch_size": batch_size}
    stats = ActProbStats(corpus.languages, L, D, q, ACT_PROB_SITE, meta=meta)
    hooks = {"pre": (ACT_PROB_SITE, None)}
    kw = {"window": window, "batch_size": batch_size, "attention": attention, "progress": progress}
    for lang, got in iter_token_batches(model, corpus, hooks, desc="act-prob: quantiles", **kw):
        stats.add_quantiles(lang, got["pre"])
    stats.fix_thresholds()
    for lang, got in iter_token_batches(model, corpus, hooks, desc="act-prob: relevance", **kw):
        stats.add_shares(lang, got["pre"])
    return stats
