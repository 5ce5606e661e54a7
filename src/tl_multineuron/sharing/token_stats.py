"""Token-level activation statistics over running text, as LAPE counts them.

LAPE (Tang et al. 2024, RUCAIBox/Language-Specific-Neurons ``activation.py``) counts, per
language, on how many tokens of a running-text corpus each neuron is active (``over_zero``) and
how many tokens there were (``n``); ``over_zero / n`` is the activation probability its
selection reads. :class:`TokenStats` holds exactly those counts per language (and, for
Act-Prob-90p, an :class:`~tl_multineuron.sharing.histogram.ActivationHistogram` of every
token's activation), streamed batch by batch and mergeable (shards, resume): memory does not
grow with the corpus.

Site (:func:`token_site`): LAPE's "active" on a gated MLP is ``act(gate) > 0``, read before the
up projection (``SiLU(gate_proj(x))`` in its Llama path), so ``auto`` picks the ``gate`` site
there, and the output of the activation (``mlp.hook_post``) on a plain MLP (its BLOOM path).

Rows (:func:`token_rows`): with ``window=None`` every text is one row (BOS prepended as the
model expects); with ``window=W`` the texts' tokens are concatenated (no BOS between them) and
cut into rows of ``W`` tokens, each behind a BOS, as LAPE reshapes its token stream to the
model's length; a last, shorter row keeps the remainder (LAPE drops it). The BOS position is
never counted (its activations are the same for every row of every language).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..backends.attention import efficient_attention
from ..backends.devices import model_device
from ..backends.models import check_model, identity_meta, provenance
from ..backends.sites import GATE, site_hook, site_label, site_transforms
from ..data.corpus import Corpus
from ..errors import MultiNeuronError
from ..files import atomic_write
from .accumulator import check_same_origin, merged_fingerprints
from .histogram import ActivationHistogram, default_edges
from .recording import StopForward, encode, get_tokenizer, pad_ids

FORMAT_VERSION = 1


def token_site(model: Any, site: str = "auto") -> str:
    """The site LAPE thresholds: ``gate`` on a gated MLP, ``mlp.hook_post`` on a plain one
    (``auto``); an explicit site is returned as given."""
    if site != "auto":
        return site
    return GATE if getattr(model.cfg, "gated_mlp", False) else "mlp.hook_post"


def corpus_fingerprint(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for lang, texts in corpus.texts.items():
        h.update(lang.encode() + b"\0" + "\n".join(texts).encode() + b"\1")
    return h.hexdigest()[:16]


@dataclass
class TokenStats:
    """Per language: ``n_tokens`` counted and ``over_zero`` ``[lang, layer, neuron]``, the
    tokens on which each neuron's site value was > 0; ``histogram`` (optional) of every
    counted activation. See the module docstring."""

    languages: tuple[str, ...]
    n_layers: int
    d_mlp: int
    site: str
    n_tokens: Int[Tensor, " lang"] | None = None
    over_zero: Int[Tensor, "lang layer neuron"] | None = None
    histogram: ActivationHistogram | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        N, L, D = len(self.languages), self.n_layers, self.d_mlp
        if self.n_tokens is None:
            self.n_tokens = torch.zeros(N, dtype=torch.long)
        if self.over_zero is None:
            self.over_zero = torch.zeros(N, L, D, dtype=torch.long)
        if tuple(self.over_zero.shape) != (N, L, D) or tuple(self.n_tokens.shape) != (N,):
            raise MultiNeuronError(
                f"token statistics of shape {tuple(self.over_zero.shape)} / "
                f"{tuple(self.n_tokens.shape)}; expected ({N}, {L}, {D}) / ({N},)"
            )

    @property
    def n_items(self) -> int:
        """Tokens counted, all languages together (the accumulator protocol's size)."""
        return int(self.n_tokens.sum())

    def update(self, lang: str, acts: Float[Tensor, "token layer neuron"]) -> None:
        """Add one batch of ``lang``'s tokens: their site values ``[token, layer, neuron]``."""
        if lang not in self.languages:
            raise MultiNeuronError(f"language {lang!r} is not among {list(self.languages)}")
        if acts.ndim != 3 or tuple(acts.shape[1:]) != (self.n_layers, self.d_mlp):
            raise MultiNeuronError(
                f"activations of shape {tuple(acts.shape)}; expected [token, layer="
                f"{self.n_layers}, neuron={self.d_mlp}]"
            )
        i = self.languages.index(lang)
        self.over_zero[i] += (acts > 0).sum(0).cpu()
        self.n_tokens[i] += acts.shape[0]
        if self.histogram is not None:
            self.histogram.add_language(i, acts)

    # -- what the selection methods read ----------------------------------------------------------
    def _need_tokens(self) -> None:
        empty = [x for x, n in zip(self.languages, self.n_tokens.tolist(), strict=True) if not n]
        if empty:
            raise MultiNeuronError(f"token statistics: no token counted for language(s) {empty}")

    def probabilities(self) -> Float[Tensor, "lang layer neuron"]:
        """LAPE's ``over_zero / n`` per language, in float32 as there."""
        self._need_tokens()
        return self.over_zero.float() / self.n_tokens.float()[:, None, None]

    def exceed_probability(self, q: float) -> Float[Tensor, "lang layer neuron"]:
        """Per language, the share of its tokens above the neuron's ``q``-quantile pooled over
        the languages (Act-Prob-90p; needs the histogram)."""
        if self.histogram is None:
            raise MultiNeuronError(
                "exceed probabilities need the activation histogram (record with histogram=True)"
            )
        self._need_tokens()
        return self.histogram.exceed_counts(q) / self.n_tokens.double()[:, None, None]

    # -- the accumulator protocol -----------------------------------------------------------------
    def check_compatible(self, other: TokenStats, verb: str = "merge") -> None:
        for attr in ("languages", "n_layers", "d_mlp", "site"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a != b:
                raise MultiNeuronError(f"cannot {verb} token statistics of different {attr}: "
                                       f"{a!r} vs {b!r}")  # fmt: skip
        if (self.histogram is None) != (other.histogram is None):
            raise MultiNeuronError(f"cannot {verb} token statistics with and without a histogram")
        check_same_origin(self.meta, other.meta, "token statistics", verb)

    def merge(self, other: TokenStats) -> TokenStats:
        """One value equal to a single run over both (disjoint texts)."""
        self.check_compatible(other)
        meta = {**self.meta, "dataset_fingerprints": merged_fingerprints(self.meta, other.meta)}
        meta.pop("dataset_fingerprint", None)
        hist = None if self.histogram is None else self.histogram.merge(other.histogram)
        return TokenStats(
            self.languages, self.n_layers, self.d_mlp, self.site,
            self.n_tokens + other.n_tokens, self.over_zero + other.over_zero, hist, meta,
        )  # fmt: skip

    def equals(self, other: TokenStats) -> bool:
        same_hist = (self.histogram is None and other.histogram is None) or (
            self.histogram is not None
            and other.histogram is not None
            and self.histogram.equals(other.histogram)
        )
        return (
            (self.languages, self.n_layers, self.d_mlp, self.site)
            == (other.languages, other.n_layers, other.d_mlp, other.site)
            and torch.equal(self.n_tokens, other.n_tokens)
            and torch.equal(self.over_zero, other.over_zero)
            and same_hist
        )

    def save(self, path: str | Path) -> None:
        """Lossless, atomic (the histogram travels inside)."""
        h = self.histogram
        state = {
            "format_version": FORMAT_VERSION, "languages": list(self.languages),
            "n_layers": self.n_layers, "d_mlp": self.d_mlp, "site": self.site,
            "n_tokens": self.n_tokens, "over_zero": self.over_zero,
            "meta_json": json.dumps(self.meta),
            "hist_edges": None if h is None else h.edges, "hist_counts": None if h is None
            else h.counts,
        }  # fmt: skip
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path) -> TokenStats:
        try:
            s = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as e:
            raise MultiNeuronError(f"token statistics {str(path)!r} do not exist") from e
        if not isinstance(s, dict) or s.get("format_version") != FORMAT_VERSION:
            raise MultiNeuronError(f"{str(path)!r} is not a token-statistics file of this version")
        langs = tuple(s["languages"])
        hist = None
        if s["hist_counts"] is not None:
            hist = ActivationHistogram(
                langs, int(s["n_layers"]), int(s["d_mlp"]), s["hist_edges"], counts=s["hist_counts"]
            )
        return cls(
            langs, int(s["n_layers"]), int(s["d_mlp"]), s["site"], s["n_tokens"], s["over_zero"],
            hist, json.loads(s["meta_json"]),
        )  # fmt: skip


def token_rows(model: Any, corpus: Corpus, lang: str, window: int | None = None) -> list[list[int]]:
    """The rows ``lang``'s texts are run as (see the module docstring); errors name the
    language and the line."""
    tok = get_tokenizer(model)
    bos = getattr(tok, "bos_token_id", None)
    head = [bos] if bos is not None else []
    n_ctx = getattr(model.cfg, "n_ctx", None)
    texts = corpus.texts[lang]
    if window is None:
        rows = []
        for i, text in enumerate(texts):
            ids = encode(model, text, prepend_bos=False)
            if len(ids) < 2:
                raise MultiNeuronError(
                    f"{corpus.name}, language {lang!r}, line {i + 1}: {text[:40]!r} is "
                    f"{len(ids)} token(s); a text needs at least 2"
                )
            rows.append(head + ids)
    else:
        if window < 2:
            raise MultiNeuronError(f"window {window}: need >= 2 tokens")
        stream = [t for text in texts for t in encode(model, text, prepend_bos=False)]
        if len(stream) < 2:
            raise MultiNeuronError(
                f"{corpus.name}, language {lang!r}: the texts hold {len(stream)} token(s)"
            )
        rows = [head + stream[s : s + window] for s in range(0, len(stream), window)]
        if len(rows) > 1 and len(rows[-1]) - len(head) < 2:
            rows.pop()  # a one-token remainder
    longest = max(len(r) for r in rows)
    if n_ctx and longest > n_ctx:
        raise MultiNeuronError(
            f"{corpus.name}, language {lang!r}: a row of {longest} tokens exceeds the model's "
            f"context ({n_ctx}); pack the texts with a window of at most {n_ctx - len(head)}"
        )
    return rows


def _take(
    act: Tensor, k: int, fn: Any, counted: Tensor, got: dict[int, Tensor], n_layers: int
) -> None:
    """Site hook of layer ``k``: keep the counted positions' site values; stop the forward
    once every layer has been read."""
    a = fn(act) if fn is not None else act
    got[k] = a[counted.to(a.device)].float().cpu()
    if len(got) == n_layers:
        raise StopForward
    return None


def record_token_stats(
    model: Any,
    corpus: Corpus,
    *,
    window: int | None = None,
    site: str = "auto",
    batch_size: int = 8,
    histogram: bool = True,
    n_bins: int = 64,
    attention: str = "auto",
    progress: bool = False,
    stats: TokenStats | None = None,
) -> TokenStats:
    """Token-level statistics of every neuron over ``corpus`` (see the module docstring), added
    to ``stats`` when given (a resumed or sharded run). One forward per batch of rows, stopped
    after the last layer; only the counts are kept."""
    site = token_site(model, site)
    L, D = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    layers = list(range(L))
    names = [f"blocks.{x}.{site_hook(site)}" for x in layers]
    check_model(model, names)
    fns = site_transforms(model, site, layers) or [None] * L
    meta = {
        **identity_meta(model),
        **provenance(model, attention),
        "site": site_label(site),
        "dataset": corpus.name,
        "dataset_fingerprint": corpus_fingerprint(corpus),
        "window": window,
        "bos_counted": False,
    }
    if stats is None:
        hist = (
            ActivationHistogram(corpus.languages, L, D, default_edges(n_bins))
            if histogram
            else None
        )
        stats = TokenStats(corpus.languages, L, D, site, histogram=hist, meta=meta)
    else:
        fresh = TokenStats(corpus.languages, L, D, site, meta=meta)
        check_same_origin(stats.meta, fresh.meta, "token statistics", verb="continue")
        if stats.site != site:
            raise MultiNeuronError(f"cannot continue token statistics of site {stats.site!r} "
                                   f"at {site!r}")  # fmt: skip
    bos = getattr(get_tokenizer(model), "bos_token_id", None)
    dev = model_device(model)
    plan = [(x, token_rows(model, corpus, x, window)) for x in corpus.languages]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(-(-len(r) // batch_size) for _, r in plan)
        bar = tqdm(total=total, desc="token statistics", unit="batch")
    try:
        for lang, rows in plan:
            for s in range(0, len(rows), batch_size):
                part = rows[s : s + batch_size]
                tokens, mask = pad_ids(model, part, "right")
                counted = mask.bool()
                if bos is not None:
                    counted[:, 0] = False
                got: dict[int, Tensor] = {}

                def make(k: int, counted: Tensor = counted, got: dict = got):
                    return lambda a, hook: _take(a, k, fns[k], counted, got, L)

                with torch.inference_mode(), efficient_attention(model, attention):
                    try:
                        with model.hooks(fwd_hooks=[(n, make(k)) for k, n in enumerate(names)]):
                            model(tokens.to(dev), attention_mask=mask.to(dev))
                    except StopForward:
                        pass
                if len(got) != L:
                    raise MultiNeuronError(f"site hooks fired on {len(got)} of {L} layers")
                stats.update(lang, torch.stack([got[k] for k in range(L)], dim=1))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return stats
