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
language (:class:`~tl_multineuron.language_id.LanguageIdentifier`); relevance = share whose
text starts with the target language's gold answer (the translation of the answer); their
harmonic mean, each with a bootstrap interval over items, and the harmonic mean's paired delta
vs no steering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from .errors import MultiNeuronError
from .interventions import Composite, Intervention
from .neuron_sets import NeuronSet
from .recording import RecordingConfig, record_with, tokenize
from .steering import SteeringSets

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


@dataclass(frozen=True)
class ResidualHook:
    """Adds ``strength * vector`` to the residual stream at every position it sees."""

    layer: int
    vector: Tensor
    strength: float
    fired: list = field(default_factory=list, compare=False, repr=False)

    def __call__(self, act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        if act.shape[-1] != self.vector.shape[-1]:
            raise MultiNeuronError(
                f"layer {self.layer}: a steering vector of width {self.vector.shape[-1]} for a "
                f"residual stream of width {act.shape[-1]}"
            )
        self.fired.append(act.shape[1])
        return act + self.strength * self.vector.to(act.device, act.dtype)


@dataclass(frozen=True)
class ResidualAdd:
    """A residual-stream steering vector as a value for TL hooks (like an Intervention)."""

    layer: int
    vector: Float[Tensor, " d_model"]
    strength: float = 1.0

    def fwd_hooks(self, model: Any) -> list[tuple[str, ResidualHook]]:
        if not 0 <= self.layer < model.cfg.n_layers:
            raise MultiNeuronError(
                f"residual steering layer {self.layer}: the model has {model.cfg.n_layers} layers"
            )
        return [
            (
                f"blocks.{self.layer}.hook_resid_post",
                ResidualHook(self.layer, self.vector, float(self.strength)),
            )
        ]


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
    (%), bootstrap intervals over items, and the harmonic mean's delta vs ``none`` on the same
    items (paired: one draw of items for both)."""
    need = {"target", "method", "strength", "item_id", "in_target", "relevant"}
    if rows.empty or not need <= set(rows.columns):
        raise MultiNeuronError(f"language-steering rows need columns {sorted(need)}")
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out = []
    rng = np.random.default_rng(seed)
    for target, t_rows in rows.groupby("target", sort=False):
        none = t_rows[t_rows["method"] == "none"].set_index("item_id")
        if none.empty:
            raise MultiNeuronError(f"target {target!r}: no unsteered rows to compare with")
        items = none.index.to_numpy()
        draws = rng.integers(0, len(items), size=(n_boot, len(items)))
        n_lc = none["in_target"].to_numpy(float)
        n_rel = none["relevant"].to_numpy(float)
        n_hm = harmonic_mean(n_lc[draws].mean(1), n_rel[draws].mean(1))
        for (method, strength), g in t_rows.groupby(["method", "strength"], sort=False):
            g = g.set_index("item_id").reindex(items)
            if g["in_target"].isna().any():
                raise MultiNeuronError(f"{method} x{strength} -> {target}: rows missing items")
            lc, rel = g["in_target"].to_numpy(float), g["relevant"].to_numpy(float)
            b_lc, b_rel = lc[draws].mean(1), rel[draws].mean(1)
            b_hm = harmonic_mean(b_lc, b_rel)
            hm = float(harmonic_mean(lc.mean(), rel.mean()))
            d = b_hm - n_hm
            n_hm0 = float(harmonic_mean(n_lc.mean(), n_rel.mean()))
            row = {"target": target, "method": method, "strength": strength}
            for key, point, boot in (
                ("language_control", lc.mean(), b_lc),
                ("relevance", rel.mean(), b_rel),
                ("harmonic_mean", hm, b_hm),
                ("d_hm_vs_none", hm - n_hm0, d),
            ):
                lo, hi = np.quantile(boot, [lo_q, hi_q])
                row.update({key: 100 * point, f"{key}_low": 100 * lo, f"{key}_high": 100 * hi})
            out.append({**row, "n_items": len(items)})
    return pd.DataFrame(out)
