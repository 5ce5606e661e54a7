"""XNLI in its real format, through HF ``datasets``.

The hub's ``xnli`` / ``facebook/xnli`` config ``all_languages`` has one row per item:
``premise`` is a mapping ``{lang: text}``, ``hypothesis`` is ``{"language": [...],
"translation": [...]}`` and ``label`` is 0 entailment, 1 neutral, 2 contradiction. Local files
in that format (JSON lines or parquet) load the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import MultiNeuronError
from .datasets import ParallelDataset, ParallelItem

# Prompt template and label words per language ({p} premise, {h} hypothesis).
XNLI_TEMPLATES: dict[str, tuple[str, tuple[str, str, str]]] = {
    "en": ("{p}\nQuestion: {h} True, False or Neither?\nAnswer:", ("True", "Neither", "False")),
    "de": (
        "{p}\nFrage: {h} Wahr, falsch oder weder noch?\nAntwort:",
        ("Wahr", "Weder noch", "Falsch"),
    ),
    "fr": (
        "{p}\nQuestion : {h} Vrai, faux ou ni l'un ni l'autre ?\nRéponse :",
        ("Vrai", "Ni l'un ni l'autre", "Faux"),
    ),
    "es": (
        "{p}\nPregunta: {h} ¿Verdadero, falso o ninguno?\nRespuesta:",
        ("Verdadero", "Ninguno", "Falso"),
    ),
    "ru": (
        "{p}\nВопрос: {h} Верно, неверно или ни то ни другое?\nОтвет:",
        ("Верно", "Ни то ни другое", "Неверно"),
    ),
    "zh": ("{p}\n问题：{h} 对、错还是都不是？\n答案：", ("对", "都不是", "错")),
    "ar": (
        "{p}\nسؤال: {h} صحيح أم خطأ أم لا هذا ولا ذاك؟\nالجواب:",
        ("صحيح", "لا هذا ولا ذاك", "خطأ"),
    ),
}
_NO_SPACE = {"zh", "ja"}


def _rows(source: str | Path, split: str):
    try:
        import datasets
    except ImportError as e:
        raise MultiNeuronError(
            "XNLI loading needs the 'datasets' package: pip install 'tl_multineuron[xnli]'"
        ) from e
    path = Path(str(source))
    if path.exists():
        fmt = "parquet" if path.suffix == ".parquet" else "json"
        return datasets.load_dataset(fmt, data_files={split: str(path)}, split=split)
    return datasets.load_dataset(str(source), "all_languages", split=split)


def load_xnli(
    languages: Sequence[str],
    source: str | Path = "facebook/xnli",
    split: str = "test",
    limit: int | None = None,
    templates: Mapping[str, tuple[str, tuple[str, str, str]]] | None = None,
) -> ParallelDataset:
    """XNLI as a parallel dataset: a hub id (needs network) or a local file in the
    ``all_languages`` format. ``templates`` overrides or adds per-language templates."""
    tpls = dict(XNLI_TEMPLATES)
    tpls.update(templates or {})
    missing = [x for x in languages if x not in tpls]
    if missing:
        raise MultiNeuronError(
            f"no XNLI prompt template for language(s) {missing}; pass templates={{lang: "
            f"(template, (entail, neutral, contradict))}}"
        )
    items = []
    for k, row in enumerate(_rows(source, split)):
        if limit is not None and len(items) >= limit:
            break
        prem = row.get("premise")
        hyp = row.get("hypothesis")
        label = row.get("label")
        if not isinstance(prem, Mapping) or not isinstance(hyp, Mapping):
            raise MultiNeuronError(
                f"XNLI row {k}: expected the 'all_languages' format (premise a mapping, "
                f"hypothesis with 'language'/'translation'), got {sorted(row)}"
            )
        if label not in (0, 1, 2):
            raise MultiNeuronError(f"XNLI row {k}: label {label!r} is not 0, 1 or 2")
        hyps = dict(zip(hyp["language"], hyp["translation"], strict=True))
        prompts, answers = {}, {}
        for x in languages:
            if x not in prem or x not in hyps:
                raise MultiNeuronError(f"XNLI row {k} has no text in language {x!r}")
            tpl, words = tpls[x]
            prompts[x] = tpl.format(p=prem[x], h=hyps[x])
            answers[x] = words[label] if x in _NO_SPACE else " " + words[label]
        items.append(ParallelItem(f"xnli-{split}-{k}", prompts, answers, "xnli"))
    return ParallelDataset(tuple(items), tuple(languages), f"xnli-{split}")
