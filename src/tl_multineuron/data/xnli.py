"""XNLI (Conneau et al. 2018) as the authors of *Sharing Matters* ran it, from any of its layouts.

Layouts read by :func:`load_xnli` (the first that ``path`` matches):

* **the release TSV** (``XNLI-1.0/xnli.test.tsv`` or ``xnli.dev.tsv`` of the release zip):
  tab-separated, a header row with at least ``language, gold_label, sentence1, sentence2`` and
  ``pairID``; one row per pair and language. Items are aligned across languages by ``pairID``
  (in the first language's order); where the file has no ``pairID``, by position;
* **the hub's per-language layout** (a directory with ``{lang}/{split}-*.parquet``, or
  ``.jsonl``): columns ``premise, hypothesis, label`` (0 entailment, 1 neutral,
  2 contradiction), rows aligned by position;
* **the hub's ``all_languages`` layout** (a ``.parquet`` / ``.jsonl`` file, or a directory with
  ``all_languages/{split}-*``): ``premise`` a mapping ``{lang: text}``, ``hypothesis``
  ``{"language": [...], "translation": [...]}``, ``label`` an int;
* otherwise a hub id (``facebook/xnli``, needs the network and ``datasets``).

Prompts (``prompt=``):

* ``"authors"`` (default): the English instruction of the authors' notebooks
  (``load_data_XNLI``) for every language, :data:`AUTHORS_PROMPT`, and the gold label as
  published (``entailment`` / ``neutral`` / ``contradiction``) as the answer, after a space, none
  for Chinese: what their notebook tokenizes as the answer (``sent + ' ' + ans``; no space for
  ``zh``);
* ``"authors-words"``: the same prompt, answered with the words it asks for (``true`` /
  ``inconclusive`` / ``false``);
* ``"localized"``: our per-language templates (:data:`XNLI_TEMPLATES`) and label words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import MultiNeuronError
from .answers import DelimiterSpec
from .datasets import ParallelDataset, ParallelItem, read_json_lines, read_text
from .language_codes import code_mapping, resolve_languages
from .sources import source_record

#: XNLI's labels, in the hub's integer order (0, 1, 2), as the release TSV writes them.
LABELS = ("entailment", "neutral", "contradiction")
#: XNLI's 15 languages.
XNLI_LANGUAGES = (
    "ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh",
)  # fmt: skip
#: The authors' prompt, verbatim, for every language.
AUTHORS_PROMPT = (
    "Take the following as truth: {premise}\nThen the following statement: "
    '"{hypothesis}" is "true", "false", or "inconclusive"?'
)
#: What :data:`AUTHORS_PROMPT` asks for, per label (``prompt="authors-words"``).
AUTHORS_WORDS = ("true", "inconclusive", "false")
PROMPTS = ("authors", "authors-words", "localized")

# Our localized prompt templates and label words ({p} premise, {h} hypothesis).
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

# One pair as read: (key that aligns it across languages, label index, premise, hypothesis,
# where it was read, for errors).
_Pair = tuple[str, int, str, str, str]


def _label(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip() in LABELS:
        return LABELS.index(value.strip())
    if not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= 2:
        return int(value)
    try:  # numpy integers from parquet
        as_int = int(value)
    except (TypeError, ValueError):
        as_int = None
    if as_int is not None and as_int == value and 0 <= as_int <= 2:
        return as_int
    raise MultiNeuronError(
        f"{where}: label {value!r} is not one of XNLI's three ({', '.join(LABELS)} or 0, 1, 2)"
    )


def _read_tsv(path: Path) -> dict[str, list[_Pair]]:
    """The release TSV, per language, split on tabs as the authors' notebook does."""
    lines = read_text(path).split("\n")
    header = lines[0].rstrip("\r").split("\t")
    missing = [c for c in ("language", "gold_label", "sentence1", "sentence2") if c not in header]
    if missing:
        raise MultiNeuronError(
            f"{path.name}: not XNLI's release TSV: no column(s) {missing} in its header "
            f"{header[:12]}"
        )
    col = {c: header.index(c) for c in header}
    pair = col.get("pairID")
    out: dict[str, list[_Pair]] = {}
    for n, line in enumerate(lines[1:], 2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) < len(header):
            raise MultiNeuronError(
                f"{path.name}: line {n} has {len(f)} tab-separated fields, the header {len(header)}"
            )
        lang = f[col["language"]]
        where = f"{path.name}, line {n}, language {lang!r}"
        rows = out.setdefault(lang, [])
        key = f[pair] if pair is not None else str(len(rows))
        rows.append(
            (
                key,
                _label(f[col["gold_label"]], where),
                f[col["sentence1"]],
                f[col["sentence2"]],
                where,
            )
        )
    if not out:
        raise MultiNeuronError(f"{path.name}: no rows under the header")
    return out


def _frame_rows(path: Path) -> list[dict[str, Any]]:
    """A parquet or JSON-lines file's rows as dicts."""
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except ImportError as e:
            raise MultiNeuronError(
                f"{path.name}: reading parquet needs pyarrow: pip install 'tl_multineuron[xnli]'"
            ) from e
        return frame.to_dict("records")
    return [row for _, row in read_json_lines(path, path.name)]


def _split_files(folder: Path, split: str) -> list[Path]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.name.startswith(split) and p.suffix in (".parquet", ".jsonl")
    )
    if not files:
        raise MultiNeuronError(
            f"{folder.name}/: no {split}-*.parquet or {split}*.jsonl file (it has "
            f"{sorted(p.name for p in folder.iterdir())[:8]})"
        )
    return files


def _read_per_language(root: Path, split: str, langs: Sequence[str]) -> dict[str, list[_Pair]]:
    """The hub's per-language layout: ``{lang}/{split}-*.parquet``, rows aligned by position."""
    out: dict[str, list[_Pair]] = {}
    for lang in langs:
        rows: list[_Pair] = []
        for f in _split_files(root / lang, split):
            for k, r in enumerate(_frame_rows(f)):
                where = f"{lang}/{f.name}, row {k}, language {lang!r}"
                for c in ("premise", "hypothesis", "label"):
                    if c not in r:
                        raise MultiNeuronError(
                            f"{where}: no {c!r} column (the per-language layout has premise, "
                            f"hypothesis, label; got {sorted(r)})"
                        )
                rows.append(
                    (
                        str(len(rows)),
                        _label(r["label"], where),
                        r["premise"],
                        r["hypothesis"],
                        where,
                    )
                )
        out[lang] = rows
    return out


def _read_all_languages(rows: Iterator[Mapping[str, Any]], name: str) -> dict[str, list[_Pair]]:
    """The hub's ``all_languages`` layout: one row per item, every language inside."""
    out: dict[str, list[_Pair]] = {}
    for k, row in enumerate(rows):
        prem, hyp = row.get("premise"), row.get("hypothesis")
        if not isinstance(prem, Mapping) or not isinstance(hyp, Mapping):
            raise MultiNeuronError(
                f"{name}, row {k}: expected the 'all_languages' layout (premise a mapping, "
                f"hypothesis with 'language'/'translation'), got columns {sorted(row)}"
            )
        label = _label(row.get("label"), f"{name}, row {k}")
        hyps = dict(zip(list(hyp["language"]), list(hyp["translation"]), strict=True))
        for lang, text in prem.items():
            if text is None:
                continue
            where = f"{name}, row {k}, language {lang!r}"
            out.setdefault(lang, []).append((str(k), label, text, hyps.get(lang), where))
    return out


def _read(path: str | Path, split: str, langs: Sequence[str] | None) -> tuple[dict, str]:
    """Pairs per language from whichever layout ``path`` is, and that layout's name."""
    p = Path(str(path))
    if p.is_file() and p.suffix == ".tsv":
        return _read_tsv(p), "release-tsv"
    if p.is_file():
        return _read_all_languages(iter(_frame_rows(p)), p.name), "all_languages"
    if p.is_dir():
        if (p / "all_languages").is_dir():
            rows = [r for f in _split_files(p / "all_languages", split) for r in _frame_rows(f)]
            return _read_all_languages(iter(rows), f"{p.name}/all_languages"), "all_languages"
        have = sorted(c.name for c in p.iterdir() if c.is_dir())
        if not have:
            raise MultiNeuronError(
                f"{p.name}/: an XNLI directory holds one folder per language (the hub's layout: "
                f"LANG/{split}-*.parquet) or all_languages/; it has none"
            )
        codes = resolve_languages("xnli", langs, have, f"XNLI directory {p.name!r}")
        return _read_per_language(p, split, list(codes.values())), "per-language"
    if p.suffix in (".tsv", ".parquet", ".jsonl", ".json") or p.is_absolute() or p.exists():
        raise MultiNeuronError(f"XNLI data {str(path)!r} does not exist")
    try:
        import datasets
    except ImportError as e:
        raise MultiNeuronError(
            f"{path!r} is no local file, so it is read from the hub, which needs the 'datasets' "
            "package: pip install 'tl_multineuron[xnli]'"
        ) from e
    hub = datasets.load_dataset(str(path), "all_languages", split=split)
    return _read_all_languages(iter(hub), str(path)), "hub"


def _align(pairs: Mapping[str, list[_Pair]], codes: Mapping[str, str]) -> list[dict]:
    """Items in the first language's order, each with every language's pair; a pair missing in a
    language, a key repeated, or labels that differ across languages is an error."""
    by_lang: dict[str, dict[str, _Pair]] = {}
    for lang, code in codes.items():
        index: dict[str, _Pair] = {}
        for pr in pairs[code]:
            if pr[0] in index:
                raise MultiNeuronError(
                    f"{pr[4]}: pair {pr[0]!r} appears twice (also {index[pr[0]][4]})"
                )
            index[pr[0]] = pr
        by_lang[lang] = index
    first = next(iter(codes))
    items = []
    for pr in pairs[codes[first]]:
        key = pr[0]
        row = {}
        for lang in codes:
            other = by_lang[lang].get(key)
            if other is None:
                raise MultiNeuronError(
                    f"XNLI items do not align: pair {key!r} ({pr[4]}) has no row in language "
                    f"{lang!r}"
                )
            if other[1] != pr[1]:
                raise MultiNeuronError(
                    f"XNLI items do not align: pair {key!r} is {LABELS[pr[1]]!r} in {first!r} "
                    f"({pr[4]}) but {LABELS[other[1]]!r} in {lang!r} ({other[4]})"
                )
            if not isinstance(other[2], str) or not isinstance(other[3], str):
                raise MultiNeuronError(f"{other[4]}: premise or hypothesis is missing")
            row[lang] = other
        items.append(row)
    extra = {
        lang: len(by_lang[lang]) - len(items) for lang in codes if len(by_lang[lang]) > len(items)
    }
    if extra:
        raise MultiNeuronError(
            f"XNLI items do not align: language(s) {extra} have more pairs than {first!r} "
            f"({len(items)})"
        )
    return items


def load_xnli(
    path: str | Path,
    languages: Sequence[str] | None = None,
    *,
    prompt: str = "authors",
    split: str = "test",
    limit: int | None = None,
    templates: Mapping[str, tuple[str, tuple[str, str, str]]] | None = None,
    answer_delimiter: DelimiterSpec = "auto",
) -> ParallelDataset:
    """XNLI as a parallel dataset (the module docstring lists the layouts and prompts):
    ``languages`` any of XNLI's 15 (default: every language of the source, in its order),
    ``limit`` the first N items (the authors ran the first 1,000 test items). ``templates``
    overrides or adds per-language templates of ``prompt="localized"``."""
    if prompt not in PROMPTS:
        raise MultiNeuronError(f"XNLI prompt {prompt!r}: expected one of {PROMPTS}")
    if templates and prompt != "localized":
        raise MultiNeuronError("XNLI templates= apply to prompt='localized' only")
    if limit is not None and limit < 1:
        raise MultiNeuronError(f"XNLI limit {limit}: expected at least 1 item")
    pairs, layout = _read(path, split, languages)
    codes = resolve_languages("xnli", languages, list(pairs), f"XNLI data {Path(str(path)).name!r}")
    tpls = {**XNLI_TEMPLATES, **(templates or {})}
    if prompt == "localized":
        missing = [x for x in codes if x not in tpls]
        if missing:
            raise MultiNeuronError(
                f"no localized XNLI prompt template for language(s) {missing}; use the authors' "
                "prompt (prompt='authors') or pass templates={lang: (template, (entail, neutral, "
                "contradict))}"
            )
    rows = _align(pairs, codes)
    if limit is not None:
        rows = rows[:limit]
    m = re.search(r"xnli\.(dev|test)\.tsv$", Path(str(path)).name)
    name = f"xnli-{m.group(1) if m else split}"
    items = []
    for row in rows:
        prompts, answers = {}, {}
        for lang, (_, label, premise, hypothesis, _) in row.items():
            if prompt == "localized":
                tpl, words = tpls[lang]
                prompts[lang] = tpl.format(p=premise, h=hypothesis)
                answers[lang] = words[label] if lang in _NO_SPACE else " " + words[label]
            else:
                prompts[lang] = AUTHORS_PROMPT.format(premise=premise, hypothesis=hypothesis)
                answers[lang] = (LABELS if prompt == "authors" else AUTHORS_WORDS)[label]
        key = next(iter(row.values()))[0]
        items.append(ParallelItem(f"{name}-{key}", prompts, answers, "xnli"))
    if prompt != "localized" and answer_delimiter == "auto" and "zh" in codes:
        answer_delimiter = {"zh": "none"}  # the authors' notebook: no space before zh answers
    options = {"prompt": prompt, "split": split, "limit": limit, "layout": layout}
    src = source_record(path, "xnli", options, code_mapping(codes), Counter())
    return ParallelDataset(tuple(items), tuple(codes), name, answer_delimiter, src)
