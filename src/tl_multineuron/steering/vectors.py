"""Per-language mean residual vectors, in CLaS-Bench's files both ways.

CLaS-Bench (d-gurgurov/CLaS-Bench ``identification/diffmean.py``) averages every layer's output
(the residual stream after the block: ``blocks.{layer}.hook_resid_post``) over every token of a
language's running text and saves, per language, ``vector.{lang}.{model}``: a ``torch.save`` d
dict of ``steering_vectors`` ``[layer, d_model]`` float32, ``token_counts`` ``[layer]`` int64 and
``num_tokens`` (an int). Its diff-means steering adds ``s * (mean[target] - mean[source])`` at a
layer: :meth:`LanguageVectors.direction`, for
:class:`~tl_multineuron.experiments.interventions.ResidualAdd`.

:func:`record_language_vectors` computes them on a :class:`~tl_multineuron.data.corpus.Corpus`
with the rows of :func:`~tl_multineuron.sharing.token_batches.token_rows` (``window='lape'``:
CLaS-Bench's own rows, which are LAPE's); sums in float64, saved as float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..backends.models import check_model
from ..data.corpus import Corpus
from ..errors import MultiNeuronError
from ..experiments.peer_files import check_matrix
from ..files import atomic_write, read_torch_dict
from ..sharing.token_batches import Window, iter_token_batches
from ..sharing.token_stats import token_meta

RESID_HOOK = "hook_resid_post"


@dataclass
class LanguageVectors:
    """Per language: the mean residual ``vectors`` ``[lang, layer, d_model]`` over
    ``token_counts`` ``[lang, layer]`` tokens (``num_tokens`` ``[lang]``: the text's tokens)."""

    languages: tuple[str, ...]
    vectors: Float[Tensor, "lang layer d_model"]
    token_counts: Int[Tensor, "lang layer"]
    num_tokens: Int[Tensor, " lang"]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.languages = tuple(self.languages)
        N = len(self.languages)
        if self.vectors.ndim != 3 or self.vectors.shape[0] != N:
            raise MultiNeuronError(
                f"language vectors of shape {tuple(self.vectors.shape)}; "
                f"expected [{N}, layer, d_model]"
            )
        if tuple(self.token_counts.shape) != tuple(self.vectors.shape[:2]) or tuple(
            self.num_tokens.shape
        ) != (N,):
            raise MultiNeuronError(
                f"token counts of shape {tuple(self.token_counts.shape)} / "
                f"{tuple(self.num_tokens.shape)} for vectors "
                f"{tuple(self.vectors.shape)}"
            )

    def mean(self, language: str) -> Float[Tensor, "layer d_model"]:
        if language not in self.languages:
            raise MultiNeuronError(f"language {language!r} is not among {list(self.languages)}")
        return self.vectors[self.languages.index(language)]

    def direction(self, target: str, source: str, layer: int) -> Float[Tensor, " d_model"]:
        """CLaS-Bench's diff-means direction at ``layer``: mean[target] - mean[source]."""
        L = self.vectors.shape[1]
        if not 0 <= layer < L:
            raise MultiNeuronError(f"layer {layer}: the vectors have layers 0..{L - 1}")
        return self.mean(target)[layer] - self.mean(source)[layer]

    def equals(self, other: LanguageVectors) -> bool:
        return (
            self.languages == other.languages
            and torch.equal(self.vectors, other.vectors)
            and torch.equal(self.token_counts, other.token_counts)
            and torch.equal(self.num_tokens, other.num_tokens)
        )

    def save_clas(self, directory: str | Path, model_name: str) -> list[Path]:
        """One CLaS-Bench file per language, ``vector.{lang}.{model_name}``, atomically."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        paths = []
        for i, lang in enumerate(self.languages):
            state = {
                "steering_vectors": self.vectors[i].float().contiguous(),
                "token_counts": self.token_counts[i].long(),
                "num_tokens": int(self.num_tokens[i]),
            }
            path = clas_path(directory, lang, model_name)
            atomic_write(path, lambda tmp, s=state: torch.save(s, tmp))
            paths.append(path)
        return paths


def clas_path(directory: str | Path, lang: str, model_name: str) -> Path:
    """CLaS-Bench's name for a language's vector file."""
    return Path(directory) / f"vector.{lang}.{model_name}"


def load_clas_vectors(
    directory: str | Path,
    languages: Sequence[str],
    model_name: str,
    n_layers: int | None = None,
    d_model: int | None = None,
) -> LanguageVectors:
    """CLaS-Bench's ``vector.{lang}.{model_name}`` files of ``languages`` in ``directory``,
    checked against the model's ``n_layers`` x ``d_model`` when given (else the first file's
    shape): every file a float ``steering_vectors [layer, d_model]``, integer ``token_counts
    [layer]`` > 0 and ``num_tokens``; errors name the file, the language and the layer."""
    languages = tuple(languages)
    if not languages or len(set(languages)) != len(languages):
        raise MultiNeuronError(f"CLaS-Bench vectors: languages {list(languages)} must be distinct")
    vecs, counts, nums = [], [], []
    for lang in languages:
        path = clas_path(directory, lang, model_name)
        where = f"{path} (language {lang!r})"
        what = f"language {lang!r}: CLaS-Bench vector file"
        data = read_torch_dict(path, what, ("steering_vectors",))
        v = torch.as_tensor(data["steering_vectors"])
        n_layers, d_model = check_matrix(v, f"{where}: steering_vectors", True, n_layers, d_model)
        bad = ~torch.isfinite(v).all(-1)
        if bad.any():
            raise MultiNeuronError(f"{where}, layer {int(bad.nonzero()[0])}: non-finite values")
        c = torch.as_tensor(data.get("token_counts", torch.zeros(0)))
        if c.is_floating_point() or tuple(c.shape) != (n_layers,):
            raise MultiNeuronError(
                f"{where}: token_counts {c.dtype} of shape {tuple(c.shape)}; "
                f"expected integers [{n_layers}]"
            )
        if (c <= 0).any():
            raise MultiNeuronError(
                f"{where}, layer {int((c <= 0).nonzero()[0])}: no token counted (token_counts 0)"
            )
        num = data.get("num_tokens", int(c.max()))
        vecs.append(v.float())
        counts.append(c.long())
        nums.append(int(num))
    return LanguageVectors(
        languages,
        torch.stack(vecs),
        torch.stack(counts),
        torch.tensor(nums),
        {"source": "clas-bench-files", "model_name": model_name},
    )


def record_language_vectors(
    model: Any,
    corpus: Corpus,
    *,
    window: Window = None,
    batch_size: int = 8,
    attention: str = "auto",
    progress: bool = False,
) -> LanguageVectors:
    """Each language's mean ``blocks.{layer}.hook_resid_post`` over every counted token of
    its text (see the module docstring)."""
    L, d = int(model.cfg.n_layers), int(model.cfg.d_model)
    check_model(model, [f"blocks.{x}.{RESID_HOOK}" for x in range(L)])
    N = len(corpus.languages)
    sums = torch.zeros(N, L, d, dtype=torch.float64)
    n = torch.zeros(N, dtype=torch.long)
    for lang, got in iter_token_batches(
        model,
        corpus,
        {"resid": (RESID_HOOK, None)},
        window=window,
        batch_size=batch_size,
        attention=attention,
        progress=progress,
        desc="language vectors",
    ):
        i = corpus.languages.index(lang)
        sums[i] += got["resid"].double().sum(0)
        n[i] += got["resid"].shape[0]
    meta = token_meta(model, corpus, RESID_HOOK, window, attention)
    return LanguageVectors(
        corpus.languages,
        (sums / n[:, None, None]).float(),
        n[:, None].expand(N, L).clone(),
        n.clone(),
        meta,
    )
