"""Targeted accuracy steering in a layer band (after Pokharel, Agrawal & Nagar 2026).

A :class:`SteerConfig` edits only the blocks ``band = (start, stop)`` (half-open):

* ``scale``: all-shared neurons x ``alpha`` and the neurons specific to the row's own language
  x ``beta`` (``beta < 1`` damps them);
* ``mu``: the same neurons shifted toward the cross-language mean activation,
  ``a + strength * (mu - a)`` (the "Int-mu" style baseline).

The sets come from a calibration split (:class:`SteeringSets`): all-shared in at least
``min_frequency`` of its items, specific to a language in at least ``specific_frequency``, and
the mean activation per language at the recorded token. A random control edits equal-size random
neurons in the same layers (per layer as many as the all-shared set, and per language as many
as that language's specific set, drawn outside every static set) with the same factors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import MultiNeuronError
from ..experiments.interventions import Intervention
from ..experiments.neuron_sets import paired_seeds, sample_like, static_sets
from ..sharing.statistics import SharingStats

KINDS = ("none", "scale", "mu")


def check_band(band: tuple[int, int], n_layers: int) -> tuple[int, int]:
    """``(start, stop)`` as ints, or an error naming the model's layers."""
    try:
        s, e = (int(band[0]), int(band[1]))
    except (TypeError, ValueError, IndexError) as err:
        raise MultiNeuronError(f"layer band {band!r}: expected (start, stop)") from err
    if not 0 <= s < e <= n_layers:
        raise MultiNeuronError(
            f"layer band [{s}, {e}) lies outside the model's {n_layers} layers (0..{n_layers - 1})"
            "; expected 0 <= start < stop <= n_layers"
        )
    return s, e


def parse_band(text: str) -> tuple[int, int]:
    """``"12-18"`` (half-open) or ``"12:18"``."""
    for sep in ("-", ":"):
        a, found, b = text.partition(sep)
        if found:
            try:
                return int(a), int(b)
            except ValueError:
                break
    raise MultiNeuronError(f"layer band {text!r}: expected START-STOP, e.g. 12-18 (stop excluded)")


def default_bands(n_layers: int, n_bands: int = 6) -> list[tuple[int, int]]:
    """Contiguous bands of (nearly) equal width covering the depth, deepest last."""
    n = max(1, min(n_bands, n_layers))
    cuts = [round(i * n_layers / n) for i in range(n + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(n)]


@dataclass(frozen=True)
class SteerConfig:
    """One steering configuration (see the module docstring)."""

    kind: str = "none"
    band: tuple[int, int] = (0, 0)
    alpha: float = 1.0
    beta: float = 1.0
    strength: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MultiNeuronError(f"steering kind {self.kind!r}; expected one of {KINDS}")
        for k in ("alpha", "beta", "strength"):
            if not math.isfinite(getattr(self, k)):
                raise MultiNeuronError(f"steering {k} {getattr(self, k)!r} is not finite")
        object.__setattr__(self, "band", tuple(int(b) for b in self.band))
        if self.kind == "none":
            object.__setattr__(self, "band", (0, 0))
            object.__setattr__(self, "alpha", 1.0)
            object.__setattr__(self, "beta", 1.0)
            object.__setattr__(self, "strength", 0.0)
        elif self.band[0] >= self.band[1]:
            raise MultiNeuronError(f"steering band {self.band}: expected start < stop")
        if self.kind == "scale":
            object.__setattr__(self, "strength", 0.0)
        if self.kind == "mu":
            object.__setattr__(self, "alpha", 1.0)
            object.__setattr__(self, "beta", 1.0)

    @property
    def setting(self) -> str:
        """The strength part of the name (a column of the search surface)."""
        if self.kind == "scale":
            return f"alpha={self.alpha:g} beta={self.beta:g}"
        if self.kind == "mu":
            return f"mu x{self.strength:g}"
        return "-"

    @property
    def band_name(self) -> str:
        return f"L{self.band[0]}-{self.band[1] - 1}" if self.kind != "none" else "-"

    @property
    def name(self) -> str:
        return "none" if self.kind == "none" else f"{self.setting} @ {self.band_name}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "band": list(self.band),
            "alpha": self.alpha,
            "beta": self.beta,
            "strength": self.strength,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SteerConfig:
        return cls(d["kind"], tuple(d["band"]), d["alpha"], d["beta"], d["strength"])


def search_space(
    n_layers: int,
    bands: Sequence[tuple[int, int]] | None = None,
    alphas: Sequence[float] = (1.25, 1.5),
    betas: Sequence[float] = (1.0, 0.5),
    mu_strengths: Sequence[float] = (0.5,),
) -> list[SteerConfig]:
    """Every band x (alpha, beta) and band x Int-mu strength (the default search)."""
    bands = list(bands) if bands is not None else default_bands(n_layers)
    if not bands:
        raise MultiNeuronError("the steering search needs at least one layer band")
    out = []
    for b in bands:
        b = check_band(b, n_layers)
        out += [SteerConfig("scale", b, float(a), float(be)) for a in alphas for be in betas]
        out += [SteerConfig("mu", b, strength=float(s)) for s in mu_strengths]
    if not out:
        raise MultiNeuronError("the steering search is empty: give alphas/betas or mu strengths")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise MultiNeuronError("the steering search repeats a configuration")
    return out


@dataclass(frozen=True)
class SteeringSets:
    """Static sets and means from a calibration split.

    shared ``[layer, d_mlp]``; specific ``[lang, layer, d_mlp]`` (specific to each language);
    mean ``[lang, layer, d_mlp]`` mean activation per language at the recorded token."""

    languages: tuple[str, ...]
    shared: Bool[Tensor, "layer d_mlp"]
    specific: Bool[Tensor, "lang layer d_mlp"]
    mean: Float[Tensor, "lang layer d_mlp"]

    @classmethod
    def from_stats(
        cls, stats: SharingStats, min_frequency: float = 0.9, specific_frequency: float = 0.5
    ) -> SteeringSets:
        shared, specific = static_sets(stats, min_frequency, specific_frequency)
        return cls(tuple(stats.languages), shared.mask, specific, stats.mean_activation().float())

    @property
    def n_layers(self) -> int:
        return self.shared.shape[0]

    @property
    def cross_mean(self) -> Float[Tensor, "layer d_mlp"]:
        """The mean activation averaged over languages (Int-mu's target)."""
        return self.mean.mean(0)

    def lang_index(self, language: str) -> int:
        if language not in self.languages:
            raise MultiNeuronError(
                f"language {language!r} is not among the calibration languages "
                f"{list(self.languages)}"
            )
        return self.languages.index(language)

    def band_sets(
        self, band: tuple[int, int], control_seed: int | None = None
    ) -> tuple[Bool[Tensor, "layer d_mlp"], Bool[Tensor, "lang layer d_mlp"]]:
        """(shared, specific per language) restricted to ``band``; with ``control_seed``,
        equal-size random neurons in the same layers, drawn outside every static set."""
        s, e_ = check_band(band, self.n_layers)
        inside = torch.zeros(self.n_layers, 1, dtype=torch.bool)
        inside[s:e_] = True
        shared, spec = self.shared & inside, self.specific & inside
        if control_seed is None:
            return shared, spec
        taken = self.shared | self.specific.any(0)
        k_shared, k_spec = paired_seeds(control_seed)
        try:
            r_shared = sample_like(shared, k_shared, exclude=taken)
            r_spec = sample_like(spec, k_spec, exclude=(taken | r_shared).expand_as(spec))
        except MultiNeuronError as e:
            raise MultiNeuronError(
                f"random control (seed {control_seed}) of band [{s}, {e_}): {e}; the static "
                "sets leave too few other neurons (raise the sets' frequency thresholds)"
            ) from e
        return r_shared, r_spec

    def intervention(
        self,
        cfg: SteerConfig,
        langs: Int[Tensor, " rows"],
        control_seed: int | None = None,
    ) -> Intervention | None:
        """The edit of ``cfg`` for rows whose languages are ``langs`` (indices into
        ``languages``): per-row masks ``[rows, layer, d_mlp]``, non-zero only in the band."""
        if cfg.kind == "none":
            return None
        shared, spec = self.band_sets(cfg.band, control_seed)
        row_spec = spec[langs]
        if cfg.kind == "scale":
            mask = (shared.unsqueeze(0) & (cfg.alpha != 1.0)) | (row_spec & (cfg.beta != 1.0))
            mask = mask.expand(len(langs), -1, -1).contiguous()
            value = torch.where(
                shared.unsqueeze(0),
                torch.tensor(cfg.alpha),
                torch.where(row_spec, torch.tensor(cfg.beta), torch.tensor(1.0)),
            )
            return Intervention(mask, "scale", value, allow_empty=True)
        mask = shared.unsqueeze(0) | row_spec
        return Intervention(
            mask, "toward", self.cross_mean, strength=cfg.strength, allow_empty=True
        )
