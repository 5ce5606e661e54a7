"""Typological distances between languages, offline: URIEL+ (PyPI ``urielplus``, which ships its
database) for genetic, syntactic and geographic distance, and the writing system (CLDR's likely
script, through ``babel``) as a binary distance.

Languages are given by ISO 639-1 codes (``de``, ``zh``) and looked up in URIEL+ by their ISO
639-3 code (:data:`ISO639_3`; macrolanguage codes: ``ara``, ``zho``, ...); a 3-letter code is
used as it is. A language URIEL+ does not know, or for which a distance cannot be computed, is
named in a :class:`TypologyWarning` and left out of that distance (never a crash). Matrices are
cached under ``~/.cache/tl_multineuron/typology`` (URIEL+ takes seconds to load).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import MultiNeuronError

URIEL_DISTANCES = ("genetic", "syntactic", "geographic")
DISTANCES = (*URIEL_DISTANCES, "script")

#: ISO 639-1 -> ISO 639-3 (639-2/T, macrolanguages where ISO has one) for URIEL+.
ISO639_3 = {
    "af": "afr", "am": "amh", "ar": "ara", "az": "aze", "be": "bel", "bg": "bul", "bn": "ben",
    "bs": "bos", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu", "el": "ell",
    "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus", "fa": "fas", "fi": "fin",
    "fr": "fra", "ga": "gle", "gl": "glg", "gu": "guj", "ha": "hau", "he": "heb", "hi": "hin",
    "hr": "hrv", "hu": "hun", "hy": "hye", "id": "ind", "ig": "ibo", "is": "isl", "it": "ita",
    "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "km": "khm", "kn": "kan", "ko": "kor",
    "ky": "kir", "lo": "lao", "lt": "lit", "lv": "lav", "mk": "mkd", "ml": "mal", "mn": "mon",
    "mr": "mar", "ms": "msa", "mt": "mlt", "my": "mya", "ne": "nep", "nl": "nld", "no": "nor",
    "pa": "pan", "pl": "pol", "ps": "pus", "pt": "por", "ro": "ron", "ru": "rus", "si": "sin",
    "sk": "slk", "sl": "slv", "so": "som", "sq": "sqi", "sr": "srp", "sv": "swe", "sw": "swa",
    "ta": "tam", "te": "tel", "tg": "tgk", "th": "tha", "tl": "tgl", "tr": "tur", "uk": "ukr",
    "ur": "urd", "uz": "uzb", "vi": "vie", "yo": "yor", "zh": "zho", "zu": "zul",
}  # fmt: skip


class TypologyWarning(UserWarning):
    """A language was left out of a typological distance (the message names it and why)."""


def iso639_3(language: str) -> str:
    """The ISO 639-3 code URIEL+ knows ``language`` by (``zh-hans`` -> ``zho``)."""
    base = language.replace("_", "-").split("-")[0].lower()
    return base if len(base) == 3 else ISO639_3.get(base, base)


def script_of(language: str) -> str | None:
    """The language's usual script (CLDR likely subtags: ``zh`` -> ``Hans``, ``ja`` -> ``Jpan``;
    an explicit script subtag wins: ``zh-Hant``), or None where CLDR does not know it."""
    from babel.core import get_global

    parts = language.replace("-", "_").split("_")
    for p in parts[1:]:
        if len(p) == 4 and p.isalpha():
            return p.title()
    likely = get_global("likely_subtags")
    tag = likely.get(parts[0].lower()) or likely.get(language.replace("-", "_"))
    if not tag:
        return None
    for p in tag.split("_")[1:]:
        if len(p) == 4 and p.isalpha():
            return p.title()
    return None


def _cache_dir() -> Path:
    from ..backends.models import cache_root  # the models' cache root ($TL_MULTINEURON_CACHE)

    return cache_root() / "typology"


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """URIEL+ configures and logs to the root logger at INFO: keep the user's logging as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


_URIEL = None


def _uriel():
    global _URIEL
    if _URIEL is None:
        with _quiet_root_logger():
            try:
                from urielplus import urielplus
            except ImportError as e:
                raise MultiNeuronError(
                    "typological distances need the 'urielplus' package: pip install urielplus"
                ) from e
            _URIEL = urielplus.URIELPlus()
    return _URIEL


def _uriel_matrix(kind: str, codes: list[str]) -> np.ndarray:
    """URIEL+'s distance matrix for ISO 639-3 ``codes`` (-1 where it cannot compute one)."""
    cache = _cache_dir() / f"{kind}-{'-'.join(codes)}.json"
    if cache.is_file():
        return np.asarray(json.loads(cache.read_text()), dtype=float)
    u = _uriel()
    with _quiet_root_logger():
        got = np.asarray(u.new_distance(kind, codes), dtype=float)
    if got.ndim == 0:  # URIEL+ answers a pair with a number, not a matrix
        got = np.array([[0.0, float(got)], [float(got), 0.0]])
    out = got.reshape(len(codes), len(codes))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out.tolist()))
    os.replace(tmp, cache)
    return out


def _known(kind: str, codes: list[str]) -> set[str]:
    cache = _cache_dir() / f"{kind}-languages.json"
    if cache.is_file():
        have = set(json.loads(cache.read_text()))
    else:
        u = _uriel()
        with _quiet_root_logger():
            have = set(getattr(u, f"get_languages_with_{kind}_data")())
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sorted(have)))
        os.replace(tmp, cache)
    return {c for c in codes if c in have}


def distance_matrix(kind: str, languages: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """``(matrix, languages kept)``: the ``kind`` distance (:data:`DISTANCES`) between the kept
    languages, symmetric with a zero diagonal. Languages it cannot place are left out with a
    :class:`TypologyWarning` naming them."""
    if kind not in DISTANCES:
        raise MultiNeuronError(f"distance {kind!r}: expected one of {DISTANCES}")
    langs = list(languages)
    if kind == "script":
        scripts = {x: script_of(x) for x in langs}
        missing = [x for x, s in scripts.items() if s is None]
        kept = [x for x in langs if x not in missing]
        s = np.array([scripts[x] for x in kept], dtype=object)
        out = (s[:, None] != s[None, :]).astype(float)
    else:
        codes = {x: iso639_3(x) for x in langs}
        known = _known(kind, list(codes.values()))
        missing = [x for x in langs if codes[x] not in known]
        kept = [x for x in langs if x not in missing]
        out = _uriel_matrix(kind, [codes[x] for x in kept]) if len(kept) >= 2 else np.zeros((0, 0))
        # a language with no distance to some other (-1) is left out too, the fewest first
        while len(kept) >= 2 and (out < 0).any():
            worst = int((out < 0).sum(1).argmax())
            missing.append(kept.pop(worst))
            out = np.delete(np.delete(out, worst, 0), worst, 1)
        out = (out + out.T) / 2
        np.fill_diagonal(out, 0.0)
    if missing:
        warnings.warn(
            f"{kind} distance: language(s) {missing} left out (URIEL+ or CLDR cannot place them)",
            TypologyWarning,
            stacklevel=2,
        )
    return out, kept
