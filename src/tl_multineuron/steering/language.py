"""Output-language control: steer generation from a source language toward a target language.

Methods (strength ``s``), all applied at every position of the prompt and of each generated
token:

* ``lape``: the neurons specific to the target language (static, from a calibration split) set
  to ``s`` x their mean activation in the target language (LAPE-style activation);
* ``deactivate``: the neurons specific to the source language set to 0 (no strength);
* ``lape+deactivate``: both;
* ``diff-means``: the baseline: ``s`` x (mean residual of the target language's prompts - mean
  of the source language's) added to ``blocks.{layer}.hook_resid_post``
  (:func:`diff_of_means`, at each prompt's last token on the calibration split).

Scores (:func:`control_table`): language control = share of outputs identified as the target
language (:class:`~tl_multineuron.steering.identifier.LanguageIdentifier`); relevance = share whose
text starts with the target language's gold answer (the translation of the answer); their
harmonic mean, each with a bootstrap interval over items, and the harmonic mean's paired delta
vs no steering.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float
from scipy import stats
from torch import Tensor

from ..errors import MultiNeuronError
from ..experiments.interventions import Composite, Intervention, ResidualAdd
from ..experiments.neuron_sets import NeuronSet
from ..sharing.recording import RecordingConfig, record_with, tokenize
from .sets import SteeringSets

METHODS = ("lape", "deactivate", "lape+deactivate", "diff-means")


def diff_of_means(
    model: Any,
    target_prompts: Sequence[str],
    source_prompts: Sequence[str],
    layer: int,
    batch_size: int = 16,
) -> Float[Tensor, " d_model"]:
    """Mean of ``blocks.{layer}.hook_resid_post`` at each target prompt's last token minus the
    same mean over the source prompts."""
    n = model.cfg.n_layers
    if not 0 <= layer < n:
        raise MultiNeuronError(f"diff-means layer {layer}: the model has layers 0..{n - 1}")
    if not target_prompts or not source_prompts:
        raise MultiNeuronError("diff-means needs prompts in both languages")
    name = f"blocks.{layer}.hook_resid_post"
    rec = RecordingConfig(layers=(layer,))

    def mean(prompts: Sequence[str]) -> Tensor:
        total = None
        for s in range(0, len(prompts), batch_size):
            batch = tokenize(model, list(prompts[s : s + batch_size]))
            _, extra = record_with(model, batch, rec, [name])
            part = extra[name].double().sum(0).cpu()
            total = part if total is None else total + part
        return total / len(prompts)

    return (mean(target_prompts) - mean(source_prompts)).float()


def specific_set(sets: SteeringSets, language: str, role: str) -> NeuronSet:
    """The static neurons specific to ``language``; an empty set is an error."""
    m = sets.specific[sets.lang_index(language)]
    if not m.any():
        raise MultiNeuronError(
            f"{role} language {language!r} has no specific neurons at the chosen frequency on "
            "the calibration split; lower --specific-frequency or calibrate on more items"
        )
    return NeuronSet(m, f"specific-{language}")


def language_edit(
    method: str,
    strength: float,
    source: str,
    target: str,
    sets: SteeringSets,
    vectors: dict[str, Tensor] | None = None,
    layer: int | None = None,
) -> Any:
    """The edit of one method (see the module docstring); ``method='none'`` gives ``None``."""
    if method == "none":
        return None
    if method not in METHODS:
        raise MultiNeuronError(f"language steering method {method!r}; expected one of {METHODS}")
    if method == "diff-means":
        if vectors is None or target not in vectors or layer is None:
            raise MultiNeuronError(f"diff-means toward {target!r} needs its vector and layer")
        return ResidualAdd(layer, vectors[target], strength)
    parts = []
    if method in ("lape", "lape+deactivate"):
        tgt = specific_set(sets, target, "target")
        mu = sets.mean[sets.lang_index(target)] * float(strength)
        parts.append(Intervention(tgt, "mean", mu, positions="all"))
    if method in ("deactivate", "lape+deactivate"):
        parts.append(Intervention(specific_set(sets, source, "source"), "zero", positions="all"))
    return parts[0] if len(parts) == 1 else Composite(tuple(parts))


def harmonic_mean(
    a: np.ndarray | float | Sequence[float], b: np.ndarray | float | Sequence[float]
) -> np.ndarray:
    """Elementwise 2ab/(a+b), 0 where both are 0."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    s = a + b
    return np.where(s > 0, 2 * a * b / np.where(s > 0, s, 1), 0.0)


def control_table(
    rows: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Per (target, method, strength): language control, relevance and their harmonic mean
    (%), percentile-bootstrap intervals over items (``scipy.stats.bootstrap``), and the
    harmonic mean's delta vs ``none`` on the same items (paired: every method of a target is
    resampled with the same draws of items, and ``none`` with them)."""
    need = {"target", "method", "strength", "item_id", "in_target", "relevant"}
    if rows.empty or not need <= set(rows.columns):
        raise MultiNeuronError(f"language-steering rows need columns {sorted(need)}")
    keys = ("language_control", "relevance", "harmonic_mean", "d_hm_vs_none")

    def stat(lc, rel, n_lc, n_rel, axis=-1):
        hm = harmonic_mean(lc.mean(axis), rel.mean(axis))
        d = hm - harmonic_mean(n_lc.mean(axis), n_rel.mean(axis))
        return np.stack([lc.mean(axis), rel.mean(axis), hm, d])

    out = []
    rng = np.random.default_rng(seed)
    for target, t_rows in rows.groupby("target", sort=False):
        none = t_rows[t_rows["method"] == "none"].set_index("item_id")
        if none.empty:
            raise MultiNeuronError(f"target {target!r}: no unsteered rows to compare with")
        items = none.index.to_numpy()
        base = (none["in_target"].to_numpy(float), none["relevant"].to_numpy(float))
        draws = copy.deepcopy(rng)  # the target's one draw of items, for every method
        rng.integers(0, len(items), size=(n_boot, len(items)))
        for (method, strength), g in t_rows.groupby(["method", "strength"], sort=False):
            g = g.set_index("item_id").reindex(items)
            if g["in_target"].isna().any():
                raise MultiNeuronError(f"{method} x{strength} -> {target}: rows missing items")
            data = (g["in_target"].to_numpy(float), g["relevant"].to_numpy(float), *base)
            ci = stats.bootstrap(
                data, stat, n_resamples=n_boot, paired=True, vectorized=True,
                confidence_level=level, method="percentile", rng=copy.deepcopy(draws),
            ).confidence_interval  # fmt: skip
            point = stat(*data)
            row = {"target": target, "method": method, "strength": strength}
            for key, p_, lo, hi in zip(keys, point, ci.low, ci.high, strict=True):
                row.update({key: 100 * p_, f"{key}_low": 100 * lo, f"{key}_high": 100 * hi})
            out.append({**row, "n_items": len(items)})
    return pd.DataFrame(out)
