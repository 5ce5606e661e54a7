"""Offline language identification of short outputs, with lingua (``lingua-language-detector``).

lingua is maintained, offline, and built for short text (its models use 1- to 5-grams and it
is evaluated on single words and word pairs). The detector is restricted to the languages of
the study (a closed set), which is what makes one- or two-word answers identifiable at all; its
accuracy on the built-in gold answers is measured by :func:`identifier_accuracy` and reported
beside every language-control number (Latin-script city names such as "Paris" are not
identifiable, and the report says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..errors import MultiNeuronError


def _lingua() -> Any:
    try:
        import lingua
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise MultiNeuronError(
            "language identification needs lingua: pip install lingua-language-detector "
            "(or tl_multineuron[language])"
        ) from e
    return lingua


def supported_languages() -> tuple[str, ...]:
    """ISO 639-1 codes lingua identifies."""
    lingua = _lingua()
    return tuple(sorted(x.iso_code_639_1.name.lower() for x in lingua.Language.all()))


class LanguageIdentifier:
    """``detect(texts)`` -> ISO 639-1 code per text, or ``None`` for text without letters or
    where lingua cannot decide. Only ``languages`` are considered (at least 2)."""

    def __init__(self, languages: Sequence[str]) -> None:
        lingua = _lingua()
        langs = list(dict.fromkeys(x.strip().lower() for x in languages))
        if len(langs) < 2:
            raise MultiNeuronError(
                f"language identification among {langs}: give at least 2 languages"
            )
        known = set(supported_languages())
        bad = [x for x in langs if x not in known]
        if bad:
            raise MultiNeuronError(
                f"language(s) {bad} are not supported by the language identifier (lingua knows "
                f"{len(known)} languages by ISO 639-1 code, e.g. en, de, zh)"
            )
        self.languages = tuple(langs)
        codes = [lingua.Language.from_iso_code_639_1(getattr(lingua.IsoCode639_1, x.upper()))
                 for x in langs]  # fmt: skip
        self._detector = lingua.LanguageDetectorBuilder.from_languages(*codes).build()

    def detect(self, texts: Sequence[str]) -> list[str | None]:
        clean = [str(t).strip() for t in texts]
        found = self._detector.detect_languages_in_parallel_of(clean)
        return [
            None if (f is None or not any(ch.isalpha() for ch in t))
            else f.iso_code_639_1.name.lower()
            for t, f in zip(clean, found, strict=True)
        ]  # fmt: skip


def identifier_accuracy(
    identifier: LanguageIdentifier, texts_by_language: dict[str, Sequence[str]]
) -> pd.DataFrame:
    """Per language: the share (%) of its texts identified as that language, and how many."""
    rows = []
    for lang, texts in texts_by_language.items():
        got = identifier.detect(list(texts))
        ok = sum(g == lang for g in got)
        rows.append({"language": lang, "accuracy": 100.0 * ok / max(1, len(got)), "n": len(got)})
    return pd.DataFrame(rows)
