"""The peers' own files, both ways: what their users already hold moves into this library.

* **csalt** (csalt-research/LangSpecificNeurons ``lang_neurons.py``): a pickle of
  ``{lang: LongTensor[m, 2]}``, each row ``(layer, neuron)``; its ``lang_neuron_data.pkl``
  holds that mapping under ``lang_to_neuron`` (read too). A language without neurons may be an
  empty tensor of any dtype (``torch.tensor([])``, as its LAPE path writes).
  :meth:`LanguageSets.save_csalt` / :func:`load_csalt_sets`.
* **LAPE's activation statistics** (RUCAIBox/Language-Specific-Neurons ``activation.py``): one
  file per language, ``activation.{lang}.train.{model}``, a ``torch.save`` d dict of ``n`` (the
  tokens counted) and ``over_zero`` (``[layer, neuron]`` int32, tokens with the neuron active):
  exactly :class:`~tl_multineuron.sharing.token_stats.TokenStats`'s counts.
  :meth:`TokenStats.save_lape` / :func:`load_lape_activations`.
* LAPE's ``*.neuron.pth`` sets: :meth:`LanguageSets.save_lape` / :func:`load_lape_sets`;
  CLaS-Bench's per-language vectors: :mod:`~tl_multineuron.steering.vectors`.

Every error names the file, the language and, where it is one layer's, the layer.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import MultiNeuronError
from ..files import read_torch_dict
from ..sharing.token_stats import TokenStats, lape_activation_path
from .language_sets import LanguageSets


def load_csalt_sets(
    path: str | Path,
    n_layers: int,
    d_mlp: int,
    *,
    allow_pickle: bool = False,
    method: str = "csalt-file",
) -> LanguageSets:
    """Language sets from csalt's pickle (see the module docstring), checked against the
    model's ``n_layers`` x ``d_mlp``. Scores are 1 on the set (the file carries no ranking).

    ``allow_pickle`` must be ``True``: unpickling runs whatever code the file names, so load
    only a file you or a source you trust wrote. Nothing is read without it."""
    where = str(path)
    if not allow_pickle:
        raise MultiNeuronError(
            f"{where}: csalt's sets are a pickle, and unpickling a file runs whatever code it "
            "names; pass allow_pickle=True (--allow-pickle) for a file you trust"
        )
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)  # noqa: S301 - the caller opted in (allow_pickle)
    except FileNotFoundError as e:
        raise MultiNeuronError(f"csalt neuron file {where!r} does not exist") from e
    except Exception as e:  # noqa: BLE001 - a file pickle cannot read is named, not re-raised raw
        raise MultiNeuronError(f"{where}: not a pickle this Python can read: {e}") from e
    if isinstance(data, dict) and "lang_to_neuron" in data:
        data = data["lang_to_neuron"]
    if not isinstance(data, dict) or not data:
        raise MultiNeuronError(
            f"{where}: expected csalt's {{lang: LongTensor[m, 2]}}; got {type(data).__name__}"
        )
    languages = tuple(str(x) for x in data)
    masks = torch.zeros(len(languages), n_layers, d_mlp, dtype=torch.bool)
    for i, (lang, t) in enumerate(data.items()):
        if not isinstance(t, torch.Tensor):
            raise MultiNeuronError(
                f"{where}, language {lang!r}: expected a tensor; got {type(t).__name__}"
            )
        if t.numel() == 0:
            continue
        if (
            t.is_floating_point()
            or t.is_complex()
            or t.dtype == torch.bool
            or t.ndim != 2
            or (t.shape[1] != 2)
        ):
            raise MultiNeuronError(
                f"{where}, language {lang!r}: expected an integer tensor [m, 2] of (layer, "
                f"neuron) rows; got {t.dtype} of shape {tuple(t.shape)}"
            )
        t = t.long()
        layer, idx = t[:, 0], t[:, 1]
        bad = (layer < 0) | (layer >= n_layers)
        if bad.any():
            raise MultiNeuronError(
                f"{where}, language {lang!r}: layer {int(layer[bad][0])} "
                f"outside the model's {n_layers} layers"
            )
        bad = (idx < 0) | (idx >= d_mlp)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise MultiNeuronError(
                f"{where}, language {lang!r}, layer {int(layer[k])}: neuron {int(idx[k])} "
                f"outside the model's {d_mlp} neurons per layer"
            )
        masks[i, layer, idx] = True
    return LanguageSets(method, languages, masks, masks.float(), {"file": Path(path).name})


def load_lape_activations(
    directory: str | Path,
    languages: Sequence[str],
    model_name: str,
    n_layers: int | None = None,
    d_mlp: int | None = None,
    site: str = "gate",
) -> TokenStats:
    """LAPE's activation statistics of ``languages`` (``activation.{lang}.train.{model_name}``
    in ``directory``) as :class:`TokenStats` (its squared values unknown: ``squares=False``),
    checked against ``n_layers`` x ``d_mlp`` when given (else the first file's shape). Every
    file must hold an ``n`` > 0 and an integer ``over_zero`` with ``0 <= over_zero <= n``."""
    languages = tuple(languages)
    if len(languages) < 2 or len(set(languages)) != len(languages):
        raise MultiNeuronError(
            f"LAPE activations: languages {list(languages)} must be >= 2, distinct"
        )
    ns, counts = [], []
    for lang in languages:
        path = lape_activation_path(directory, lang, model_name)
        where = f"{path} (language {lang!r})"
        data = read_torch_dict(path, f"language {lang!r}: LAPE activation file", ("n", "over_zero"))
        n, oz = data["n"], torch.as_tensor(data["over_zero"])
        n = int(n.item()) if isinstance(n, torch.Tensor) else n
        if not isinstance(n, int) or n <= 0:
            raise MultiNeuronError(f"{where}: n = {n!r}; a language needs tokens counted (n > 0)")
        n_layers, d_mlp = check_matrix(oz, f"{where}: over_zero", False, n_layers, d_mlp)
        oz = oz.long()
        bad = (oz < 0) | (oz > n)
        if bad.any():
            layer = int(bad.nonzero()[0, 0])
            raise MultiNeuronError(f"{where}, layer {layer}: over_zero outside [0, n={n}]")
        ns.append(n)
        counts.append(oz)
    return TokenStats(
        languages,
        int(n_layers),
        int(d_mlp),
        site,
        torch.tensor(ns),
        torch.stack(counts),
        squares=False,
        meta={"source": "lape-activation-files", "model_name": model_name},
    )


def check_matrix(
    t: torch.Tensor, what: str, floating: bool, rows: int | None, cols: int | None
) -> tuple[int, int]:
    """A peer file's ``[layer, width]`` matrix: floats (``floating``) or integers, of shape
    ``(rows, cols)`` where given (else its own); returns the shape. Errors name ``what``."""
    integer = not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)
    if (t.is_floating_point() if floating else integer) is False or t.ndim != 2:
        want = "floats" if floating else "integers"
        raise MultiNeuronError(
            f"{what} {t.dtype} of shape {tuple(t.shape)}; expected {want} [layer, width]"
        )
    rows = t.shape[0] if rows is None else rows
    cols = t.shape[1] if cols is None else cols
    if tuple(t.shape) != (rows, cols):
        raise MultiNeuronError(
            f"{what} of shape {tuple(t.shape)}; the model has {rows} layers x {cols} "
            "(another model's file?)"
        )
    return int(rows), int(cols)
