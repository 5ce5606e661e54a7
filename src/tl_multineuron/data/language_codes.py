"""Language codes of published datasets: the codes their files use, and the ISO 639-1 codes
``--languages`` takes.

mParaRel names Chinese ``zh-hans`` / ``zh-hant``; MzsRE names Czech ``cz`` and Dutch ``du``.
A user asks for ``zh``, ``cs`` or ``nl`` (a file's own code is accepted too); the dataset's
languages are the codes the user gave, and the loader records which file code each one read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import MultiNeuronError

#: format family -> {ISO code: the file's code}, where they differ
FILE_CODES: dict[str, dict[str, str]] = {
    "xnli": {},
    "mpararel": {"zh": "zh-hans"},
    "mzsre": {"cs": "cz", "nl": "du"},
}


def iso_code(family: str, file_code: str) -> str:
    """The ISO code of a file's language code (itself where the file uses ISO)."""
    back = {v: k for k, v in FILE_CODES[family].items()}
    return back.get(file_code, file_code)


def resolve_languages(
    family: str,
    languages: Sequence[str] | None,
    available: Sequence[str],
    where: str,
) -> dict[str, str]:
    """Requested language -> the file code that holds it, in the requested order; ``None``
    asks for every available language (named by its ISO code). A language the source does not
    have is an error naming it, the source and what it has."""
    codes = FILE_CODES[family]
    if languages is None:
        return {iso_code(family, c): c for c in available}
    out: dict[str, str] = {}
    missing = []
    for lang in languages:
        lang = lang.strip()
        code = codes.get(lang, lang)
        if code not in available:
            missing.append(lang)
        out[lang] = code
    if missing:
        have = sorted(iso_code(family, c) for c in available)
        raise MultiNeuronError(
            f"{where}: no data for language(s) {missing}; it has {have}"
            + (f" (file codes: {dict(codes)})" if codes else "")
        )
    if len(set(out.values())) != len(out):
        raise MultiNeuronError(f"{where}: languages {list(out)} name the same file code twice")
    return out


def code_mapping(resolved: Mapping[str, str]) -> dict[str, str]:
    """The part of a resolution that differs from the identity (what a run file records)."""
    return {k: v for k, v in resolved.items() if k != v}
