"""Token-level activation statistics over running text, as LAPE counts them.

LAPE (Tang et al. 2024, RUCAIBox/Language-Specific-Neurons ``activation.py``) counts, per
language, on how many tokens of a running-text corpus each neuron is active (``over_zero``) and
how many tokens there were (``n``); ``over_zero / n`` is the activation probability its
selection reads. :class:`TokenStats` holds exactly those counts per language (and the sum of
squared site values, whose RMS gives activity-matched controls their strata when no items are
recorded), streamed batch by batch and mergeable (shards, resume): memory does not grow with
the corpus. LAPE's own files move both ways (:mod:`~tl_multineuron.experiments.peer_files`).

Site (:func:`token_site`): LAPE's "active" on a gated MLP is ``act(gate) > 0``, read before the
up projection (``SiLU(gate_proj(x))`` in its Llama path), so ``auto`` picks the ``gate`` site
there, and the output of the activation (``mlp.hook_post``) on a plain MLP (its BLOOM path).

Rows: :func:`~tl_multineuron.sharing.token_batches.token_rows` (one text per row by default;
``window='lape'`` for LAPE's own rows). The BOS position is never counted.
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

from ..backends.models import check_model, identity_meta, provenance
from ..backends.sites import GATE, site_hook, site_label, site_transforms
from ..data.corpus import Corpus
from ..errors import MultiNeuronError
from ..files import atomic_write, read_torch_dict
from .accumulator import check_same_origin, merged_fingerprints
from .token_batches import Window, iter_token_batches, parse_window, window_bos

FORMAT_VERSION = 2


def token_site(model: Any, site: str = "auto") -> str:
    """The site LAPE thresholds: ``gate`` on a gated MLP, ``mlp.hook_post`` on a plain one
    (``auto``); an explicit site is returned as given."""
    if site != "auto":
        return site
    return GATE if getattr(model.cfg, "gated_mlp", False) else "mlp.hook_post"


def lape_activation_path(directory: str | Path, lang: str, model_name: str) -> Path:
    """LAPE's name for a language's activation statistics file."""
    return Path(directory) / f"activation.{lang}.train.{model_name}"


def corpus_fingerprint(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for lang, texts in corpus.texts.items():
        h.update(lang.encode() + b"\0" + "\n".join(texts).encode() + b"\1")
    return h.hexdigest()[:16]


def token_meta(model: Any, corpus: Corpus, site: str, window: Window, attention: str) -> dict:
    """What a token-level statistic's numbers depend on (model, site, text, rows)."""
    return {
        **identity_meta(model),
        **provenance(model, attention),
        "site": site_label(site),
        "dataset": corpus.name,
        "dataset_fingerprint": corpus_fingerprint(corpus),
        "window": None if window is None else str(window),
        "bos_counted": False,
        "bos_per_row": window_bos(model, window),
    }


@dataclass
class TokenStats:
    """Per language: ``n_tokens`` counted, ``over_zero`` ``[lang, layer, neuron]`` (the tokens
    on which each neuron's site value was > 0) and ``sq_sum`` (the sum of its squared site
    values, float64; ``squares=False`` where they are unknown, as in LAPE's own files). See
    the module docstring."""

    languages: tuple[str, ...]
    n_layers: int
    d_mlp: int
    site: str
    n_tokens: Int[Tensor, " lang"] | None = None
    over_zero: Int[Tensor, "lang layer neuron"] | None = None
    sq_sum: Float[Tensor, "lang layer neuron"] | None = None
    meta: dict = field(default_factory=dict)
    squares: bool = True

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        N, L, D = len(self.languages), self.n_layers, self.d_mlp
        if self.n_tokens is None:
            self.n_tokens = torch.zeros(N, dtype=torch.long)
        if self.over_zero is None:
            self.over_zero = torch.zeros(N, L, D, dtype=torch.long)
        if self.sq_sum is None:
            self.sq_sum = torch.zeros(N, L, D, dtype=torch.float64)
        shapes = (tuple(self.over_zero.shape), tuple(self.sq_sum.shape), tuple(self.n_tokens.shape))
        if shapes != ((N, L, D), (N, L, D), (N,)):
            raise MultiNeuronError(
                f"token statistics of shapes {shapes}; expected ({N}, {L}, {D}) twice and ({N},)"
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
        # a batch's count in int32 and its squares summed in float32 (4-5x faster than int64 /
        # float64 reductions on the CPU), accumulated in int64 / float64 across batches
        self.over_zero[i] += (acts > 0).sum(0, dtype=torch.int32).cpu()
        self.sq_sum[i] += acts.float().square().sum(0).cpu()
        self.n_tokens[i] += acts.shape[0]

    # -- what the selection methods read ----------------------------------------------------------
    def _need_tokens(self) -> None:
        empty = [x for x, n in zip(self.languages, self.n_tokens.tolist(), strict=True) if not n]
        if empty:
            raise MultiNeuronError(f"token statistics: no token counted for language(s) {empty}")

    def probabilities(self) -> Float[Tensor, "lang layer neuron"]:
        """LAPE's ``over_zero / n`` per language, in float32 as there."""
        self._need_tokens()
        return self.over_zero.float() / self.n_tokens.float()[:, None, None]

    def rms(self) -> Float[Tensor, "layer neuron"]:
        """Each neuron's RMS site value, the mean over the languages of each language's mean
        square (the activity strata of controls when no items are recorded)."""
        if not self.squares:
            raise MultiNeuronError(
                "these token statistics carry no squared values (read from LAPE's files): no "
                "RMS, record them with record_token_stats"
            )
        self._need_tokens()
        return (self.sq_sum / self.n_tokens.double()[:, None, None]).mean(0).sqrt()

    # -- the accumulator protocol -----------------------------------------------------------------
    def check_compatible(self, other: TokenStats, verb: str = "merge") -> None:
        for attr in ("languages", "n_layers", "d_mlp", "site", "squares"):
            a, b = getattr(self, attr), getattr(other, attr)
            if a != b:
                raise MultiNeuronError(f"cannot {verb} token statistics of different {attr}: "
                                       f"{a!r} vs {b!r}")  # fmt: skip
        check_same_origin(self.meta, other.meta, "token statistics", verb)

    def merge(self, other: TokenStats) -> TokenStats:
        """One value equal to a single run over both (disjoint texts)."""
        self.check_compatible(other)
        meta = {**self.meta, "dataset_fingerprints": merged_fingerprints(self.meta, other.meta)}
        meta.pop("dataset_fingerprint", None)
        return TokenStats(
            self.languages, self.n_layers, self.d_mlp, self.site,
            self.n_tokens + other.n_tokens, self.over_zero + other.over_zero,
            self.sq_sum + other.sq_sum, meta, self.squares,
        )  # fmt: skip

    def equals(self, other: TokenStats) -> bool:
        """Counts identical, squares equal to float32 rounding."""
        return (
            (self.languages, self.n_layers, self.d_mlp, self.site)
            == (other.languages, other.n_layers, other.d_mlp, other.site)
            and self.squares == other.squares
            and torch.equal(self.n_tokens, other.n_tokens)
            and torch.equal(self.over_zero, other.over_zero)
            # sums of squares: equal to float32 rounding (padding in a batch moves activations
            # at that level; the counts above are exact)
            and torch.allclose(self.sq_sum, other.sq_sum, rtol=1e-5, atol=1e-9)
        )

    def save(self, path: str | Path) -> None:
        """Lossless, atomic."""
        state = {
            "format_version": FORMAT_VERSION, "languages": list(self.languages),
            "n_layers": self.n_layers, "d_mlp": self.d_mlp, "site": self.site,
            "n_tokens": self.n_tokens, "over_zero": self.over_zero, "sq_sum": self.sq_sum,
            "meta_json": json.dumps(self.meta), "squares": self.squares,
        }  # fmt: skip
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    def save_lape(self, directory: str | Path, model_name: str) -> list[Path]:
        """The counts as LAPE's files, one per language, ``activation.{lang}.train.{model_name}``
        (``n`` an int, ``over_zero`` ``[layer, neuron]`` int32 as ``activation.py`` writes
        them), each written atomically; read back with
        :func:`~tl_multineuron.experiments.peer_files.load_lape_activations`. A count beyond
        int32 is an error (LAPE's dtype cannot hold it)."""
        if self.over_zero.numel() and int(self.over_zero.max()) > 2**31 - 1:
            raise MultiNeuronError("over_zero exceeds int32, LAPE's dtype")
        Path(directory).mkdir(parents=True, exist_ok=True)
        paths = []
        for i, lang in enumerate(self.languages):
            state = {"n": int(self.n_tokens[i]), "over_zero": self.over_zero[i].to(torch.int32)}
            path = lape_activation_path(directory, lang, model_name)
            atomic_write(path, lambda tmp, s=state: torch.save(s, tmp))
            paths.append(path)
        return paths

    @classmethod
    def load(cls, path: str | Path) -> TokenStats:
        s = read_torch_dict(path, "token statistics", version=FORMAT_VERSION)
        return cls(
            tuple(s["languages"]), int(s["n_layers"]), int(s["d_mlp"]), s["site"],
            s["n_tokens"], s["over_zero"], s["sq_sum"], json.loads(s["meta_json"]),
            bool(s["squares"]),
        )  # fmt: skip


def record_token_stats(
    model: Any,
    corpus: Corpus,
    *,
    window: Window = None,
    site: str = "auto",
    batch_size: int = 8,
    attention: str = "auto",
    progress: bool = False,
    stats: TokenStats | None = None,
) -> TokenStats:
    """Token-level statistics of every neuron over ``corpus`` (see the module docstring), added
    to ``stats`` when given (a resumed or sharded run). One forward per batch of rows, stopped
    after the last layer; only the counts are kept."""
    parse_window(window)
    site = token_site(model, site)
    L, D = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    layers = list(range(L))
    check_model(model, [f"blocks.{x}.{site_hook(site)}" for x in layers])
    meta = token_meta(model, corpus, site, window, attention)
    if stats is None:
        stats = TokenStats(corpus.languages, L, D, site, meta=meta)
    else:
        fresh = TokenStats(corpus.languages, L, D, site, meta=meta)
        check_same_origin(stats.meta, fresh.meta, "token statistics", verb="continue")
        if stats.site != site:
            raise MultiNeuronError(f"cannot continue token statistics of site {stats.site!r} "
                                   f"at {site!r}")  # fmt: skip
    hooks = {"site": (site_hook(site), site_transforms(model, site, layers))}
    for lang, got in iter_token_batches(
        model, corpus, hooks, window=window, batch_size=batch_size, attention=attention,
        progress=progress, desc="token statistics",
    ):  # fmt: skip
        stats.update(lang, got["site"])
    return stats
